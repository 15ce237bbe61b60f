"""Scorers of finished documents, one module each, all with the ``Scorer`` interface.

- ``rubric``: LLMI-Bench's per-item criteria, each scored 0, 1 or 2 by a judge model;
- ``reward``: LLM-I's hybrid reward with every component;
- ``tool_use``: per-source attempt and success rates, and agreement with the tools an
  item requires;
- ``opening``: OpenING's GPT score, seven criteria each scored 0-10 by a judge model;
- ``ueval``: UEval's text and image rubrics, each judged met or not met;
- ``isg``: ISG-Bench's structure, block, image and holistic levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmi.context import Context
from llmi.evaluation.records import ISG, OPENING, UEVAL, EvalItem

if TYPE_CHECKING:
    from llmi.evaluation.scorers.base import Scorer

NAMES = ("rubric", "reward", "tool_use", "opening", "ueval", "isg")


def build_scorers(
    names: Sequence[str], ctx: Context, items: Sequence[EvalItem]
) -> tuple[list[Scorer], list[str]]:
    """The scorers ``names`` asks for, and notes on the ones left out.

    With no names, every scorer that applies: for OpenING's, UEval's and ISG's items their own
    score (when a judge model is configured) and tool use; for others the rubric when some
    item has criteria and a judge model is configured, the reward and tool use always. A scorer
    asked for by name that cannot run raises ValueError.
    """
    if names:
        return [_build(name, ctx) for name in dict.fromkeys(names)], []
    if any(item["data_source"] == OPENING for item in items):
        judged, always = "opening", ["tool_use"]
    elif any(item["data_source"] == UEVAL for item in items):
        judged, always = "ueval", ["tool_use"]
    elif any(item["data_source"] == ISG for item in items):
        judged, always = "isg", ["tool_use"]
    else:
        judged = "rubric" if any(item["criteria"] for item in items) else None
        always = ["reward", "tool_use"]
    scorers: list[Scorer] = []
    notes: list[str] = []
    if judged:
        try:
            scorers.append(_build(judged, ctx))
        except ValueError as exc:
            notes.append(f"no {judged} scores: {exc}")
    return scorers + [_build(name, ctx) for name in always], notes


def _build(name: str, ctx: Context) -> Scorer:
    # Imported here: the scorers bring model clients, and the command line reads NAMES
    # before it knows whether it will score anything.
    if name == "rubric":
        from llmi.evaluation.scorers.rubric import RubricScorer

        return RubricScorer.from_context(ctx)
    if name == "reward":
        from llmi.evaluation.scorers.reward import RewardScorer

        return RewardScorer.from_context(ctx)
    if name == "tool_use":
        from llmi.evaluation.scorers.tool_use import ToolUseScorer

        return ToolUseScorer()
    if name == "opening":
        from llmi.evaluation.scorers.opening import OpeningScorer

        return OpeningScorer.from_context(ctx)
    if name == "ueval":
        from llmi.evaluation.scorers.ueval import UEvalScorer

        return UEvalScorer.from_context(ctx)
    if name == "isg":
        from llmi.evaluation.scorers.isg import IsgScorer

        return IsgScorer.from_context(ctx)
    raise ValueError(f"unknown scorer {name!r}: pick from {', '.join(NAMES)}")
