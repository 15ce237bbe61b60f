"""The records an evaluation passes around and writes, one results line per item.

They are TypedDicts, so a results line is plain JSON.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from llmi.state import ImageRef, ImageResult, Repair, Segment

OPENING = "opening"
"""The ``data_source`` of OpenING's items, and the dataset format that names its files."""
UEVAL = "ueval"
"""The ``data_source`` of UEval's items, and the dataset format that names its files."""
ISG = "isg"
"""The ``data_source`` of ISG-Bench's items, and the dataset format that names its files."""


class EvalItem(TypedDict):
    """One dataset item, whatever form it was read from."""

    id: str
    prompt: str
    images: list[str]
    """Paths of the input images, written out when the dataset held bytes or base64."""
    image_num: int
    """Images asked for, as LLM-I counts them: -1 none, 0 any, 99 at least one, n exactly n."""
    tools: list[str]
    """Sources the item needs (LLM-I's ``extra_info.tools``); empty when it does not say."""
    split: str
    criteria: list[str]
    """Rubric criteria (LLMI-Bench's ``r1``...``r10``); empty when the item has none."""
    data_source: str
    extra: dict[str, Any]
    """The item's other fields, JSON-safe."""
    error: NotRequired[str]
    """Why the item cannot run (an input image it names is missing): it ends with this
    error, and the other items run."""


class Document(TypedDict, total=False):
    """What the graph made of one item: its final state, less what a report never needs."""

    draft: str
    segments: list[Segment]
    results: list[ImageResult]
    inputs: list[ImageRef]
    repairs: list[Repair]
    outputs: dict[str, str]


class OutputStep(TypedDict):
    """A step of a document in OpenING's output shape: text, then the image that ends it."""

    text: str
    result: ImageResult | None
    """The image's result; None for text after the last image."""


class ItemRun(TypedDict):
    """What a scorer is given: the item and the document made for it."""

    item: EvalItem
    document: Document
    seconds: float


class ItemScore(TypedDict):
    """One scorer's verdict on one item."""

    score: float | None
    """The headline, 0..1; None when it could not be known."""
    details: dict[str, Any]
    errors: list[str]
    """What went wrong while scoring; such parts are left out of the score, not counted as 0."""


class ResultLine(TypedDict):
    """One line of ``results.jsonl``: an item, what was made of it, and its scores."""

    id: str
    index: int
    """The item's position in the dataset."""
    protocol: str
    """The evaluation protocol it was written and judged under (``llmi.evaluation.protocols``)."""
    status: Literal["ok", "error"]
    error: str | None
    """Why the item has no document (status ``error``); such items run again on resume."""
    seconds: float
    item: EvalItem
    document: Document
    scores: dict[str, ItemScore]
    """By scorer name."""
