"""Tool calls in flight, by their tool-cache key: calls started before dispatch, for
dispatch to join (see ``llmi.tools.early``)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

Key = tuple[str, str]
"""(artifact folder, tool-cache key): the same request of another store is another call."""


class InFlight:
    """Futures of tool calls by key; each is taken once, by the request that joins it."""

    def __init__(self) -> None:
        self._calls: dict[Key, Future[Any]] = {}
        self._lock = threading.Lock()

    def add(self, key: Key, future: Future[Any]) -> bool:
        """Register ``future``; False when a call for ``key`` is already in flight."""
        with self._lock:
            return self._calls.setdefault(key, future) is future

    def claim(self, key: Key) -> Future[Any] | None:
        """The call in flight for ``key``, which no later request can claim again."""
        with self._lock:
            return self._calls.pop(key, None)

    def drop(self, key: Key, future: Future[Any]) -> None:
        """Forget ``future`` unless it was claimed; it runs on, unjoined."""
        with self._lock:
            if self._calls.get(key) is future:
                del self._calls[key]


CALLS = InFlight()
