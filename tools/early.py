"""Tool calls that start while the planner still writes: each request as its tag closes.

The streaming planner (``llmi.nodes.planner``) hands each request of its draft to
``EarlyStarts.start`` the moment the tag closes. A request starts at once when dispatch
can join it, that is when it has a tool-cache key (``llmi.tools.cache``): not a diffusion
or edit whose seed is drawn, nor a tool the cache does not serve. An edit starts when the
image it changes is there: an input image, or the image of a call started here, for which
it waits. A request with references (``refs``) is left to dispatch, and so, while subjects
are linked after planning (``LLMI_CONSISTENCY=auto``, ``llmi.nodes.subjects``), is every
request whose tool takes references: linking may give it some. A run that reviews its
plan (``review``) starts nothing here: its plan may change before any tool runs
(``llmi.nodes.review``). Each call is ``llmi.tools.making.make_keyed``, cache included, on a thread of
its own (``llmi.workers``: one kept from an earlier call when one waits), at most
``max_parallel`` at a time; its future waits in ``llmi.tools.inflight``
under the request's key. It sends no ``slot`` event: dispatch sends each slot's, when
it joins the call.

Dispatch, through ``make_image``, finds the future under the same key and takes its
result, so dispatch still records every result and runs whatever did not start here. A
swapped planner or dispatch only loses the head start. When the planner ends (``close``),
nothing more starts here: an edit still waiting for its image is dispatch's to run.

A call that the final plan does not hold (a tag that later text showed to be reasoning,
a draft that split otherwise in the end) is withdrawn: it runs to its end, its image goes
to the cache when that is on, and no document uses it.
"""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from llmi import stopping
from llmi.artifacts import ArtifactStore
from llmi.context import AUTO, Context, consistency_of
from llmi.state import ImageRef, ImageRequest
from llmi.tools import inflight
from llmi.tools.base import ImageTool
from llmi.tools.cache import ToolCache
from llmi.tools.making import Made, in_flight_key, make_keyed
from llmi.tools.registry import ToolRegistry
from llmi.workers import WORKERS


@dataclass(frozen=True)
class Started:
    request: ImageRequest
    key: inflight.Key
    future: Future[Made]


class EarlyStarts:
    """The calls one planner starts early, for one run."""

    def __init__(self, tools: ToolRegistry, ctx: Context, inputs: Sequence[ImageRef]) -> None:
        self._tools = tools
        self._ctx = ctx
        self._store = ArtifactStore(ctx.artifact_dir)
        self._inputs = list(inputs)
        self._running = threading.BoundedSemaphore(max(1, ctx.max_parallel or 1))
        self._lock = threading.Lock()
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._images: dict[int, ImageRef] = dict(enumerate(self._inputs))
        self._started: dict[int, Started] = {}
        self._waiting: dict[int, list[ImageRequest]] = defaultdict(list)
        """Edits by the slot whose image they change, started here but not yet done."""

    def start(self, request: ImageRequest) -> None:
        """Start ``request`` if dispatch can join it, now or once the image it edits is made."""
        if self._ctx.review or request.get("refs") or self._may_be_linked(request):
            return
        source = request["depends_on"]
        with self._lock:
            if self._closed:
                return
            if source is None or source in self._images:
                self._launch(request, self._images.get(source) if source is not None else None)
            elif source in self._started:
                self._waiting[source].append(request)

    def _may_be_linked(self, request: ImageRequest) -> bool:
        return (consistency_of(self._ctx) == AUTO
                and request["source"] in self._tools.reference_sources())

    def restart(self) -> None:
        """The draft so far was not the draft: withdraw every call it started."""
        with self._lock:
            self._withdraw(lambda request: True)
            self._reset()

    def close(self, plan: Sequence[ImageRequest]) -> None:
        """The planner is done and ``plan`` holds its requests: withdraw the calls of
        requests it does not hold, and start nothing more."""
        with self._lock:
            self._closed = True
            self._withdraw(lambda request: request not in plan)
            self._waiting.clear()

    def _withdraw(self, unwanted: Callable[[ImageRequest], bool]) -> None:
        for started in self._started.values():
            if unwanted(started.request):
                inflight.CALLS.drop(started.key, started.future)

    def _launch(self, request: ImageRequest, source: ImageRef | None) -> None:
        tool = self._tools.get(request["source"])
        if tool is None or stopping.requested():
            return
        key = ToolCache(self._store).key(tool, request, self._ctx, source)
        if key is None:
            return
        started = Started(request, in_flight_key(self._store, key), Future())
        if not inflight.CALLS.add(started.key, started.future):
            return  # the same call is already in flight: the first to claim it takes it
        self._started[request["slot"]] = started
        started.future.add_done_callback(lambda future: self._made(request["slot"], future))
        WORKERS.submit(contextvars.copy_context().run, self._call, tool, request, source, key,
                       started.future)

    def _call(self, tool: ImageTool, request: ImageRequest, source: ImageRef | None, key: str,
              future: Future[Made]) -> None:
        with self._running:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(make_keyed(tool, request, source, self._ctx, self._store, key))
            except BaseException as exc:  # noqa: BLE001 - the joining request raises it
                future.set_exception(exc)

    def _made(self, slot: int, future: Future[Made]) -> None:
        """Start the edits that wait for ``slot``'s image, if it was made."""
        with self._lock:
            started = self._started.get(slot)
            if self._closed or started is None or started.future is not future:
                return  # dispatch runs them; or the draft restarted
            edits = self._waiting.pop(slot, [])
            if future.exception() is not None:
                return
            self._images[slot] = future.result().image
            for edit in edits:
                self._launch(edit, self._images[slot])
