"""Verifier node: judges whether each new image fits its text and keeps its references' subject,
then repairs the failed slots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime

from llmi import stopping
from llmi.artifacts import ArtifactStore
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.models import chat_model, judge_model
from llmi.judge import Judge
from llmi.nodes.verifier.consistency import check_consistency, mismatch
from llmi.nodes.verifier.repairs import Failure, Situation, repair
from llmi.state import (
    DocumentState,
    Finding,
    ImageRef,
    ImageResult,
    Repair,
    Segment,
    Subject,
    failed_check,
    images_by_index,
)
from llmi.tools.registry import ToolRegistry, default_tools


class Verifier:
    """Fails new images that do not fit their text, and repairs failed slots.

    The new results are those of this round (their ``round``). Dispatch has checked
    their images already (``llmi.nodes.dispatch.image_check``): an image that failed is a failed
    result of kind ``check``, and each such failure is a finding. With a vision judge,
    each new image must also fit its description and the text around it, and one made
    from references (``refs``) gets the judge's verdict on whether it shows their subject
    (``llmi.nodes.verifier.consistency``); a clear mismatch keeps its image, is a
    finding, and is repaired like a failure.
    ``llmi.nodes.verifier.repairs`` says how each kind of failure is repaired; each slot gets at
    most ``repair_rounds`` repairs.

    ``model`` writes the repairs (default: the planner's model of the run context);
    ``tools`` should be the registry dispatch runs; ``judge`` checks relevance (default:
    one with the context's vision judge, when one is configured).
    """

    def __init__(
        self,
        model: BaseChatModel | None = None,
        *,
        tools: ToolRegistry | None = None,
        judge: Judge | None = None,
    ) -> None:
        self.model = model
        self.tools = tools if tools is not None else default_tools()
        self.judge = judge

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        # After a round that a stop ended early: the run resumes here.
        stopping.raise_if_requested()
        ctx = context_of(runtime)
        this_round = state.get("round", 0)
        new = [r for r in state.get("results", []) if r.get("round", 0) == this_round]
        judged, findings = self._judged(new, state, ctx)
        checked = _by_slot(new) | _by_slot(judged)
        findings += [Finding(slot=r["slot"], problem=r["error"])
                     for r in checked.values() if r.get("failure") == "check"]
        findings += [Finding(slot=r["slot"], problem=problem)
                     for r in checked.values() if (problem := mismatch(r))]
        situation = Situation(
            ctx=ctx,
            tools=self.tools,
            requests=_by_slot(state.get("requests", [])),
            results=_by_slot(state.get("results", [])) | checked,
            history=_history(state.get("repairs", [])),
            draft=state.get("draft", ""),
            n_inputs=len(state.get("inputs", [])),
        )
        failures = [Failure(r, situation.requests.get(r["slot"]))
                    for r in checked.values() if not r["ok"] or mismatch(r)]
        fixed = repair(failures, situation, lambda: self.model or chat_model(ctx))
        emit = emitter(runtime, candidate=state.get("candidate"))
        for tried in fixed.repairs:
            emit("repair", slot=tried["slot"], kind=tried["kind"], failed=tried["failed"],
                 tried=tried["tried"])
        # A result a repair ends the slot with is made, and judged, in this round.
        ended = [{**r, "round": this_round} for r in fixed.results]
        return {
            "results": list((_by_slot(judged) | _by_slot(ended)).values()),
            "requests": fixed.requests,
            "findings": findings + fixed.findings,
            "repairs": fixed.repairs,
            "round": this_round + 1,
        }

    def _judged(
        self, new: Sequence[ImageResult], state: DocumentState, ctx: Context
    ) -> tuple[list[ImageResult], list[Finding]]:
        """The new images the vision judge changed the record of: failed when they do not
        fit their text, with a consistency verdict when they were made from references;
        and a finding when the checks are skipped because the vision judge cannot start."""
        made = [r for r in new if r["ok"] and r["image"]]
        judge, findings = (self.judge, []) if self.judge or not made else _vision_judge(ctx)
        if judge is None:
            return [], findings
        view = _View(
            store=ArtifactStore(ctx.artifact_dir),
            judge=judge,
            segments=state.get("segments", []),
            images=images_by_index(state),
            subjects=state.get("subjects", []),
        )
        with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_parallel, len(made)))) as pool:
            judged = [r for r in pool.map(view.judge_one, made) if r is not None]
        return judged, findings


@dataclass(frozen=True)
class _View:
    """What the vision judge's checks of one round look at."""

    store: ArtifactStore
    judge: Judge
    segments: Sequence[Segment]
    images: Mapping[int, ImageRef]
    """The images that ``refs`` count, by index (``images_by_index``)."""
    subjects: Sequence[Subject]

    def judge_one(self, result: ImageResult) -> ImageResult | None:
        """The result failed when it does not fit its text, else with its consistency
        verdict when it was made from references; None when neither applies."""
        problem = _misfit(result, self.store, self.judge, self.segments)
        if problem:
            return failed_check(result, problem)
        if not result.get("refs"):
            return None
        verdict = check_consistency(result, self.images, self.subjects, self.store, self.judge)
        return {**result, "consistency": verdict}


def _vision_judge(ctx: Context) -> tuple[Judge | None, list[Finding]]:
    """The context's vision judge, if one is configured; only it: no reward settings."""
    try:
        vlm = judge_model(ctx, vision=True)
    except Exception as exc:  # noqa: BLE001 - a judge that cannot start must not cost the document
        return None, [Finding(slot=-1, problem=f"relevance check skipped: {_why(exc)}")]
    return (Judge(vlm=vlm) if vlm is not None else None), []


def _misfit(
    result: ImageResult, store: ArtifactStore, judge: Judge, segments: Sequence[Segment]
) -> str | None:
    """Why a new image does not fit its text, or None when it fits or the judge cannot tell."""
    try:
        data = store.get(result["image"])
    except (OSError, ValueError) as exc:
        return f"is missing from the artifact store ({exc})"
    fits, reason = judge.check_relevance(
        data, result["description"], surrounding_text(segments, result["slot"])
    )
    # Unknown (None) passes: only a clear mismatch costs the slot its image.
    return f"does not fit its text ({reason})" if fits is False else None


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def surrounding_text(segments: Sequence[Segment], slot: int) -> str:
    """The text just before and just after a slot: what its image should go with."""
    at = next(
        (i for i, s in enumerate(segments) if s["kind"] == "slot" and s["slot"] == slot), None
    )
    if at is None:
        return ""
    before = next((s["text"] for s in reversed(segments[:at]) if s["kind"] == "text"), "")
    after = next((s["text"] for s in segments[at + 1 :] if s["kind"] == "text"), "")
    return "\n\n".join(text for text in (before, after) if text)


def _history(repairs: Iterable[Repair]) -> dict[int, set[str]]:
    history: dict[int, set[str]] = {}
    for record in repairs:
        history.setdefault(record["slot"], set()).add(record["kind"])
    return history


def _by_slot(records: Iterable[Any]) -> dict[int, Any]:
    return {record["slot"]: record for record in records}
