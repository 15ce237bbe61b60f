"""Test-time scaling nodes: draft candidates, screen their plans, produce the survivors, rank.

A candidate is an id, its sampling and what it made: the planner writes its plan with
that sampling, the judge screens the plans before any tool runs, the survivors run
dispatch and the verifier, and the judge ranks the finished documents. The prompt and
inputs they share stay in the graph's state; each task gets them with its own part. The
winner's document becomes the graph's document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langchain_core.runnables import Runnable
from langgraph.runtime import Runtime
from langgraph.types import Send

from llmi.artifacts import ArtifactStore
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.models import PLANNER, temperature_for
from llmi.judge import Judge, rank
from llmi.state import DocumentState
from llmi.state.candidates import Candidate, Sampling, ScalingState

T = TypeVar("T")
R = TypeVar("R")

# Temperatures of the candidates, as offsets from the context's: the first samples as
# a single run would, the others spread around it.
_SPREAD = (0.0, 0.3, -0.3, 0.6, -0.15, 0.45, 0.15, -0.45)
# What every candidate's planner and tools read of the graph's state.
_SHARED_KEYS = ("prompt", "inputs", "image_num")


class NoCandidate(RuntimeError):
    """Every candidate's planner call failed."""


def sampling(index: int, ctx: Context) -> Sampling:
    """Candidate ``index``'s temperature and seed: distinct, and the same on every run.

    When the planner sends no temperature (a negative setting, or a model that takes only
    its default), the candidates differ by their seeds alone.
    """
    offset = _SPREAD[index % len(_SPREAD)] + 0.05 * (index // len(_SPREAD))
    seed = (ctx.seed if ctx.seed >= 0 else 0) + index
    base = temperature_for(ctx, PLANNER)
    temperature = None if base is None else round(min(1.5, max(0.0, base + offset)), 3)
    return Sampling(temperature=temperature, seed=seed)


def fan_out_drafts(state: ScalingState, runtime: Runtime[Context]) -> list[Send]:
    """One ``draft`` task per candidate: the shared inputs, the candidate's id and sampling."""
    ctx = context_of(runtime)
    return [
        Send("draft", {**_shared(state), "candidate": f"c{i}", "sampling": sampling(i, ctx)})
        for i in range(max(1, ctx.candidates))
    ]


class Drafter:
    """Writes one candidate's plan: the planner node, on a state that carries the sampling.

    ``planner`` is any planner node of (state, runtime), as the document graph takes;
    the default one samples as the state's ``sampling`` says.
    """

    def __init__(self, planner: Callable[[DocumentState, Runtime[Context]], dict]) -> None:
        self.planner = planner

    def __call__(self, task: DocumentState, runtime: Runtime[Context]) -> dict:
        candidate = Candidate(id=task["candidate"], sampling=task["sampling"], pruned=False, error=None)
        try:
            plan = self.planner(task, runtime)
        except Exception as exc:  # noqa: BLE001 - one failed sample must not cost the others
            return {"candidates": [{**candidate, "pruned": True, "error": f"{type(exc).__name__}: {exc}"}]}
        return {"candidates": [{**candidate, "document": plan}]}


class Screener:
    """Scores every plan cheaply (rules and the text judge) and keeps the best ``keep``."""

    def __init__(self, judge: Judge | None = None) -> None:
        self.judge = judge

    def __call__(self, state: ScalingState, runtime: Runtime[Context]) -> dict:
        ctx = context_of(runtime)
        planned = [c for c in state["candidates"] if not c.get("error")]
        if not planned:
            errors = "; ".join(c.get("error") or "" for c in state["candidates"])
            raise NoCandidate(f"every candidate's planner call failed: {errors}")
        if len(planned) <= ctx.keep:
            # Nothing to prune: the judge's time would be spent for no choice.
            for c in planned:
                emitter(runtime)("candidate", id=c["id"], status="kept", reward=None)
            return {"candidates": [{"id": c["id"], "screen": None, "pruned": False} for c in planned]}
        judge = self.judge or Judge.from_context(ctx)
        image_num = state.get("image_num", 0)
        screens = _parallel(
            lambda c: judge.screen(
                state["prompt"], c["document"]["draft"], c["document"]["requests"],
                c["document"]["results"], image_num=image_num,
            ),
            planned,
        )
        kept = set(rank([(c["id"], s) for c, s in zip(planned, screens)])[: max(1, ctx.keep)])
        emit = emitter(runtime)
        for c, s in zip(planned, screens):
            emit("candidate", id=c["id"], status="kept" if c["id"] in kept else "pruned",
                 reward=s["reward"])
        return {"candidates": [
            {"id": c["id"], "screen": s, "pruned": c["id"] not in kept}
            for c, s in zip(planned, screens)
        ]}


def fan_out_survivors(state: ScalingState) -> list[Send]:
    """One ``produce`` task per candidate that survived the screening: the shared inputs,
    the candidate's id and its plan."""
    return [
        Send("produce", {**_shared(state), "candidate": c["id"], **c["document"]})
        for c in state["candidates"] if not c.get("pruned")
    ]


class Producer:
    """Runs a candidate's tools and repairs: the production graph on its plan."""

    def __init__(self, production: Runnable) -> None:
        self.production = production

    def __call__(self, task: DocumentState, runtime: Runtime[Context]) -> dict:
        document = self.production.invoke(task, context=context_of(runtime))
        return {"candidates": [{"id": task["candidate"], "document": document}]}


class Ranker:
    """Scores the finished candidates with the full reward; the best one's document wins."""

    def __init__(self, judge: Judge | None = None) -> None:
        self.judge = judge

    def __call__(self, state: ScalingState, runtime: Runtime[Context]) -> dict:
        ctx = context_of(runtime)
        judge = self.judge or Judge.from_context(ctx)
        store = ArtifactStore(ctx.artifact_dir)
        finished = [c for c in state["candidates"] if not c.get("pruned") and not c.get("error")]
        scores = _parallel(
            lambda c: judge.score(
                state["prompt"], c["document"]["draft"], c["document"]["segments"],
                c["document"]["results"], store=store, inputs=state.get("inputs", []),
                image_num=state.get("image_num", 0),
                text_scores=(c.get("screen") or {}).get("llm"),
            ),
            finished,
        )
        winner = rank([(c["id"], s) for c, s in zip(finished, scores)])[0]
        document = next(c["document"] for c in finished if c["id"] == winner)
        return {
            **document,
            "candidates": [{"id": c["id"], "scores": s} for c, s in zip(finished, scores)],
            "winner": winner,
        }


def _shared(state: ScalingState) -> dict[str, Any]:
    return {key: state[key] for key in _SHARED_KEYS if key in state}


def _parallel(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``work`` on every item at once (judge calls wait on servers), results in order."""
    with ThreadPoolExecutor(max_workers=max(1, len(items)), thread_name_prefix="llmi-judge") as pool:
        return list(pool.map(work, items))
