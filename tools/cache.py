"""Tool cache: an identical image request reuses the image made for it before.

A request's key is the sha256 of a canonical JSON of what decides its image: the
source name, the tool's class (a swapped-in tool never answers from another tool's
entries), the sha256 of the image it edits and of its reference images, and the settings its tool names
(``cache_settings``, see ``llmi.tools.base.CacheRules``): a chart's code; a search's
query, backend and where that backend looks; a synthesized image's prompt, backend,
size and the seed that applies (``llmi.tools.synthesis``). A request is not cached when
its tool says so (a diffusion or edit whose seed is drawn, its image meant to be new
each time), or when its tool has no rules and serves no built-in source. The request's
``attempt`` and slot (other than through the seed) are not in the key. Keys never hold
API keys.

A result whose provenance names the seed it asked for (``seed_requested``) is kept only
when that seed applied: not when it asked none (OpenAI's image models take no seed), nor
when the server says it made the image with another ``seed`` (stable-diffusion.cpp's
server ignores the request's seed). An image made without the seed of its key is not
that seed's image. Nor is an image its backend made without the reference images its
request had (``references_ignored``): it is not the image asked for, and a backend set up
to take references later (an edits route, IP-Adapter weights) must make it again.

Entries live beside the artifact store, ``<artifact_dir>/cache/<key>.json``,
and hold the key, the ``ImageRef``, backend and provenance of a successful result; the
image bytes stay in the store. An entry whose image is missing or corrupt is a
miss, and the tool runs again. Web search caches too: the same query gets the
same image on a later run, even if the web has changed since. ``LLMI_TOOL_CACHE=0``
(or ``llmi --no-cache``) turns the cache off.

What the cache trusts: only what llmi wrote, as far as it can tell. The folder may hold
files that something else wrote (a tool process that could write there), so an entry is
served only when it is a regular file of exactly the fields llmi writes, recorded under
the key it is read for (an entry copied to another key's file misses), and its image is
intact in the store: the bytes hash to the sha256 the entry names and have the type and
size it names. Anything else is a miss, and the entry is removed with a warning. What it
cannot tell without a secret is an entry forged whole, key and image alike, by a process
that computes llmi's keys: keeping other processes from writing here is what guards that.

Because each entry is written the moment its tool call succeeds, a run that is
killed in the middle of dispatch finds its finished slots here when it resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmi.artifacts import ArtifactStore, CorruptArtifact, is_digest, read_regular, write_atomic
from llmi.context import Context
from llmi.state import ImageRef, ImageRequest
from llmi.tools.base import REFERENCES_IGNORED, CacheRules
from llmi.tools.registry import default_tools

CACHE_VERSION = 2
"""Part of every key and entry: bump it when what decides an image or what an entry holds
changes, so old entries miss."""

_ENTRY_FIELDS = frozenset({"version", "key", "image", "backend", "provenance", "created"})

log = logging.getLogger(__name__)


class NotAnEntry(ValueError):
    """A file in the cache folder that is not an entry llmi wrote under its name."""


@dataclass(frozen=True)
class Entry:
    """A cache entry as read, checked against the fields llmi writes."""

    image: ImageRef
    backend: str | None
    provenance: dict[str, Any]


@dataclass(frozen=True)
class CachedImage:
    image: ImageRef
    backend: str | None
    provenance: dict[str, Any]
    data: bytes
    """The image's bytes, checked against its sha256."""


class ToolCache:
    """Cached results of tool calls, as files beside the artifact store."""

    def __init__(self, store: ArtifactStore, root: str | os.PathLike[str] | None = None) -> None:
        self.store = store
        self.root = Path(root) if root is not None else store.root / "cache"

    def key(self, tool: Any, request: ImageRequest, ctx: Context,
            source: ImageRef | None = None,
            references: Sequence[ImageRef] | None = None) -> str | None:
        """The request's key, or None when its image must not be reused. ``references``
        are the images its ``refs`` have (None: not known yet)."""
        try:
            fields = key_fields(tool, request, ctx, source, references)
        except Exception:  # noqa: BLE001 - a tool's cache_settings must not cost the slot
            return None
        return None if fields is None else _digest(fields)

    def get(self, key: str) -> CachedImage | None:
        """The cached result, if its entry is one llmi wrote for this key and its image is
        intact in the store; an entry that is not is removed."""
        path = self._path(key)
        try:
            entry = parse_entry(read_regular(path), key)
            found = self.store.load(entry.image["sha256"])  # None when gone or corrupt
            if found and _described(found[0]) != _described(entry.image):
                raise NotAnEntry("its image is not the one stored under its sha256")
        except (CorruptArtifact, NotAnEntry) as exc:
            self._reject(path, exc)
            return None
        except OSError:  # no entry, or one that cannot be read
            return None
        return CachedImage(found[0], entry.backend, entry.provenance, found[1]) if found else None

    def _reject(self, path: Path, problem: Exception) -> None:
        log.warning("tool cache: removing %s, not an entry llmi wrote: %s", path, problem)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # a folder under an entry's name, say: left, never served
            log.warning("tool cache: cannot remove %s: %s", path, exc)

    def put(self, key: str, image: ImageRef, backend: str | None,
            provenance: dict[str, Any]) -> bool:
        """Remember a successful result; False when it was not reproducible by its seed, was
        made without its references, or could not be written."""
        if not _seed_applied(provenance) or REFERENCES_IGNORED in provenance:
            return False
        entry = {"version": CACHE_VERSION, "key": key, "image": dict(image), "backend": backend,
                 "provenance": provenance, "created": time.time()}
        try:
            text = json.dumps(entry, ensure_ascii=False, default=str)
            write_atomic(self._path(key), text.encode("utf-8"))
        except (OSError, TypeError, ValueError):
            return False
        return True

    def _path(self, key: str) -> Path:
        if not is_digest(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / f"{key}.json"


def parse_entry(raw: bytes, key: str) -> Entry:
    """The entry in ``raw``, as llmi writes it for ``key``; raises NotAnEntry."""
    try:
        entry = json.loads(raw)
    except ValueError as exc:  # JSON and UTF-8 errors alike
        raise NotAnEntry(f"not JSON: {exc}") from None
    if not isinstance(entry, dict) or set(entry) != _ENTRY_FIELDS:
        raise NotAnEntry("not the fields of a cache entry")
    if type(entry["version"]) is not int or entry["version"] != CACHE_VERSION:
        raise NotAnEntry(f"version {entry['version']!r}, not {CACHE_VERSION}")
    if entry["key"] != key:
        raise NotAnEntry("recorded under another key")
    backend, provenance = entry["backend"], entry["provenance"]
    if not (backend is None or isinstance(backend, str)) or not isinstance(provenance, dict):
        raise NotAnEntry("its backend or provenance is not of the types llmi writes")
    if type(entry["created"]) not in (int, float):
        raise NotAnEntry("its time is not a number")
    return Entry(_image_record(entry["image"]), backend, provenance)


def _image_record(value: Any) -> ImageRef:
    """The entry's ``ImageRef``: its fields and a sha256 the store names. The rest is
    checked against the stored image, and the stored image's own ``uri`` is served."""
    if not isinstance(value, dict) or set(value) != set(ImageRef.__annotations__):
        raise NotAnEntry("its image is not an image reference")
    if not is_digest(value["sha256"]):
        raise NotAnEntry("its image's sha256 is not one")
    return ImageRef(**value)


def _described(image: ImageRef) -> tuple[str, str, int, int]:
    return image["sha256"], image["mime"], image["width"], image["height"]


def key_fields(tool: Any, request: ImageRequest, ctx: Context,
               source: ImageRef | None = None,
               references: Sequence[ImageRef] | None = None) -> dict[str, Any] | None:
    """What decides the request's image, or None when it is not to be cached."""
    if source is None and "img_index" in request["params"]:
        return None  # the image it changes is unknown
    if references is None and request.get("refs"):
        return None  # so are the images it keeps the subject of
    rules = _rules(tool, request["source"])
    settings = rules.cache_settings(ctx, request) if rules else None
    if settings is None:
        return None
    fields = dict(settings)
    if getattr(rules, "params_in_cache_key", True):
        fields.setdefault("params", request["params"])
    if source is not None:
        fields["edited"] = source["sha256"]
    if references:
        fields["references"] = [reference["sha256"] for reference in references]
    return fields | {
        "version": CACHE_VERSION,
        "source": request["source"],
        "tool": f"{type(tool).__module__}.{type(tool).__qualname__}",
    }


def _rules(tool: Any, source: str) -> CacheRules | None:
    """The tool's own rules, else those of the built-in tool of its source."""
    if callable(getattr(tool, "cache_settings", None)):
        return tool
    return default_tools().get(source)


def _seed_applied(provenance: dict[str, Any]) -> bool:
    """False when the result asked for no seed, or was made with another than it asked."""
    if "seed_requested" not in provenance:
        return True
    asked = provenance["seed_requested"]
    return asked is not None and provenance.get("seed", asked) == asked


def _digest(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                           default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
