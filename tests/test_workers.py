"""The process's kept threads: each task at once, threads reused, idle ones ended."""

from __future__ import annotations

import os
import threading
import time

import pytest

from llmi import workers
from llmi.workers import Workers


def test_tasks_run_at_once_however_many_wait() -> None:
    pool = Workers("test-at-once")
    gate = threading.Barrier(5, timeout=10)
    # Each task waits for the other four: they finish only when all five run together.
    futures = [pool.submit(gate.wait) for _ in range(5)]
    assert sorted(future.result(10) for future in futures) == [0, 1, 2, 3, 4]


def test_a_thread_that_waits_takes_the_next_task() -> None:
    pool = Workers("test-reuse")
    first = pool.submit(threading.current_thread)
    thread = first.result(10)
    _wait_idle(pool)
    assert pool.submit(threading.current_thread).result(10) is thread
    assert thread.daemon and thread.name.startswith("test-reuse-")


def test_a_task_that_raises_raises_from_its_future() -> None:
    pool = Workers("test-raise")
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(10)
    assert pool.submit(lambda: 2).result(10) == 2


def test_a_thread_idle_too_long_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "IDLE_S", 0.05)
    pool = Workers("test-idle")
    thread = pool.submit(threading.current_thread).result(10)
    thread.join(10)
    assert not thread.is_alive()
    assert pool.submit(lambda: 3).result(10) == 3  # a new thread takes it


def _wait_idle(pool: Workers) -> None:
    """Until a thread of ``pool`` waits for a task."""
    deadline = time.monotonic() + 10
    while pool._idle == 0 and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_threads_of_its_own() -> None:
    pool = Workers("test-fork")
    pool.submit(lambda: None).result(10)
    _wait_idle(pool)  # the parent's thread waits: the child has no such thread
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when its task ran
        try:
            os._exit(0 if pool.submit(lambda: 7).result(10) == 7 else 1)
        except BaseException:  # noqa: BLE001 - a child must never return into pytest
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
