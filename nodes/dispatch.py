"""Dispatch node: every pending request runs on its tool, concurrently.

When a stop is requested (``llmi.stopping``) a round ends early: the results that
finished are written, and the requests still running stay pending for the resumed run.

Each new image is checked (``image_problem``) on a pool of its own as it arrives, and
the result records what the check found for the verifier. An edit of the image does
not wait for the check: it starts the moment the image is stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from langgraph.runtime import Runtime

from llmi import stopping
from llmi.artifacts import ArtifactStore, NotAnImage
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.nodes.schedule import Scheduler, failed_request
from llmi.nodes.verifier import image_problem
from llmi.state import (
    DocumentState,
    ImageRef,
    ImageRequest,
    ImageResult,
    pending_requests,
)
from llmi.tools.base import ToolError
from llmi.tools.making import make_image
from llmi.tools.registry import ToolRegistry, default_tools


class Dispatch:
    """Runs the round's pending requests; a failing tool fails its slot, not the run."""

    def __init__(self, tools: ToolRegistry | None = None) -> None:
        self.tools = tools if tools is not None else default_tools()

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        stopping.raise_if_requested()
        notify = _progress(runtime, state.get("candidate"))
        return {"results": self.run(state, context_of(runtime), notify=notify)}

    def run(
        self, state: DocumentState, ctx: Context,
        notify: Callable[[dict[str, Any]], None] = lambda event: None,
    ) -> list[ImageResult]:
        """The results of the state's pending requests; ``notify`` hears slot events."""
        store = ArtifactStore(ctx.artifact_dir)
        known: dict[int, ImageRef] = dict(enumerate(state.get("inputs", [])))
        results = state.get("results", [])
        known.update((r["slot"], r["image"]) for r in results if r["ok"] and r["image"])
        checks: dict[int, Future[str | None]] = {}
        with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="llmi-check") as checker:

            def run_and_check(request: ImageRequest, source: ImageRef | None) -> ImageResult:
                def check(data: bytes) -> None:
                    # After the round (a slot that overran its deadline) this submit fails,
                    # and the abandoned slot's result is read by no one.
                    checks[request["slot"]] = checker.submit(image_problem, data)

                return self.run_one(request, source, ctx, store, on_made=check)

            scheduler = Scheduler(
                run_and_check,
                known=known,
                failed={r["slot"]: r for r in results if not r["ok"]},
                workers=ctx.max_parallel,
                timeout_s=ctx.slot_timeout,
                notify=notify,
            )
            made = scheduler.run(pending_requests(state))
            return [{**r, "problem": checks[r["slot"]].result()} if r["ok"] and r["slot"] in checks
                    else r for r in made]

    def run_one(
        self, request: ImageRequest, source: ImageRef | None, ctx: Context, store: ArtifactStore,
        on_made: Callable[[bytes], None] = lambda data: None,
    ) -> ImageResult:
        """The request's result; ``on_made`` gets the bytes of the image it made."""
        started = time.monotonic()
        try:
            tool = self.tools.get(request["source"])
            if tool is None:
                raise ToolError(f"no tool is registered for source {request['source']!r}",
                                kind="config")
            made = make_image(tool, request, source, ctx, store)
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
        return ImageResult(
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


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _progress(runtime: Runtime[Context], candidate: str | None) -> Callable[[dict[str, Any]], None]:
    emit = emitter(runtime, **({"candidate": candidate} if candidate else {}))
    return lambda event: emit("slot", **event)
