"""Verifier node: checks every new image, then repairs the slots that failed."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime
from PIL import Image, UnidentifiedImageError

from llmi import stopping
from llmi.artifacts import ArtifactStore
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.models import chat_model, judge_model
from llmi.nodes.judge import Judge
from llmi.nodes.repairs import Failure, Situation, repair
from llmi.state import DocumentState, Finding, ImageResult, Repair, Segment
from llmi.tools.registry import ToolRegistry, default_tools

MIN_SIDE = 64
# Largest per-channel spread still counted as one flat colour (JPEG noise on a blank frame).
FLAT_SPREAD = 3


def image_problem(data: bytes) -> str | None:
    """Why an image is unusable ("is too small ..."), or None when it passes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if min(img.size) < MIN_SIDE:
                return f"is too small ({img.width}x{img.height}, needs {MIN_SIDE}x{MIN_SIDE})"
            # A JPEG decodes whole at an eighth of its size, which is all the checks need.
            img.draft("RGB", (img.width // 8, img.height // 8))
            img.load()
            extrema = (img if img.mode == "RGB" else img.convert("RGB")).getextrema()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return f"does not decode ({exc})"
    if all(high - low <= FLAT_SPREAD for low, high in extrema):
        return "is one flat colour"
    return None


class Verifier:
    """Fails new images that do not pass the checks, and repairs failed slots.

    The checks are ``image_problem`` and, with a vision judge, whether the image fits its
    description and the text around it. ``llmi.nodes.repairs`` says how each kind of
    failure is repaired; each slot gets at most ``repair_rounds`` repairs.

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
        fresh = [r for r in state.get("results", []) if not r.get("checked")]
        checked, findings = self._check(fresh, state.get("segments", []), ctx)
        situation = Situation(
            ctx=ctx,
            tools=self.tools,
            requests=_by_slot(state.get("requests", [])),
            results=_by_slot(state.get("results", [])) | _by_slot(checked),
            history=_history(state.get("repairs", [])),
            draft=state.get("draft", ""),
            n_inputs=len(state.get("inputs", [])),
        )
        failures = [Failure(r, situation.requests.get(r["slot"])) for r in checked if not r["ok"]]
        fixed = repair(failures, situation, lambda: self.model or chat_model(ctx))
        emit = emitter(runtime, **({"candidate": state["candidate"]} if "candidate" in state else {}))
        for tried in fixed.repairs:
            emit("repair", slot=tried["slot"], kind=tried["kind"], failed=tried["failed"],
                 tried=tried["tried"])
        return {
            "results": list((_by_slot(checked) | _by_slot(fixed.results)).values()),
            "requests": fixed.requests,
            "findings": findings + fixed.findings,
            "repairs": fixed.repairs,
            "round": state.get("round", 0) + 1,
        }

    def _check(
        self, fresh: Sequence[ImageResult], segments: Sequence[Segment], ctx: Context
    ) -> tuple[list[ImageResult], list[Finding]]:
        """The fresh results marked checked, those whose image fails a check as failed."""
        store = ArtifactStore(ctx.artifact_dir)
        made = [r for r in fresh if r["ok"] and r["image"]]
        judge, findings = (self.judge, []) if self.judge or not made else _vision_judge(ctx)
        with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_parallel, len(made)))) as pool:
            problems = dict(
                zip((r["slot"] for r in made),
                    pool.map(lambda r: _problem(r, store, judge, segments), made))
            )
        checked: list[ImageResult] = []
        for result in fresh:
            problem = problems.get(result["slot"])
            if problem:
                error = f"verifier: the image {problem}"
                result = {**result, "ok": False, "image": None, "error": error}
                findings.append(Finding(slot=result["slot"], problem=error))
            checked.append({**result, "checked": True})
        return checked, findings


def _vision_judge(ctx: Context) -> tuple[Judge | None, list[Finding]]:
    """The context's vision judge, if one is configured; only it: no reward settings."""
    try:
        vlm = judge_model(ctx, vision=True)
    except Exception as exc:  # noqa: BLE001 - a judge that cannot start must not cost the document
        return None, [Finding(slot=-1, problem=f"relevance check skipped: {_why(exc)}")]
    return (Judge(vlm=vlm) if vlm is not None else None), []


def _problem(
    result: ImageResult, store: ArtifactStore, judge: Judge | None, segments: Sequence[Segment]
) -> str | None:
    """Why a new image fails the checks, or None when it passes."""
    checked = "problem" in result  # by dispatch, as the image arrived
    if checked and (result["problem"] or judge is None):
        return result["problem"]
    try:
        data = store.get(result["image"])
    except (OSError, ValueError) as exc:
        return f"is missing from the artifact store ({exc})"
    problem = result["problem"] if checked else image_problem(data)
    if problem or judge is None:
        return problem
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
