"""Dispatch node: every pending request runs on its tool, concurrently.

When a stop is requested (``llmi.stopping``) a round ends early: the results that
finished are written, and the requests still running stay pending for the resumed run.

A request with references (``refs``) is made from the images of those that were made,
once they are. When a backend made images without their references (it cannot take
any), a ``notice`` event says so once a run.

Each new image is checked (``llmi.nodes.dispatch.image_check``) as it arrives, beside the tools
still running; an image that fails the check is its slot's failure. An edit of the image
does not wait for the check: it starts the moment the image is stored. Every result
records the round that made it, which is how the verifier knows its new results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from langgraph.runtime import Runtime

from llmi import stopping
from llmi.artifacts import ArtifactStore, NotAnImage
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.nodes.dispatch.image_check import ImageChecks
from llmi.nodes.dispatch.schedule import Scheduler, failed_request
from llmi.state import (
    DocumentState,
    ImageRef,
    ImageRequest,
    ImageResult,
    images_by_index,
    pending_requests,
)
from llmi.tools.base import REFERENCES_IGNORED, ToolError
from llmi.tools.making import make_image
from llmi.tools.registry import ToolRegistry, default_tools


class Dispatch:
    """Runs the round's pending requests; a failing tool fails its slot, not the run."""

    def __init__(self, tools: ToolRegistry | None = None) -> None:
        self.tools = tools if tools is not None else default_tools()

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        stopping.raise_if_requested()
        emit = emitter(runtime, candidate=state.get("candidate"))
        results = self.run(state, context_of(runtime), notify=lambda event: emit("slot", **event))
        for text in references_notices(state.get("results", []), results):
            emit("notice", text=text)
        return {"results": results}

    def run(
        self, state: DocumentState, ctx: Context,
        notify: Callable[[dict[str, Any]], None] = lambda event: None,
    ) -> list[ImageResult]:
        """The results of the state's pending requests; ``notify`` hears slot events."""
        store = ArtifactStore(ctx.artifact_dir)
        results = state.get("results", [])
        with ImageChecks() as checks:

            def run_and_check(request: ImageRequest, source: ImageRef | None,
                              refs: dict[int, ImageRef]) -> ImageResult:
                on_made = partial(checks.start, request["slot"])
                return self.run_one(request, source, ctx, store, refs=refs, on_made=on_made)

            scheduler = Scheduler(
                run_and_check,
                known=images_by_index(state),
                failed={r["slot"]: r for r in results if not r["ok"]},
                workers=ctx.max_parallel,
                timeout_s=ctx.slot_timeout,
                notify=notify,
            )
            pending = pending_requests(state)
            made = scheduler.run(pending)
            this_round = state.get("round", 0)
            by_slot = {request["slot"]: request for request in pending}
            return [{**checks.outcome(r), **_linked(by_slot[r["slot"]], r), "round": this_round}
                    for r in made]

    def run_one(
        self, request: ImageRequest, source: ImageRef | None, ctx: Context, store: ArtifactStore,
        refs: dict[int, ImageRef] | None = None,
        on_made: Callable[[bytes], None] = lambda data: None,
    ) -> ImageResult:
        """The request's result, made from ``source`` (the image an edit changes) and the
        images of its ``refs`` that were made, by slot; ``on_made`` gets the bytes of the
        image it made."""
        started = time.monotonic()
        try:
            tool = self.tools.get(request["source"])
            if tool is None:
                raise ToolError(f"no tool is registered for source {request['source']!r}",
                                kind="config")
            made = make_image(tool, request, source, ctx, store, list((refs or {}).values()))
            on_made(made.data)
        except NotAnImage as exc:
            return failed_request(request, f"the tool returned {exc}", _since(started),
                                  failure="not_image")
        except ToolError as exc:
            return failed_request(request, str(exc), _since(started), failure=exc.kind,
                                  infrastructure=exc.infrastructure)
        except Exception as exc:  # noqa: BLE001 - any tool failure becomes a failed slot
            # A tool that crashes is broken or its service is; the request is not to blame.
            return failed_request(request, f"{type(exc).__name__}: {exc}", _since(started),
                                  failure="crash", infrastructure=True)
        result = ImageResult(
            slot=request["slot"],
            source=request["source"],
            description=request["description"],
            ok=True,
            image=made.image,
            error=None,
            tool=request["source"],
            backend=made.backend,
            provenance=made.provenance,
            seconds=_since(started),
            attempt=request["attempt"],
        )
        if refs:
            result["refs"] = list(refs)
        return result


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _linked(request: ImageRequest, result: ImageResult) -> dict[str, Any]:
    """The subject and references ``result`` records: the references it was made from,
    or, where it made no image, those its request asked for."""
    linked: dict[str, Any] = {}
    if "subject" in request:
        linked["subject"] = request["subject"]
    if request.get("refs") and "refs" not in result:
        linked["refs"] = [] if result["ok"] else list(request["refs"])
    return linked


def references_notices(earlier: list[ImageResult], made: list[ImageResult]) -> list[str]:
    """What to tell the user about images ``made`` without their references, each reason
    once a run: none that ``earlier`` results of the run already gave."""
    told = {_ignored(result) for result in earlier}
    notices: list[str] = []
    for result in made:
        reason = _ignored(result)
        if reason and reason not in told:
            told.add(reason)
            notices.append(f"{result['source']}: {reason}; its images are made without "
                           "their references (see the manifest's references_ignored)")
    return notices


def _ignored(result: ImageResult) -> str | None:
    return result["provenance"].get(REFERENCES_IGNORED) if result["ok"] else None
