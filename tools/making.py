"""Making one image with a tool: the tool cache first, then the tool, into the artifact store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.state import ImageRef, ImageRequest
from llmi.tools import inflight
from llmi.tools.base import ImageTool, ToolCall
from llmi.tools.cache import ToolCache


@dataclass(frozen=True)
class Made:
    image: ImageRef
    backend: str
    provenance: dict[str, Any]
    data: bytes
    """The image's bytes, as stored."""


def make_image(
    tool: ImageTool, request: ImageRequest, source: ImageRef | None, ctx: Context,
    store: ArtifactStore, references: Sequence[ImageRef] = (),
) -> Made:
    """The image of an identical earlier request, else the tool's, stored by content.

    ``source`` is the image an edit changes; ``references`` are the images of its ``refs``
    that were made, whose subject the new image keeps. A call already in flight for the same
    request (started by the planner, see ``llmi.tools.early``) is joined, not made
    again. The cache is also what spares a resumed run the tool calls that had
    finished. Raises what the tool raises.
    """
    # Only the cache and early starts use the key; a library search's reads its folder.
    keyed = ctx.tool_cache or ctx.early_tools
    key = ToolCache(store).key(tool, request, ctx, source, references) if keyed else None
    if key and (started := inflight.CALLS.claim(in_flight_key(store, key))):
        return started.result()
    return make_keyed(tool, request, source, ctx, store, key, references)


def in_flight_key(store: ArtifactStore, key: str) -> inflight.Key:
    return os.fspath(store.root), key


def make_keyed(
    tool: ImageTool, request: ImageRequest, source: ImageRef | None, ctx: Context,
    store: ArtifactStore, key: str | None, references: Sequence[ImageRef] = (),
) -> Made:
    """``make_image`` for a request whose tool-cache ``key`` is known (None: not cached)."""
    cache = ToolCache(store) if ctx.tool_cache and key else None
    if cache and key and (hit := cache.get(key)):
        return Made(hit.image, hit.backend, {**hit.provenance, "cached": True}, hit.data)
    call = ToolCall(
        request=request,
        context=ctx,
        deadline_s=ctx.slot_timeout,
        source_image=store.get(source) if source else None,
        references=tuple(store.get(reference) for reference in references),
    )
    output = tool(call)
    provenance = dict(output.provenance)
    if source:
        provenance.setdefault("edited", source["sha256"])
    if references:
        provenance.setdefault("referenced", [reference["sha256"] for reference in references])
    image, data = store.put_normalised(output.data)
    if cache and key:
        cache.put(key, image, output.backend, provenance)
    return Made(image, output.backend, provenance, data)
