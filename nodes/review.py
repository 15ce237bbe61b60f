"""Review node: a person sees the plan, and accepts, edits or drops its images, before any
tool runs.

It stands after the subjects node and before dispatch. When the run reviews its plan (the
context's ``review``, ``LLMI_REVIEW``), it calls LangGraph's ``interrupt`` with the plan as
plain JSON (``llmi.plans``); the run stops there, checkpointed, and goes on with
``Command(resume=answer)``: ``True`` or ``"accept"`` keeps the plan, an edited plan
replaces it. An edit that cannot be used stops the run again, with the same plan and the
problems in its ``errors``, so that the person can fix it; nothing is lost. When the run
does not review its plan, the node does nothing.

A dropped slot leaves the document (its segment goes) and its subject. Its request stays
on record, as a channel merged by slot keeps every slot, with a failed result of round -1
that says it was dropped: dispatch has nothing pending for it, and no verifier round (0
and up) looks at it, so it is neither made nor repaired. The draft stays as the model
wrote it: a retag repair still finds each failed tag at its place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from llmi.context import Context, context_of
from llmi.plans import Edit, PlanError, ReviewPlan, plain, plan_for_review, read_edit
from llmi.state import DocumentState, Finding, ImageRequest, ImageResult, Subject, failed_result
from llmi.tools.registry import ToolRegistry, default_tools

DROPPED = "dropped in review"
REVIEW = "review"
"""The ``tool`` of a dropped slot's result."""


class Review:
    """Stops the run at its plan for a person's answer, when the context's ``review`` asks."""

    def __init__(self, tools: ToolRegistry | None = None) -> None:
        self.tools = tools if tools is not None else default_tools()

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        if not context_of(runtime).review:
            return {}
        shown = self.plan(state)
        errors: list[str] = []
        while True:
            # Each bad answer asks again; on resume the answers so far are replayed in order.
            answer = interrupt({**shown, "errors": errors} if errors else shown)
            try:
                edit = read_edit(answer, shown)
            except PlanError as exc:
                errors = exc.problems
                continue
            return reviewed(state, edit)

    def plan(self, state: DocumentState) -> ReviewPlan:
        plan = plan_for_review(
            state.get("segments", []), state.get("requests", []),
            [r for r in state.get("results", []) if not r["ok"]],
            n_inputs=len(state.get("inputs", [])),
            required_params=self.tools.required_params(),
            reference_sources=self.tools.reference_sources(),
        )
        if state.get("candidate") is not None:
            plan["candidate"] = state["candidate"]
        return plan


def reviewed(state: DocumentState, edit: Edit) -> dict[str, Any]:
    """The state's update for a checked edit: the requests it changed, the slots it dropped."""
    requests = {request["slot"]: request for request in state.get("requests", [])}
    changed = [_changed(requests[slot], request) for slot, request in edit.requests.items()
               if not _same(requests[slot], request)]
    if not changed and not edit.dropped:
        return {}
    results = {result["slot"]: result for result in state.get("results", [])}
    update: dict[str, Any] = {
        "requests": changed,
        "results": [_dropped(requests.get(slot) or results[slot]) for slot in sorted(edit.dropped)],
        "findings": [Finding(slot=-1, problem=_summary(changed, edit.dropped))],
    }
    if edit.dropped:
        update["segments"] = [s for s in state.get("segments", [])
                              if s["kind"] != "slot" or s["slot"] not in edit.dropped]
        update["subjects"] = _without_slots(state.get("subjects", []), edit.dropped)
    return update


def _same(before: ImageRequest, after: ImageRequest) -> bool:
    return (before["source"], before["description"], plain(before["params"])) == \
        (after["source"], after["description"], plain(after["params"]))


def _changed(before: ImageRequest, after: ImageRequest) -> ImageRequest:
    """The edited request, as the attempt it replaces, with that one's subject."""
    request = ImageRequest(**{**after, "attempt": before["attempt"]})
    if "subject" in before:
        request["subject"] = before["subject"]
    return request


def _dropped(record: ImageRequest | ImageResult) -> ImageResult:
    result = failed_result(record["slot"], record["source"], record["description"], DROPPED,
                           tool=REVIEW, attempt=record["attempt"])
    result["round"] = -1
    return result


def _without_slots(subjects: Sequence[Subject], dropped: frozenset[int]) -> list[Subject]:
    """The subjects without the dropped images; one left with a single image is no subject."""
    kept = [Subject(**{**subject, "slots": [s for s in subject["slots"] if s not in dropped]})
            for subject in subjects]
    return [subject for subject in kept if len(subject["slots"]) >= 2]


def _summary(changed: Sequence[Mapping[str, Any]], dropped: frozenset[int]) -> str:
    parts = []
    if changed:
        parts.append(_images(request["slot"] for request in changed) + " changed")
    if dropped:
        parts.append(_images(sorted(dropped)) + " dropped")
    return "plan reviewed: " + "; ".join(parts)


def _images(slots: Iterable[int]) -> str:
    numbers = [str(slot) for slot in slots]
    return ("image " if len(numbers) == 1 else "images ") + ", ".join(numbers)
