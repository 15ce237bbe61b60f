"""The image tools as LangChain tools, for any LangChain agent outside llmi's graph.

Each returns a short JSON summary as the message content, and as the tool
message's artifact the ``ImageRef`` and provenance: the bytes stay in the
artifact store, where later calls (an edit) find them by sha256.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

from llmi.artifacts import ArtifactStore, NotAnImage
from llmi.context import Context
from llmi.state import ImageRef, ImageRequest
from llmi.tools.base import ImageTool, ToolError
from llmi.tools.making import make_image
from llmi.tools.registry import ToolRegistry, default_tools


class SearchArgs(BaseModel):
    query: str = Field(description="web image search query for a real, factual thing")


class DiffusionArgs(BaseModel):
    prompt: str = Field(description="detailed text-to-image prompt for an imagined scene")


class CodeArgs(BaseModel):
    code: str = Field(
        description="matplotlib code drawing one chart; plt, pd, sns and np are imported"
    )


class EditArgs(BaseModel):
    image: str = Field(
        description="sha256 of an image an earlier tool call returned, or a local image file path"
    )
    prompt: str = Field(description="the change to make, keeping the rest of the image")


NAMES = {
    "search": ("search_image", SearchArgs),
    "diffusion": ("generate_image", DiffusionArgs),
    "code": ("draw_chart", CodeArgs),
    "edit": ("edit_image", EditArgs),
}


def langchain_tools(
    context: Context | None = None, tools: ToolRegistry | None = None
) -> list[BaseTool]:
    """LangChain tools for the registry's sources that have typed arguments here."""
    ctx = context or Context()
    registry = tools if tools is not None else default_tools()
    store = ArtifactStore(ctx.artifact_dir)
    return [
        as_langchain_tool(registry[source], ctx, store, *NAMES[source])
        for source in registry
        if source in NAMES
    ]


def as_langchain_tool(
    tool: ImageTool, ctx: Context, store: ArtifactStore, name: str, args: type[BaseModel]
) -> BaseTool:
    def make(**params: Any) -> tuple[str, dict[str, Any]]:
        source = None
        if "image" in params:
            source = _find_image(params.pop("image"), store)
            params["img_index"] = 0
        request = ImageRequest(slot=0, source=tool.source, description="", params=params,
                               depends_on=None, attempt=0)
        started = time.monotonic()
        try:
            made = make_image(tool, request, source, ctx, store)
        except Exception as exc:  # noqa: BLE001 - the agent gets every failure as text
            raise ToolException(f"{name} failed: {_reason(exc)}") from exc
        image = made.image
        artifact = {"image": image, "backend": made.backend, "provenance": made.provenance,
                    "seconds": round(time.monotonic() - started, 3)}
        summary = {"sha256": image["sha256"], "path": str(store.path(image)),
                   "width": image["width"], "height": image["height"], "backend": made.backend}
        return json.dumps(summary), artifact

    return StructuredTool.from_function(
        func=make,
        name=name,
        description=f"Make an image with llmi's {tool.source} tool: {tool.guidance}",
        args_schema=args,
        response_format="content_and_artifact",
        handle_tool_error=True,
    )


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (ToolError, NotAnImage)) else f"{type(exc).__name__}: {exc}"


def _find_image(image: str, store: ArtifactStore) -> ImageRef:
    """An image by sha256 in the store, or a local file added to the store."""
    if re.fullmatch(r"[0-9a-f]{64}", image) and (stored := store.find(image)):
        return stored
    try:
        return store.put_file(Path(image).expanduser())
    except (OSError, NotAnImage) as exc:
        raise ToolException(f"no image {image!r}: {exc}") from exc
