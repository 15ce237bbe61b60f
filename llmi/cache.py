"""Tool cache: an identical image request reuses the image made for it before.

A request's key is the sha256 of a canonical JSON of what decides its image:

- every source: the source name and the tool's class (a swapped-in tool never
  answers from another tool's entries);
- ``code``: the code, nothing else;
- ``search``: the query and the description (the library ranks by both), the
  backend setting, and for the ``library`` backend its folder and a listing of
  its files (names, sizes, times), for Tavily its base URL; the number of results
  tried and the smallest usable side;
- ``diffusion``: the prompt (or the description when there is none), the
  backend setting, the images server, the size, steps, guidance and the seed;
- ``edit``: as diffusion, with the edit size and the sha256 of the image edited,
  and the edit server (``LLMI_EDIT_BASE_URL``, else the images server);
- another source: only when its tool has a ``cache_settings(context, request)``
  method; what it returns (a JSON-able dict, or None for "do not cache") joins
  the source, the tool and the params in the key.

The seed is the one that applies: the request's ``params['seed']`` when it
has one, else ``LLMI_SEED`` + the slot index. With a negative ``LLMI_SEED`` the
tools draw a random seed, so a diffusion or edit request without
``params['seed']`` is **not cached**: its image is meant to be new each time.
The request's ``attempt`` and slot (other than through the seed) are not in
the key. Keys never hold API keys.

A result whose provenance names the seed it asked for (``seed_requested``) is kept only
when that seed applied: not when it asked none (OpenAI's image models take no seed), nor
when the server says it made the image with another ``seed`` (stable-diffusion.cpp's
server ignores the request's seed). An image made without the seed of its key is not
that seed's image.

Entries live beside the artifact store, ``<artifact_dir>/cache/<key>.json``,
and hold the ``ImageRef``, backend and provenance of a successful result; the
image bytes stay in the store. An entry whose image is missing or corrupt is a
miss, and the tool runs again. Web search caches too: the same query gets the
same image on a later run, even if the web has changed since. ``LLMI_TOOL_CACHE=0``
(or ``llmi --no-cache``) turns the cache off.

Because each entry is written the moment its tool call succeeds, a run that is
killed in the middle of dispatch finds its finished slots here when it resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.state import ImageRef, ImageRequest

CACHE_VERSION = 1
"""Part of every key: bump it when what decides an image changes, so old entries miss."""

Settings = Callable[[Any, ImageRequest, Context, ImageRef | None], dict[str, Any] | None]


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
            source: ImageRef | None = None) -> str | None:
        """The request's key, or None when its image must not be reused."""
        try:
            fields = key_fields(tool, request, ctx, source)
        except Exception:  # noqa: BLE001 - a tool's cache_settings must not cost the slot
            return None
        return None if fields is None else _digest(fields)

    def get(self, key: str) -> CachedImage | None:
        """The cached result, if there is one and its image is intact in the store."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
            if entry.get("version") != CACHE_VERSION:
                return None
            image = ImageRef(**{name: entry["image"][name] for name in ImageRef.__annotations__})
            data = self._check(image)
            # The store may live elsewhere than when the entry was written.
            image["uri"] = self.store.path(image).as_uri()
            return CachedImage(image, entry.get("backend"), dict(entry.get("provenance") or {}),
                               data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _check(self, image: ImageRef) -> bytes:
        """The image's bytes; raise unless it is in the store, intact, and remove it when
        it is corrupt, so that the tool's new result can take its place (the store keeps a
        file it has)."""
        try:
            return self.store.get(image)  # checks the bytes against the sha256
        except ValueError:
            self.store.path(image).unlink(missing_ok=True)
            raise

    def put(self, key: str, image: ImageRef, backend: str | None,
            provenance: dict[str, Any]) -> bool:
        """Remember a successful result; False when it was not reproducible by its seed
        or could not be written."""
        if not _seed_applied(provenance):
            return False
        entry = {"version": CACHE_VERSION, "image": dict(image), "backend": backend,
                 "provenance": provenance, "created": time.time()}
        try:
            text = json.dumps(entry, ensure_ascii=False, default=str)
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.root,
                                             prefix=".tmp-", delete=False) as tmp:
                tmp.write(text)
            os.replace(tmp.name, self._path(key))
        except (OSError, TypeError, ValueError):
            return False
        return True

    def forget(self, key: str) -> None:
        """Drop an entry (say, an image the verifier rejected)."""
        self._path(key).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / f"{key}.json"


def key_fields(tool: Any, request: ImageRequest, ctx: Context,
               source: ImageRef | None = None) -> dict[str, Any] | None:
    """What decides the request's image, or None when it is not to be cached."""
    hook = getattr(tool, "cache_settings", None)
    if callable(hook):
        settings = hook(ctx, request)
        if settings is None:
            return None
        settings = {"params": request["params"], **settings}
    elif request["source"] in SETTINGS:
        settings = SETTINGS[request["source"]](tool, request, ctx, source)
        if settings is None:
            return None
    else:
        return None
    return {
        "version": CACHE_VERSION,
        "source": request["source"],
        "tool": f"{type(tool).__module__}.{type(tool).__qualname__}",
        **settings,
    }


def applied_seed(request: ImageRequest, ctx: Context) -> int | None:
    """The seed that applies to a request: what diffusers pipelines and open images
    servers are asked for; None when they draw one."""
    seed = request["params"].get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return seed
    if ctx.seed is not None and ctx.seed >= 0:
        return ctx.seed + request["slot"]
    return None


def _seed_applied(provenance: dict[str, Any]) -> bool:
    """False when the result asked for no seed, or was made with another than it asked."""
    if "seed_requested" not in provenance:
        return True
    asked = provenance["seed_requested"]
    return asked is not None and provenance.get("seed", asked) == asked


def _code(tool: Any, request: ImageRequest, ctx: Context, source: ImageRef | None) -> dict:
    return {"code": request["params"].get("code")}


def _search(tool: Any, request: ImageRequest, ctx: Context, source: ImageRef | None) -> dict:
    backend = _choice(tool, ctx, ctx.search_backend)
    name, _, argument = backend.partition(":")
    settings: dict[str, Any] = {
        "query": request["params"].get("query"),
        "description": request["description"],
        "backend": backend,
        "candidates": ctx.search_candidates,
        "min_side": ctx.min_image_side,
    }
    if name == "library":
        folder = argument or ctx.image_library or ""
        settings["library"] = str(Path(folder).expanduser().resolve()) if folder else ""
        settings["library_files"] = _folder_listing(folder) if folder else ""
    elif name == "tavily":
        settings["tavily_base_url"] = ctx.tavily_base_url
    return settings


def _diffusion(tool: Any, request: ImageRequest, ctx: Context,
               source: ImageRef | None) -> dict | None:
    return _generated(request, ctx, _choice(tool, ctx, ctx.diffusion_backend))


def _edit(tool: Any, request: ImageRequest, ctx: Context, source: ImageRef | None) -> dict | None:
    settings = _generated(request, ctx, _choice(tool, ctx, ctx.edit_backend))
    if settings is None or source is None:
        return None
    return settings | {"edit_size": ctx.edit_size, "edited": source["sha256"],
                       "images_server": ctx.edit_base_url or settings["images_server"]}


def _generated(request: ImageRequest, ctx: Context, backend: Any) -> dict | None:
    """What shapes a synthesized image; None without a seed, whose image is drawn anew."""
    seed = applied_seed(request, ctx)
    if seed is None:
        return None
    return {
        "prompt": request["params"].get("prompt") or request["description"],
        "backend": backend,
        "images_server": ctx.images_base_url or ctx.base_url,
        "size": ctx.image_size,
        "steps": ctx.diffusion_steps,
        "guidance": ctx.diffusion_guidance,
        "seed": seed,
    }


SETTINGS: dict[str, Settings] = {
    "code": _code,
    "search": _search,
    "diffusion": _diffusion,
    "edit": _edit,
}
"""Key settings of the built-in sources; add one here for a source of your own, or give
its tool a ``cache_settings(context, request)`` method."""


def _choice(tool: Any, ctx: Context, setting: str | None) -> str:
    """The backend a ``BackendTool`` picks (search picks one even when none is set)."""
    choice = getattr(tool, "choice", None)
    try:
        return str(choice(ctx)) if callable(choice) else setting or ""
    except Exception:  # noqa: BLE001 - a custom tool's choice must not cost the slot
        return setting or ""


def _folder_listing(folder: str) -> str:
    """A digest of the files under ``folder`` (names, sizes, times), so a changed library misses."""
    root = Path(folder).expanduser()
    listing = []
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath, name)
                try:
                    info = path.stat()
                except OSError:
                    continue
                listing.append((path.relative_to(root).as_posix(), info.st_size, info.st_mtime_ns))
    except OSError:
        return ""
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _digest(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                           default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
