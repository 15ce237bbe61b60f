"""Making one image with a tool: the tool cache first, then the tool, into the artifact store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmi.artifacts import ArtifactStore
from llmi.tools.cache import ToolCache
from llmi.context import Context
from llmi.state import ImageRef, ImageRequest
from llmi.tools.base import ImageTool, ToolCall


@dataclass(frozen=True)
class Made:
    image: ImageRef
    backend: str
    provenance: dict[str, Any]
    data: bytes
    """The image's bytes, as stored."""


def make_image(
    tool: ImageTool, request: ImageRequest, source: ImageRef | None, ctx: Context,
    store: ArtifactStore,
) -> Made:
    """The image of an identical earlier request, else the tool's, stored by content.

    ``source`` is the image an edit changes. The cache is also what spares a resumed
    run the tool calls that had finished. Raises what the tool raises.
    """
    cache = ToolCache(store) if ctx.tool_cache else None
    key = cache.key(tool, request, ctx, source) if cache else None
    if cache and key and (hit := cache.get(key)):
        return Made(hit.image, hit.backend, {**hit.provenance, "cached": True}, hit.data)
    call = ToolCall(
        request=request,
        context=ctx,
        deadline_s=ctx.slot_timeout,
        source_image=store.get(source) if source else None,
    )
    output = tool(call)
    provenance = dict(output.provenance)
    if source:
        provenance.setdefault("edited", source["sha256"])
    image, data = store.put_normalised(output.data)
    if cache and key:
        cache.put(key, image, output.backend, provenance)
    return Made(image, output.backend, provenance, data)
