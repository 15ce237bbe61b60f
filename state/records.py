"""Typed records that flow through the graph.

They are TypedDicts, so on the wire they are plain dicts: checkpoints need no
pickle and no class allow-list, and LangGraph Studio shows them as JSON.
Pixels never travel here; an ``ImageRef`` points into the artifact store.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class ImageRef(TypedDict):
    sha256: str
    uri: str
    mime: str
    width: int
    height: int


class Size(TypedDict):
    width: int
    height: int


class ImageRequest(TypedDict):
    slot: int
    source: str
    description: str
    params: dict[str, Any]
    depends_on: int | None
    attempt: int
    refs: NotRequired[list[int]]
    """Images, counted as ``img_index`` counts them, whose subject or style this image keeps:
    from the tag's ``params['refs']``, or linked by subject (``llmi.nodes.subjects``). The
    request waits for them, as an edit waits for the image it edits."""
    subject: NotRequired[str]
    """The name of the recurring subject this image shows, when one was linked."""


class Subject(TypedDict):
    """A subject that appears in several images of a document: a character, a product, a room."""

    name: str
    description: str
    """What it looks like, in words."""
    slots: list[int]
    """The images that show it; the first is the reference of the later ones."""


class Consistency(TypedDict):
    """The vision judge's verdict on an image made from references."""

    verdict: Literal["same", "different", "unchecked"]
    reason: str


class ImageResult(TypedDict):
    slot: int
    source: str
    description: str
    ok: bool
    image: ImageRef | None
    error: str | None
    tool: str
    backend: str | None
    provenance: dict[str, Any]
    seconds: float
    attempt: int
    round: NotRequired[int]
    """The document's round that made it: 0 (also when absent) for the planner and the
    first dispatch, one more after each verifier round. Each verifier round looks at the
    results of its own round."""
    failure: NotRequired[str]
    """Of a failed result: the kind of failure (a ``ToolError`` kind such as ``timeout``,
    or ``check`` for an image that was made but failed a check)."""
    infrastructure: NotRequired[bool]
    """Of a failed result: the tool's service failed (down, refused, out of quota, too slow,
    not configured), not the request. Rewards can leave such failures out."""
    refs: NotRequired[list[int]]
    """The request's references that it was made from (those that had an image)."""
    subject: NotRequired[str]
    """The request's subject, when one was linked."""
    consistency: NotRequired[Consistency]
    """Of an image made from references: whether it shows their subject, when a vision
    judge checked."""


class TextSegment(TypedDict):
    kind: Literal["text"]
    text: str


class SlotSegment(TypedDict):
    kind: Literal["slot"]
    slot: int


Segment = TextSegment | SlotSegment


class Sampling(TypedDict):
    """How a test-time-scaling candidate's planner samples, so that candidates differ."""

    temperature: float | None
    """None: no temperature is sent, so the model's default applies."""
    seed: int


class Finding(TypedDict):
    slot: int
    problem: str
    repaired: NotRequired[bool]


class Revision(TypedDict):
    """One revision of a finished document (``llmi revise``): one image made again from a
    new tag, with the images made from it."""

    version: int | None
    """The document as it was before, kept under the output folder's ``versions/<version>``;
    None when the run's previous document was no longer on disk."""
    slot: int
    tag: str
    """The new tag's body, in the protocol's syntax: as given, or as the model wrote it."""
    instruction: NotRequired[str]
    """What the model was asked to change, when the tag was written from an instruction."""
    at: str
    """When, as ISO 8601 in UTC."""
    rerun: list[int]
    """The slots made again: the revised one, then those made from it."""


class Repair(TypedDict):
    """One repair the verifier made on a slot; its outcome is the slot's later result."""

    slot: int
    attempt: int
    """The attempt the repaired request runs as."""
    kind: str
    """``code``, ``query``, ``diffusion``, ``seed``, ``retag`` or ``consistency``."""
    failed: str
    tried: str


def failed_result(
    slot: int,
    source: str,
    description: str,
    error: str,
    *,
    tool: str = "",
    attempt: int = 0,
    seconds: float = 0.0,
    backend: str | None = None,
    provenance: dict[str, Any] | None = None,
    failure: str | None = None,
    infrastructure: bool = False,
) -> ImageResult:
    result = ImageResult(
        slot=slot,
        source=source,
        description=description,
        ok=False,
        image=None,
        error=error,
        tool=tool,
        backend=backend,
        provenance=provenance or {},
        seconds=seconds,
        attempt=attempt,
    )
    if failure:
        result["failure"] = failure
        result["infrastructure"] = infrastructure
    return result


def failed_check(result: ImageResult, problem: str) -> ImageResult:
    """The result of a made image that failed a check (``problem``: "is one flat colour");
    what made it (tool, backend, provenance) stays on record."""
    return {**result, "ok": False, "image": None, "error": f"verifier: the image {problem}",
            "failure": "check", "infrastructure": False}
