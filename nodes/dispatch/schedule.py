"""Runs image requests concurrently, each edit as soon as its source is ready, each
request with references (``refs``) as soon as they are.

One node schedules a whole round itself rather than one LangGraph ``Send`` per
request: a superstep is a barrier, so with ``Send`` an edit would wait for the
slowest unrelated request of the step before it. Here an edit starts the moment
the image it edits is done, and as many requests run at once as the round allows
(``workers``) instead of the event loop's small default executor, on the process's
kept threads (``llmi.workers``).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from llmi import stopping
from llmi.state import ImageRef, ImageRequest, ImageResult, failed_result
from llmi.workers import WORKERS

SOURCE_FAILED = "source_failed"
"""The failure kind of an edit whose image to edit failed."""
RunOne = Callable[[ImageRequest, ImageRef | None, dict[int, ImageRef]], ImageResult]
"""Makes a request's image from the image it edits (if any) and its references' images,
by slot."""
Notify = Callable[[dict[str, Any]], None]


class Scheduler:
    """One round of requests: dependencies, concurrency and per-slot deadlines.

    ``known`` maps image indices that already have an image (input images,
    slots finished in earlier rounds) to it; ``failed`` maps slots that failed in
    earlier rounds to their results. An edit whose source failed fails; a request whose
    reference failed is made from the references that have an image. ``run`` must not
    raise. When a stop is requested (``llmi.stopping``) it returns at once, with the
    results of the requests that finished.
    """

    def __init__(
        self,
        run: RunOne,
        *,
        known: Mapping[int, ImageRef],
        failed: Mapping[int, ImageResult] | None = None,
        workers: int,
        timeout_s: float,
        notify: Notify = lambda event: None,
    ) -> None:
        self._run = run
        self._images: dict[int, ImageRef] = dict(known)
        self._failed_before: dict[int, ImageResult] = dict(failed or {})
        self._workers = max(1, workers)
        self._timeout_s = timeout_s
        self._notify = notify
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()

    def run(self, requests: Sequence[ImageRequest]) -> list[ImageResult]:
        if not requests:
            return []
        self._this_round = {r["slot"] for r in requests}
        self._waiting: dict[int, list[ImageRequest]] = defaultdict(list)
        self._running: dict[Future[ImageResult], ImageRequest] = {}
        self._results: dict[int, ImageResult] = {}
        self._places = threading.BoundedSemaphore(min(self._workers, len(requests)))
        self._over = False
        try:
            for request in requests:
                self._release(request)
            # On a stop, the round ends with what finished; the rest stay pending for the
            # resumed run, and what still runs is abandoned as an overrunning tool is.
            while self._running and not stopping.requested():
                self._step()
            self._settle_finished()
        finally:
            # Overrunning tools are abandoned, not awaited: their slots are already failed.
            # Requests still waiting for a place never start.
            self._over = True
        return [self._results[slot] for slot in sorted(self._results)]

    def _release(self, request: ImageRequest) -> None:
        """Start ``request``, or have it wait for the next image it needs."""
        source = request["depends_on"]
        if source is not None and source not in self._images and not self._pending(source):
            failed = self._results.get(source) or self._failed_before.get(source) or {}
            error = failed.get("error") or "it has no image"
            self._settle(failed_request(
                request, f"the image it edits (index {source}) failed: {error}",
                failure=SOURCE_FAILED, infrastructure=failed.get("infrastructure", False),
            ))
            return
        needed = [source] if source is not None else []
        if later := [slot for slot in needed + request.get("refs", []) if self._pending(slot)]:
            self._waiting[later[0]].append(request)
            return
        refs = {slot: self._images[slot] for slot in request.get("refs", [])
                if slot in self._images}
        self._start(request, self._images.get(source) if source is not None else None, refs)

    def _pending(self, slot: int) -> bool:
        """Whether ``slot`` is still to be made this round."""
        return slot in self._this_round and slot not in self._results

    def _start(self, request: ImageRequest, source: ImageRef | None,
               refs: dict[int, ImageRef]) -> None:
        if stopping.requested():
            return
        self._notify({"slot": request["slot"], "source": request["source"], "status": "queued",
                      "description": request["description"], "attempt": request["attempt"]})
        # Each task runs in a copy of this node's context, where LangGraph's stream writer lives.
        future = WORKERS.submit(contextvars.copy_context().run, self._placed, request, source,
                                refs)
        self._running[future] = request

    def _placed(self, request: ImageRequest, source: ImageRef | None,
                refs: dict[int, ImageRef]) -> ImageResult | None:
        """``_timed`` once one of the round's places is free; None when the round ended
        first."""
        with self._places:
            return None if self._over else self._timed(request, source, refs)

    def _timed(self, request: ImageRequest, source: ImageRef | None,
               refs: dict[int, ImageRef]) -> ImageResult:
        with self._lock:
            self._started[request["slot"]] = time.monotonic()
        self._notify({"slot": request["slot"], "source": request["source"], "status": "started",
                      "description": request["description"], "attempt": request["attempt"]})
        return self._run(request, source, refs)

    def _step(self) -> None:
        timeout = min(self._next_deadline(), stopping.POLL_S)
        done, _ = wait(self._running, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            self._running.pop(future)
            self._settle(future.result())
        now = time.monotonic()
        for future, request in list(self._running.items()):
            started = self._started.get(request["slot"])
            if started is not None and now - started >= self._timeout_s:
                self._running.pop(future)
                future.cancel()
                self._settle(failed_request(request, f"timed out after {self._timeout_s:g} s",
                                            seconds=now - started, failure="timeout",
                                            infrastructure=True))

    def _settle_finished(self) -> None:
        for future in [f for f in self._running if f.done() and not f.cancelled()]:
            self._running.pop(future)
            self._settle(future.result())

    def _next_deadline(self) -> float:
        with self._lock:
            starts = [self._started[r["slot"]] for r in self._running.values()
                      if r["slot"] in self._started]
        if len(starts) < len(self._running):
            # Some requests are queued; look again soon to start their clocks fairly.
            return 0.5 if not starts else min(0.5, self._remaining(min(starts)))
        return self._remaining(min(starts))

    def _remaining(self, started: float) -> float:
        return max(0.0, started + self._timeout_s - time.monotonic())

    def _settle(self, result: ImageResult) -> None:
        slot = result["slot"]
        self._results[slot] = result
        if result["ok"] and result["image"] is not None:
            self._images[slot] = result["image"]
        else:  # made again and failed: what it made before is no longer the document's image
            self._images.pop(slot, None)
        self._notify({"slot": slot, "source": result["source"],
                      "status": "finished" if result["ok"] else "failed",
                      "description": result["description"], "error": result["error"],
                      "seconds": result["seconds"], "attempt": result["attempt"]})
        for child in self._waiting.pop(slot, []):
            self._release(child)


def failed_request(request: ImageRequest, error: str, seconds: float = 0.0, *, failure: str,
                   infrastructure: bool = False) -> ImageResult:
    """The failed result of ``request``: the slot keeps its source, description and attempt."""
    return failed_result(
        request["slot"], request["source"], request["description"], error,
        tool=request["source"], attempt=request["attempt"], seconds=round(seconds, 3),
        failure=failure, infrastructure=infrastructure,
    )
