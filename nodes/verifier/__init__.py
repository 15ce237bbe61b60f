"""Verifier node: judges whether each new image fits its text, then repairs the failed slots."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime

from llmi import stopping
from llmi.artifacts import ArtifactStore
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.models import chat_model, judge_model
from llmi.judge import Judge
from llmi.nodes.verifier.repairs import Failure, Situation, repair
from llmi.state import DocumentState, Finding, ImageResult, Repair, Segment, failed_check
from llmi.tools.registry import ToolRegistry, default_tools


class Verifier:
    """Fails new images that do not fit their text, and repairs failed slots.

    The new results are those of this round (their ``round``). Dispatch has checked
    their images already (``llmi.nodes.dispatch.image_check``): an image that failed is a failed
    result of kind ``check``, and each such failure is a finding. With a vision judge,
    each new image must also fit its description and the text around it.
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
        misfits, findings = self._misfits(new, state.get("segments", []), ctx)
        checked = _by_slot(new) | _by_slot(misfits)
        findings += [Finding(slot=r["slot"], problem=r["error"])
                     for r in checked.values() if r.get("failure") == "check"]
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
                    for r in checked.values() if not r["ok"]]
        fixed = repair(failures, situation, lambda: self.model or chat_model(ctx))
        emit = emitter(runtime, candidate=state.get("candidate"))
        for tried in fixed.repairs:
            emit("repair", slot=tried["slot"], kind=tried["kind"], failed=tried["failed"],
                 tried=tried["tried"])
        # A result a repair ends the slot with is made, and judged, in this round.
        ended = [{**r, "round": this_round} for r in fixed.results]
        return {
            "results": list((_by_slot(misfits) | _by_slot(ended)).values()),
            "requests": fixed.requests,
            "findings": findings + fixed.findings,
            "repairs": fixed.repairs,
            "round": this_round + 1,
        }

    def _misfits(
        self, new: Sequence[ImageResult], segments: Sequence[Segment], ctx: Context
    ) -> tuple[list[ImageResult], list[Finding]]:
        """The new images that do not fit their text, failed; and a finding when the
        relevance check is skipped because the vision judge cannot start."""
        made = [r for r in new if r["ok"] and r["image"]]
        judge, findings = (self.judge, []) if self.judge or not made else _vision_judge(ctx)
        if judge is None:
            return [], findings
        store = ArtifactStore(ctx.artifact_dir)
        with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_parallel, len(made)))) as pool:
            problems = pool.map(lambda r: _misfit(r, store, judge, segments), made)
            misfits = [failed_check(r, problem) for r, problem in zip(made, problems) if problem]
        return misfits, findings


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
