"""The document graph's state."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from llmi.state.records import (
    Finding,
    ImageRef,
    ImageRequest,
    ImageResult,
    Repair,
    Revision,
    Sampling,
    Segment,
    Size,
    Subject,
)
from llmi.state.reducers import merge_by_slot


class DocumentInput(TypedDict, total=False):
    prompt: str
    images: list[str]
    """Paths of input images; they take the first ``img_index`` values."""
    image_num: int
    """Images asked for, as LLM-I counts them: -1 none, 0 any, 99 at least one, n exactly n."""


class DocumentState(TypedDict, total=False):
    candidate: str
    """Id of the test-time-scaling candidate this document is, if any."""
    sampling: Sampling
    """That candidate's sampling; the default planner samples with it."""
    prompt: str
    images: list[str]
    image_num: int
    inputs: list[ImageRef]
    input_sizes: list[Size]
    """The input images' sizes as given, upright; ``inputs`` holds them as stored, scaled
    down where they had more than ``max_input_pixels``."""
    draft: str
    segments: list[Segment]
    requests: Annotated[list[ImageRequest], merge_by_slot]
    subjects: list[Subject]
    """The recurring subjects linked across the document's images (``llmi.nodes.subjects``)."""
    results: Annotated[list[ImageResult], merge_by_slot]
    findings: Annotated[list[Finding], operator.add]
    repairs: Annotated[list[Repair], operator.add]
    round: int
    outputs: dict[str, str]
    revisions: Annotated[list[Revision], operator.add]
    """Every revision of the finished document, in order (``llmi revise``); the reducer
    appends, so a revision of a revision keeps the earlier ones."""


class DocumentOutput(TypedDict, total=False):
    draft: str
    segments: list[Segment]
    subjects: list[Subject]
    results: list[ImageResult]
    findings: list[Finding]
    repairs: list[Repair]
    outputs: dict[str, str]
    revisions: list[Revision]


def pending_requests(state: DocumentState) -> list[ImageRequest]:
    """Requests that have no result yet for their current attempt."""
    done = {r["slot"]: r["attempt"] for r in state.get("results", [])}
    return [
        request
        for request in state.get("requests", [])
        if done.get(request["slot"], -1) < request["attempt"]
    ]


def images_by_index(state: DocumentState) -> dict[int, ImageRef]:
    """Every image the state holds, by image index (as ``img_index`` and ``refs`` count
    them): the input images, then each slot's image that was made."""
    made = {r["slot"]: r["image"] for r in state.get("results", []) if r["ok"] and r["image"]}
    return dict(enumerate(state.get("inputs", []))) | made
