"""Stopping runs on request: the user's Ctrl-C, or SIGTERM from a service manager.

Signals reach the main thread only, while a run's nodes work on other threads. The
entry points (the CLI, the evaluation runner) call ``request`` when they are
interrupted. Dispatch, which waits on tools, polls ``requested``: it ends its round at
once with the results that finished, so the checkpoint keeps every finished tool call,
and leaves the rest pending. The nodes that would go on from there (dispatch and the
verifier) raise ``Stopped`` when they start after a stop: a node that raises writes
nothing, so the run resumes at it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

POLL_S = 0.2
"""How often a waiting node looks whether a stop was requested."""
STOP_GRACE_S = 5.0
"""How long an interrupted entry point waits for its runs to end before it leaves them."""

T = TypeVar("T")

_requested = threading.Event()


class Stopped(Exception):
    """The run was asked to stop; it can be resumed from its last checkpoint."""

    def __init__(self) -> None:
        super().__init__("the run was stopped on request")


def request() -> None:
    """Ask every run of this process to stop."""
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def raise_if_requested() -> None:
    if _requested.is_set():
        raise Stopped


def clear() -> None:
    """Let runs go on again (a process that started a new run after a stop)."""
    _requested.clear()


class RunThread:
    """A run's stream of chunks, produced on a thread of its own, so that the thread that
    reads it (the main thread, where signals arrive) can stop waiting at once.

    ``chunks`` yields what ``produce`` yields and raises what it raised. ``stop``
    requests a stop and waits a moment for the run to end: a run that ends raised
    ``Stopped`` at its next poll or finished its step; one that does not (a model call
    cannot be cut short) is abandoned, and its step runs again on resume.
    """

    def __init__(self, produce: Callable[[], Iterator[T]], name: str = "llmi-run") -> None:
        self._produce = produce
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def chunks(self) -> Iterator[T]:
        clear()
        self._thread.start()
        while True:
            kind, value = self._queue.get()
            if kind == "chunk":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def stop(self) -> None:
        """Request a stop, and wait at most ``STOP_GRACE_S`` for the run's thread to end."""
        request()
        self._thread.join(STOP_GRACE_S)

    def _run(self) -> None:
        try:
            for chunk in self._produce():
                self._queue.put(("chunk", chunk))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self._queue.put(("error", exc))
        else:
            self._queue.put(("end", None))
