"""Reducers for state channels that parallel writers share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

R = TypeVar("R", bound=dict[str, Any])


def merge_by_slot(left: Sequence[R] | None, right: Sequence[R] | None) -> list[R]:
    """Merge two lists of slot-keyed records; the right side wins per slot.

    Lists rather than dicts keep the channel JSON-safe (integer dict keys turn
    into strings through the LangGraph server's JSON API).
    """
    merged: dict[int, R] = {record["slot"]: record for record in left or ()}
    merged.update((record["slot"], record) for record in right or ())
    return [merged[slot] for slot in sorted(merged)]
