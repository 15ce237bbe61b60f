"""The plan as a person reviews it: shown as plain JSON, edited, and read back.

After planning, a run that reviews its plan (the context's ``review``) stops before any
tool runs and shows the plan (``llmi.nodes.review``). The plan is plain JSON, so that
LangGraph Studio, the SDK and a text editor show it as it is::

    {"inputs": 1,
     "sources": {"search": {"params": ["query"], "refs": false}, ...},
     "slots": [{"index": 1, "source": "code", "description": "...", "params": {...},
                "before": "text just before the image", "after": "text just after it"}],
     "failed": [{"index": 2, "source": "unknown", "description": "", "error": "bad tag: ..."}],
     "errors": ["slot 3: ..."]}

``index`` is the image index, as ``img_index`` and ``refs`` count images: the input
images first. ``sources`` says what each source's tags need; ``errors``, what was wrong
with the last edit; ``candidate`` (test-time scaling), whose plan it is. An edited plan may
change a slot's ``source``, ``description`` and ``params`` (``refs`` included), or drop a
slot by deleting its entry; the rest is shown, not read: an edit is checked against the
plan as it was shown. A failed tag cannot be mended here (the verifier retags
it): it stays as it failed, or is dropped when its entry leaves ``failed``. Each edited
slot is read again by the tag parser's rules (``llmi.tags.read_tag``), and a slot must not
edit an image the plan drops; the refs that name a dropped image are left out. Every
problem is reported at once, each with its slot (``PlanError``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from llmi.errors import LlmiError
from llmi.state import ImageRequest, ImageResult, Segment
from llmi.tags import TagError, read_tag

ACCEPT = "accept"
"""The answer that keeps the plan as it is (``True`` does too)."""
_AROUND_CHARS = 300
EDITABLE = ("source", "description", "params")


class SourceRules(TypedDict):
    params: list[str]
    """The params a tag of this source must have."""
    refs: bool
    """Whether its tags may carry ``refs``."""


class PlanSlot(TypedDict):
    index: int
    source: str
    description: str
    params: dict[str, Any]
    before: NotRequired[str]
    after: NotRequired[str]


class FailedTag(TypedDict):
    index: int
    source: str
    description: str
    error: str


class ReviewPlan(TypedDict):
    inputs: int
    """Input images: they take the indices before the first slot's."""
    sources: dict[str, SourceRules]
    slots: list[PlanSlot]
    failed: list[FailedTag]
    errors: NotRequired[list[str]]
    """What was wrong with the last edit, when this plan is shown again for it."""
    candidate: NotRequired[str]
    """The test-time-scaling candidate whose plan this is (one that screening kept)."""


class PlanError(LlmiError, ValueError):
    """An edited plan that cannot be used; ``problems`` lists each, with its slot."""

    def __init__(self, problems: Sequence[str]) -> None:
        count = "a problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"the edited plan has {count}: " + "; ".join(problems),
                         "fix each slot named, or delete a slot's entry to drop it")
        self.problems = list(problems)


@dataclass(frozen=True)
class Edit:
    """An edited plan, checked: the request of each slot it keeps, and the slots it drops."""

    requests: dict[int, ImageRequest]
    dropped: frozenset[int]


def plan_for_review(
    segments: Sequence[Segment], requests: Sequence[ImageRequest],
    failures: Sequence[ImageResult], *, n_inputs: int,
    required_params: Mapping[str, Sequence[str]], reference_sources: Collection[str],
) -> ReviewPlan:
    """The plan a person sees: every slot of the document in order, with its text around."""
    by_slot = {request["slot"]: request for request in requests}
    failed = {result["slot"]: result for result in failures}
    plan = ReviewPlan(
        inputs=n_inputs,
        sources={source: SourceRules(params=list(params), refs=source in reference_sources)
                 for source, params in required_params.items()},
        slots=[], failed=[],
    )
    for slot in (s["slot"] for s in segments if s["kind"] == "slot"):
        if slot in by_slot:
            request = by_slot[slot]
            plan["slots"].append(PlanSlot(
                index=slot, source=request["source"], description=request["description"],
                params=plain(request["params"]), **_text_around(segments, slot)))
        elif slot in failed:
            result = failed[slot]
            plan["failed"].append(FailedTag(index=slot, source=result["source"],
                                            description=result["description"],
                                            error=result["error"] or ""))
    return plan


def plain(value: Any) -> Any:
    """``value`` as JSON has it: tuples as lists, anything JSON cannot hold as its text."""
    return json.loads(json.dumps(value, default=str))


def _text_around(segments: Sequence[Segment], slot: int) -> dict[str, str]:
    """The text segments next to ``slot``: the end of the one before, the start of the
    one after (an image next to another image has none on that side)."""
    at = next(i for i, s in enumerate(segments) if s["kind"] == "slot" and s["slot"] == slot)
    around: dict[str, str] = {}
    if at > 0 and segments[at - 1]["kind"] == "text":
        text = segments[at - 1]["text"].strip()
        around["before"] = text if len(text) <= _AROUND_CHARS else "..." + text[-_AROUND_CHARS:]
    if at + 1 < len(segments) and segments[at + 1]["kind"] == "text":
        text = segments[at + 1]["text"].strip()
        around["after"] = text if len(text) <= _AROUND_CHARS else text[:_AROUND_CHARS] + "..."
    return around


def accepted(answer: Any) -> bool:
    """Whether ``answer`` keeps the plan as it is."""
    return answer is True or (isinstance(answer, str) and answer.strip().lower() == ACCEPT)


def read_edit(answer: Any, shown: ReviewPlan) -> Edit:
    """The edited plan ``answer`` (a mapping, or its JSON text) checked against the plan
    ``shown``; PlanError lists every problem. An accepting answer keeps every slot."""
    edited = _as_plan(shown if accepted(answer) else answer)
    problems: list[str] = []
    requested = {entry["index"]: entry for entry in _numbered(edited["slots"], shown, problems)}
    dropped = frozenset(
        {slot["index"] for slot in shown["slots"]} - set(requested)
        | {failed["index"] for failed in shown["failed"]} - _kept_failed(edited, shown, problems))
    rules = {source: tuple(rule["params"]) for source, rule in shown["sources"].items()}
    reference_sources = {source for source, rule in shown["sources"].items() if rule["refs"]}
    requests: dict[int, ImageRequest] = {}
    for index, entry in requested.items():
        tag = {key: entry.get(key) for key in EDITABLE}
        try:
            request = read_tag(index, tag, rules, reference_sources=reference_sources)
        except TagError as exc:
            problems.append(f"slot {index}: {exc}")
            continue
        if request["depends_on"] in dropped:
            problems.append(f"slot {index}: img_index {request['depends_on']} is an image the "
                            "plan drops (drop this slot too, or point it at another image)")
            continue
        requests[index] = _without_refs_to(request, dropped)
    if problems:
        raise PlanError(problems)
    return Edit(requests=requests, dropped=dropped)


def _as_plan(answer: Any) -> Mapping[str, Any]:
    """An answer as a plan: an object with a list ``slots``, from JSON text when it is text."""
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except ValueError as exc:
            raise PlanError([f"the plan is not JSON ({exc})"]) from None
    if not isinstance(answer, Mapping) or not isinstance(answer.get("slots"), list):
        raise PlanError([f"the plan is not an object with a list 'slots' (nor {ACCEPT!r}, "
                         "which keeps the plan as it is)"])
    return answer


def _kept_failed(edited: Mapping[str, Any], shown: ReviewPlan, problems: list[str]) -> set[int]:
    """The failed tags an edited plan keeps: those its ``failed`` still names (all, without it)."""
    shown_failed = {failed["index"] for failed in shown["failed"]}
    failed = edited.get("failed")
    if failed is None:
        return shown_failed
    if not isinstance(failed, list):
        problems.append("'failed' is not a list")
        return shown_failed
    return {f.get("index") for f in failed
            if isinstance(f, Mapping) and isinstance(f.get("index"), int)} & shown_failed


def _numbered(entries: list[Any], shown: ReviewPlan, problems: list[str]) -> list[dict[str, Any]]:
    """The entries that name a slot of the plan, each once; a problem for every other."""
    slots = {slot["index"] for slot in shown["slots"]}
    failed = {f["index"] for f in shown["failed"]}
    seen: set[int] = set()
    numbered = []
    for position, entry in enumerate(entries):
        index = entry.get("index") if isinstance(entry, Mapping) else None
        if not isinstance(index, int) or isinstance(index, bool):
            problems.append(f"entry {position} of 'slots' has no whole-number 'index'")
        elif index in failed:
            problems.append(f"slot {index}: its tag failed; it cannot become a request here "
                            "(leave it in 'failed', or delete it there to drop it)")
        elif index not in slots:
            known = ", ".join(map(str, sorted(slots))) or "none"
            problems.append(f"slot {index}: not a slot of the plan (its slots: {known}); a "
                            "review changes or drops images, it adds none")
        elif index in seen:
            problems.append(f"slot {index}: named twice")
        else:
            seen.add(index)
            numbered.append(dict(entry))
    return numbered


def _without_refs_to(request: ImageRequest, dropped: Collection[int]) -> ImageRequest:
    """``request`` without the refs that name a dropped image, in its params too."""
    refs = [ref for ref in request.get("refs", []) if ref not in dropped]
    if refs == request.get("refs", []):
        return request
    kept = {"refs": refs} if refs else {}
    params = {key: value for key, value in request["params"].items() if key != "refs"} | kept
    fields = {key: value for key, value in request.items() if key != "refs"}
    return ImageRequest(**(fields | {"params": params} | kept))
