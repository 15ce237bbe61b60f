"""Dispatch node: every pending request runs on its tool, concurrently."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime

from llmi.artifacts import ArtifactStore, NotAnImage
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.nodes.schedule import Scheduler
from llmi.state import DocumentState, ImageRef, ImageRequest, ImageResult, pending_requests
from llmi.tools.base import ToolError
from llmi.tools.making import make_image
from llmi.tools.registry import ToolRegistry, default_tools


class Dispatch:
    """Runs the round's pending requests; a failing tool fails its slot, not the run."""

    def __init__(self, tools: ToolRegistry | None = None) -> None:
        self.tools = tools if tools is not None else default_tools()

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        ctx = context_of(runtime)
        store = ArtifactStore(ctx.artifact_dir)
        known: dict[int, ImageRef] = dict(enumerate(state.get("inputs", [])))
        known.update(
            (r["slot"], r["image"]) for r in state.get("results", []) if r["ok"] and r["image"]
        )
        scheduler = Scheduler(
            lambda request, source: self.run_one(request, source, ctx, store),
            known=known,
            workers=ctx.max_parallel,
            timeout_s=ctx.slot_timeout,
            notify=_progress(runtime, state.get("candidate")),
        )
        return {"results": scheduler.run(pending_requests(state))}

    def run_one(
        self, request: ImageRequest, source: ImageRef | None, ctx: Context, store: ArtifactStore
    ) -> ImageResult:
        started = time.monotonic()
        image: ImageRef | None = None
        error: str | None = None
        backend: str | None = None
        provenance: dict[str, Any] = {}
        try:
            tool = self.tools.get(request["source"])
            if tool is None:
                raise ToolError(f"no tool is registered for source {request['source']!r}")
            made = make_image(tool, request, source, ctx, store)
            image, backend, provenance = made.image, made.backend, made.provenance
        except NotAnImage as exc:
            error = f"the tool returned {exc}"
        except ToolError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any tool failure becomes a failed slot
            error = f"{type(exc).__name__}: {exc}"
        return ImageResult(
            slot=request["slot"],
            source=request["source"],
            description=request["description"],
            ok=image is not None,
            image=image,
            error=error,
            tool=request["source"],
            backend=backend,
            provenance=provenance,
            seconds=round(time.monotonic() - started, 3),
            attempt=request["attempt"],
        )


def _progress(runtime: Runtime[Context], candidate: str | None) -> Callable[[dict[str, Any]], None]:
    emit = emitter(runtime, **({"candidate": candidate} if candidate else {}))
    return lambda event: emit("slot", **event)
