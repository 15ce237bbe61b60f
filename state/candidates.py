"""Records and state of test-time scaling: candidate documents, screened and ranked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from llmi.state.document import DocumentState
from llmi.state.records import (
    Finding,
    ImageRequest,
    ImageResult,
    Repair,
    Sampling,
    Segment,
    Subject,
)


class CandidateDocument(TypedDict, total=False):
    """What one candidate made: its plan, then its images and repairs.

    The prompt and inputs every candidate shares stay in the graph's state, not here.
    """

    draft: str
    segments: list[Segment]
    requests: list[ImageRequest]
    subjects: list[Subject]
    results: list[ImageResult]
    findings: list[Finding]
    repairs: list[Repair]
    round: int


class Candidate(TypedDict, total=False):
    id: str
    sampling: Sampling
    document: CandidateDocument
    screen: dict[str, Any] | None
    """The judge's scores of the plan, before any tool ran."""
    scores: dict[str, Any] | None
    """The judge's scores of the finished document."""
    pruned: bool
    error: str | None
    """Why the candidate has no plan (its planner call failed)."""


def merge_by_id(left: Sequence[Candidate] | None, right: Sequence[Candidate] | None) -> list[Candidate]:
    """Merge candidate lists; a record on the right updates the one with its id."""
    merged: dict[str, Candidate] = {c["id"]: c for c in left or ()}
    for candidate in right or ():
        merged[candidate["id"]] = {**merged.get(candidate["id"], {}), **candidate}
    # Ids share a prefix, so shorter sorts first: c2 before c10.
    return [merged[key] for key in sorted(merged, key=lambda key: (len(key), key))]


class ScalingState(DocumentState, total=False):
    """The test-time-scaling graph's state: the candidates, then the winner's document."""

    candidates: Annotated[list[Candidate], merge_by_id]
    winner: str
