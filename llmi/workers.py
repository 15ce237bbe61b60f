"""Threads kept for the next task, shared by the whole process.

A task handed to ``Workers.submit`` starts at once, as on a thread of its own: on a
thread that waits idle, or on a new one when none does, so no task ever queues behind
another. A thread that has waited ``IDLE_S`` with nothing to do ends. The threads are
daemons, as threads started for one call are: a task still running (a withdrawn tool
call, a tool that overran its deadline) never holds up the end of the process.

Starting a thread costs far more than handing a task to one that waits: the starter
waits until the new thread runs, which, with the interpreter's lock busy, is a switch
of its own.

A process forked from this one has none of these threads: it starts its own as it needs
them.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

IDLE_S = 60.0
"""How long a thread waits for a task before it ends."""


class Workers:
    """Daemon threads that run tasks, each task at once; see the module."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._numbers = itertools.count()
        self._start_over()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._start_over)

    def _start_over(self) -> None:
        """No thread and no task: as made, or in a forked child, which has none of the
        threads (or locks held by them) of the process it was forked from."""
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple]] = (
            queue.SimpleQueue())
        self._idle = 0
        """Threads waiting for a task that no submitted task has been promised to."""
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` now on one of the threads; its future holds what it returns
        or raises."""
        future: Future[T] = Future()
        with self._lock:
            spare = self._idle > 0
            if spare:
                self._idle -= 1
        self._tasks.put((future, fn, args))
        if not spare:
            threading.Thread(target=self._work, name=f"{self._name}-{next(self._numbers)}",
                             daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            try:
                future, fn, args = self._tasks.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # else a task was promised to a waiting thread
                        self._idle -= 1
                        return
                continue
            _run(future, fn, args)
            del future, fn, args  # what the task held is not kept while the thread waits
            with self._lock:
                self._idle += 1


def _run(future: Future[Any], fn: Callable[..., Any], args: tuple) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the future's holder raises it
        future.set_exception(exc)
    else:
        future.set_result(result)


WORKERS = Workers("llmi-worker")
"""The threads llmi runs its own tasks on beside the graph: early tool calls, dispatch's
slots and image checks, the assembler's image files."""
