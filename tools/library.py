"""Search backend over a local folder of captioned images, ranked with BM25.

Each image is a document made of its caption and the words of its file name.
A caption comes from a sidecar next to the image (``photo.txt``, or
``photo.json`` with fields such as ``title``, ``caption`` and ``tags``; the
``photo.jpg.txt`` / ``photo.jpg.json`` spellings work too), else from the file
name alone. The index is kept in memory per folder and on disk under the cache
folder, and is rebuilt when an image or a sidecar is added, changed or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from llmi.artifacts import IMAGE_SUFFIXES, inspect_image
from llmi.context import default_cache_dir
from llmi.tools.base import Backend, ToolCall, ToolError, ToolOutput

SIDECAR_SUFFIXES = (".json", ".txt")

FIELD_WEIGHTS = {
    "title": 3, "caption": 2, "alt": 2, "tags": 2, "keywords": 2, "text": 2,
    "description": 1, "name": 1,
}
"""How many times a field's words count in an image's document (BM25F by repetition)."""
JSON_FIELDS = ("title", "caption", "alt", "description", "tags", "keywords")
CAPTION_FIELDS = ("text", "caption", "title", "description", "alt", "tags", "keywords")
"""Fields that may serve as the caption shown for a match, first present wins."""
HINT_WEIGHT = 0.3
"""Weight of the request's description next to its query."""
CACHE_VERSION = 1
"""Bump when tokenization or the cache layout changes, so old caches are rebuilt."""

STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or the this that to with "
    "i s t d ll re ve".split()
)
_RUN = re.compile(r"\d+|[^\W\d_]+")
"""A run of letters or of digits: ``covid19`` is two words, as ``covid-19`` is."""
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class Match:
    path: str
    """Relative to the library folder, with forward slashes."""
    caption: str
    score: float


@dataclass(frozen=True)
class _Entry:
    path: str
    caption: str
    terms: list[str]


def tokenize(text: str) -> list[str]:
    """Lowercased, lightly stemmed words without stopwords.

    Letters and digits part (``iPhone15``: ``iPhone``, ``15``); a camelCase word
    (``iPhone``, ``BYDSeal``) yields itself and its parts.
    """
    tokens = []
    for run in _RUN.findall(text):
        parts = _CAMEL.split(run)
        for piece in parts if len(parts) == 1 else [run, *parts]:
            folded = piece.casefold()
            if folded not in STOPWORDS:
                tokens.append(stem(folded))
    return tokens


def stem(word: str) -> str:
    """Strip an English plural ``s`` and a final ``e``; a final consonant-``y`` becomes ``i``.

    Not linguistics, just enough that plural and singular meet: ``cherries`` and
    ``cherry`` both give ``cherri``, ``sunrises`` and ``sunrise`` give ``sunris``.
    """
    if not (word.isascii() and word.isalpha()):
        return word
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        word = word[:-1] + "i"
    return word


class ImageLibrary:
    """A folder of images, searchable by text. Safe to search from many threads."""

    def __init__(
        self, folder: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise NotADirectoryError(f"image library {str(folder)!r} is not a folder")
        cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "library"
        self.cache_file = cache_root / f"{_digest(str(self.folder))[:24]}.json"
        self.builds = 0
        """Times the index was built from the files (not loaded from the cache)."""
        self._lock = threading.Lock()
        self._index: _Index | None = None

    def search(self, query: str, k: int = 5, *, hint: str = "") -> list[Match]:
        """The best ``k`` images for ``query``, best first; only images that match it.

        ``hint`` (say, a longer description) reorders the matches but never adds one.
        """
        return self._current().search(tokenize(query), tokenize(hint), k)

    def refresh(self) -> None:
        """Rescan the folder now and rebuild the index if anything changed."""
        self._current()

    def read(self, path: str) -> bytes:
        """The bytes of the image at ``path`` (relative), refusing paths that lead outside."""
        target = (self.folder / path).resolve()
        if not target.is_relative_to(self.folder):
            raise ValueError(f"{path} leads outside the library")
        return target.read_bytes()

    def _current(self) -> _Index:
        with self._lock:
            files = _scan(self.folder)
            signature = _signature(files)
            if self._index is None or self._index.signature != signature:
                self._index = self._load(signature) or self._build(files, signature)
            return self._index

    def _load(self, signature: str) -> _Index | None:
        entries = _read_cache(self.cache_file, self.folder, signature)
        return None if entries is None else _Index(signature, entries)

    def _build(self, files: Mapping[str, os.stat_result], signature: str) -> _Index:
        self.builds += 1
        entries = [_entry(self.folder, path, files) for path in sorted(files) if _is_image(path)]
        _write_cache(self.cache_file, self.folder, signature, entries)
        return _Index(signature, entries)


class _Index:
    """An immutable snapshot: the entries and their BM25 model."""

    def __init__(self, signature: str, entries: list[_Entry]) -> None:
        self.signature = signature
        self.entries = entries
        self._bm25 = _bm25([entry.terms for entry in entries])

    def search(self, query: list[str], hint: list[str], k: int) -> list[Match]:
        if self._bm25 is None or not query:
            return []
        scores = self._bm25.get_scores(query)
        if hint:
            scores = np.where(scores > 0, scores + HINT_WEIGHT * self._bm25.get_scores(hint), 0.0)
        best = np.argsort(-scores, kind="stable")[:k]
        return [self._match(i, float(scores[i])) for i in best if scores[i] > 0]

    def _match(self, i: int, score: float) -> Match:
        entry = self.entries[i]
        return Match(path=entry.path, caption=entry.caption, score=score)


def _bm25(corpus: list[list[str]]) -> Any:
    if not any(corpus):
        return None  # bm25s cannot index a corpus without a single term
    import bm25s  # imported here: it pulls in scipy, which CLI start-up need not pay for

    model = bm25s.BM25()
    model.index(corpus, show_progress=False)
    return model


# --- scanning -----------------------------------------------------------------------------


def _scan(root: Path) -> dict[str, os.stat_result]:
    """Images and sidecars under ``root`` by relative path, without hidden files or links out.

    Linked folders are not entered; a linked file counts only if it resolves inside ``root``.
    """
    found = {}
    folders = [(str(root), "")]
    while folders:
        folder, prefix = folders.pop()
        for entry in _entries(folder):
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                folders.append((entry.path, f"{prefix}{entry.name}/"))
            elif _indexed_name(entry.name) and _inside(entry, root):
                info = _stat_file(entry)
                if info is not None:
                    found[prefix + entry.name] = info
    return found


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _indexed_name(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_SUFFIXES or suffix in SIDECAR_SUFFIXES


def _inside(entry: os.DirEntry[str], root: Path) -> bool:
    return not entry.is_symlink() or Path(entry.path).resolve().is_relative_to(root)


def _stat_file(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        info = entry.stat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _signature(files: Mapping[str, os.stat_result]) -> str:
    listing = [(path, files[path].st_size, files[path].st_mtime_ns) for path in sorted(files)]
    return _digest(json.dumps(listing))


def _is_image(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- documents ----------------------------------------------------------------------------


def _entry(root: Path, path: str, files: Container[str]) -> _Entry:
    fields = {**_sidecar_fields(root, path, files), "name": _name_text(path)}
    caption = next((fields[f] for f in CAPTION_FIELDS if fields.get(f, "").strip()), None)
    terms = [
        term
        for field, text in fields.items()
        for term in tokenize(text) * FIELD_WEIGHTS[field]
    ]
    return _Entry(path=path, caption=(caption or _file_words(path)).strip(), terms=terms)


def _sidecar_fields(root: Path, path: str, files: Container[str]) -> dict[str, str]:
    """Text fields of the image's sidecar; none when it has none or it does not read."""
    sidecar = next((name for name in _sidecar_names(path) if name in files), None)
    if sidecar is None:
        return {}
    try:
        text = (root / sidecar).read_text(encoding="utf-8", errors="replace")
        return _json_fields(json.loads(text)) if sidecar.endswith(".json") else {"text": text}
    except (OSError, ValueError):
        return {}


def _sidecar_names(path: str) -> list[str]:
    """Sidecars of ``a/photo.jpg``, first found wins.

    ``a/photo.jpg.json``, ``a/photo.json``, ``a/photo.jpg.txt``, ``a/photo.txt``.
    """
    image = PurePosixPath(path)
    return [
        str(name)
        for suffix in SIDECAR_SUFFIXES
        for name in (image.with_name(image.name + suffix), image.with_suffix(suffix))
    ]


def _json_fields(data: Any) -> dict[str, str]:
    if not isinstance(data, dict):
        return {}
    fields = {}
    for field in JSON_FIELDS:
        value = data.get(field)
        if isinstance(value, list):
            value = ", ".join(item for item in value if isinstance(item, str))
        if isinstance(value, str):
            fields[field] = value
    return fields


def _name_text(path: str) -> str:
    """The searchable words of a path: its folders and the file name without suffix."""
    return str(PurePosixPath(path).with_suffix(""))


def _file_words(path: str) -> str:
    """``BYDSeal-electric_sedan2.jpg`` -> ``BYD Seal electric sedan 2``."""
    name = PurePosixPath(path).stem
    return " ".join(part for run in _RUN.findall(name) for part in _CAMEL.split(run))


# --- the disk cache -----------------------------------------------------------------------


def _read_cache(file: Path, folder: Path, signature: str) -> list[_Entry] | None:
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
        if (payload["version"], payload["folder"], payload["signature"]) != (
            CACHE_VERSION, str(folder), signature,
        ):
            return None
        return [_Entry(path=p, caption=c, terms=list(t)) for p, c, t in payload["entries"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(file: Path, folder: Path, signature: str, entries: list[_Entry]) -> None:
    """Best effort: a library that cannot write its cache still searches."""
    payload = {
        "version": CACHE_VERSION,
        "folder": str(folder),
        "signature": signature,
        "entries": [[e.path, e.caption, e.terms] for e in entries],
    }
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=file.parent, suffix=".tmp", delete=False
        ) as tmp:
            json.dump(payload, tmp, ensure_ascii=False)
        os.replace(tmp.name, file)
    except OSError:
        pass


# --- the search backend -------------------------------------------------------------------

_libraries: dict[Path, ImageLibrary] = {}
_libraries_lock = threading.Lock()


def library_for(folder: str | os.PathLike[str]) -> ImageLibrary:
    """The process's one ``ImageLibrary`` for ``folder``, so its index is built once."""
    key = Path(folder).expanduser().resolve()
    with _libraries_lock:
        if key not in _libraries:
            _libraries[key] = ImageLibrary(key)
        return _libraries[key]


def library_backend(argument: str) -> Backend:
    """The ``library`` search backend; the folder is ``argument``, else ``image_library``."""

    def search(call: ToolCall) -> ToolOutput:
        library = _open_library(argument or call.context.image_library or "")
        query = str(call.request["params"].get("query") or "")
        matches = library.search(
            query, k=max(1, call.context.search_candidates), hint=call.request["description"]
        )
        if not matches:
            raise ToolError(f"no image in the library matches {query!r}", kind="no_result")
        problems = []
        for match in matches:
            try:
                data = _usable_image(library, match, call.context.min_image_side)
            except (OSError, ValueError) as exc:
                problems.append(f"{match.path}: {exc}")
                continue
            provenance = {
                "query": query, "path": match.path, "caption": match.caption, "score": match.score,
            }
            return ToolOutput(data=data, backend="library", provenance=provenance)
        raise ToolError(
            f"no usable image in the library for {query!r}: {'; '.join(problems)}", kind="no_result"
        )

    return search


def library_settings(folder: str) -> dict[str, str]:
    """What decides a library search's image besides the request, for the tool cache's
    key: the folder, and a digest of its images and sidecars (names, sizes, times), so
    that a changed library misses."""
    if not folder:
        return {"library": "", "library_files": ""}
    root = Path(folder).expanduser().resolve()
    return {"library": str(root), "library_files": _signature(_scan(root))}


def _open_library(folder: str) -> ImageLibrary:
    if not folder:
        raise ToolError("set LLMI_IMAGE_LIBRARY to a folder of images", kind="config")
    try:
        return library_for(folder)
    except NotADirectoryError as exc:
        raise ToolError(
            f"{exc}: set LLMI_IMAGE_LIBRARY to a folder of images", kind="config"
        ) from None


def _usable_image(library: ImageLibrary, match: Match, min_side: int) -> bytes:
    """The match's bytes; ValueError if they do not decode or the image is too small."""
    data = library.read(match.path)
    _, width, height = inspect_image(data)
    if min(width, height) < min_side:
        raise ValueError(f"{width}x{height} is smaller than {min_side} pixels a side")
    return data
