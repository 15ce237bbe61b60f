"""The interface every scorer implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from llmi.artifacts import ArtifactStore
from llmi.evaluation.records import ItemRun, ItemScore


@runtime_checkable
class Scorer(Protocol):
    """Scores one finished item at a time; called from worker threads.

    ``score`` never raises on a failing judge or a strange document: what went wrong goes
    in the score's ``errors`` and that part is left out of the score.
    """

    name: str
    """The ``--scorer`` value, and the key of its scores in a results line."""

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore: ...

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        """The dataset's figures from the items' scores (items that errored are not given)."""
        ...
