"""The offline demo's search library: public-domain photographs that ship inside packages
llmi installs, with their captions.

Nothing is downloaded. Each photograph is copied out of its package into a folder of
llmi's cache, beside a JSON sidecar of its title, caption and tags (the sidecar form
that ``llmi.tools.library`` reads), and the demo points the library search backend at
that folder. A photograph its package does not ship (a distribution that splits sample
data into a package of its own) is left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from llmi.artifacts import write_atomic
from llmi.context import default_cache_dir
from llmi.errors import LlmiError

FILE_MODE = 0o644


@dataclass(frozen=True)
class Photograph:
    """A photograph inside an installed package, and what its library sidecar says."""

    package: str
    path: str
    """Inside the package, with forward slashes."""
    title: str
    caption: str
    """What it shows, who made it and why it may be shown: its credit and licence."""
    tags: tuple[str, ...]

    @property
    def name(self) -> str:
        """Its file name in the library."""
        return self.path.rsplit("/", 1)[-1]

    def sidecar(self) -> bytes:
        fields = {"title": self.title, "caption": self.caption, "tags": list(self.tags)}
        return (json.dumps(fields, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


PHOTOGRAPHS = (
    # matplotlib ships it as sample data; the file's own JPEG comment names its source,
    # https://commons.wikimedia.org/wiki/File:Grace_Hopper.jpg: an official U.S. Navy
    # portrait, a work of the U.S. federal government and so in the public domain.
    Photograph(
        package="matplotlib",
        path="mpl-data/sample_data/grace_hopper.jpg",
        title="Grace Hopper",
        caption="Commodore Grace M. Hopper in U.S. Navy uniform, 1984. Official U.S. Navy "
                "portrait photograph; public domain (work of the U.S. federal government).",
        tags=("Grace Hopper", "computer scientist", "programmer", "COBOL", "compiler",
              "U.S. Navy", "admiral", "portrait", "photograph"),
    ),
)


def library_folder() -> Path:
    """Where the demo's library lives: a folder of llmi's cache."""
    return default_cache_dir() / "demo-library"


def prepare_library(folder: Path, photographs: tuple[Photograph, ...] = PHOTOGRAPHS) -> list[str]:
    """Copy each shipped photograph and its sidecar into ``folder``; the names of those it
    holds. A file already there with the same bytes is left alone, so that the library's
    index and the tool cache still know it."""
    held = []
    for photograph in photographs:
        data = _shipped(photograph)
        if data is None:
            continue
        stem = photograph.name.rsplit(".", 1)[0]
        _put(folder / photograph.name, data)
        _put(folder / f"{stem}.json", photograph.sidecar())
        held.append(photograph.name)
    return held


def _shipped(photograph: Photograph) -> bytes | None:
    """The photograph's bytes, or None when its package is missing or ships no such file."""
    try:
        return resources.files(photograph.package).joinpath(photograph.path).read_bytes()
    except (ModuleNotFoundError, OSError):
        return None


def _put(path: Path, data: bytes) -> None:
    try:
        if path.is_file() and path.read_bytes() == data:
            return
        write_atomic(path, data, mode=FILE_MODE)
    except OSError as exc:
        raise LlmiError(
            f"cannot write the demo's photo library at {path}: {exc.strerror or exc}",
            "make that folder writable for this user, or set XDG_CACHE_HOME to a folder that is",
        ) from None
