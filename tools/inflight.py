"""Tool calls in flight, by their tool-cache key: calls started before dispatch, for
dispatch to join (see ``llmi.tools.early``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

Key = tuple[str, str]
"""(artifact folder, tool-cache key): the same request of another store is another call."""

UNCLAIMED_S = 600.0
"""How long a finished call waits to be joined. Dispatch joins at once unless the run
stopped before it (an interrupt before dispatch, a crash); a run resumed later finds the
image in the tool cache, or makes it again."""


class InFlight:
    """Futures of tool calls by key; each is taken once, by the request that joins it."""

    def __init__(self) -> None:
        self._calls: dict[Key, tuple[Future[Any], float]] = {}
        self._lock = threading.Lock()

    def add(self, key: Key, future: Future[Any]) -> bool:
        """Register ``future``; False when a call for ``key`` is already in flight. Finished
        calls left unjoined for ``UNCLAIMED_S`` are forgotten."""
        with self._lock:
            self._forget_unclaimed()
            return self._calls.setdefault(key, (future, time.monotonic()))[0] is future

    def claim(self, key: Key) -> Future[Any] | None:
        """The call in flight for ``key``, which no later request can claim again."""
        with self._lock:
            return self._calls.pop(key, (None, 0.0))[0]

    def drop(self, key: Key, future: Future[Any]) -> None:
        """Forget ``future`` unless it was claimed; it runs on, unjoined."""
        with self._lock:
            if self._calls.get(key, (None,))[0] is future:
                del self._calls[key]

    def _forget_unclaimed(self) -> None:
        stale = time.monotonic() - UNCLAIMED_S
        for key, (future, added) in list(self._calls.items()):
            if added < stale and future.done():
                del self._calls[key]


CALLS = InFlight()
