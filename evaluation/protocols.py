"""Evaluation protocols: how ``llmi eval`` writes each item's document and judges it.

- ``llmi``: llmi's own: the run's settings (repairs, test-time scaling, the relevance
  check), llmi's planner prompt and llmi's judge prompts.
- ``llm-i``: LLM-I's evaluation of LLMI-Bench (``evaluation/eval_text_only.py`` and
  ``eval_mm.py`` of ByteDance-BandAI/LLM-I): one document per item in one pass, written
  with LLM-I's training prompt at its temperature, with no repair and no relevance check;
  the rubric judged in LLM-I's form (``scorers.rubric.LlmIRubricScorer``).

Every results line and ``summary.json`` name their protocol, and an output folder holds
the results of one protocol only, so numbers of the two are never mixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from llmi.context import Context
from llmi.errors import LlmiError
from llmi.prompts import LLM_I_PROMPT

if TYPE_CHECKING:
    from llmi.evaluation.scorers.base import Scorer

LLMI = "llmi"
LLM_I = "llm-i"
PROTOCOLS = (LLMI, LLM_I)
LLM_I_TEMPERATURE = 1.0
"""The temperature LLM-I writes with: vLLM's ``SamplingParams`` default, which its
evaluation scripts do not change."""


class ProtocolError(LlmiError, ValueError):
    """Settings or an output folder that the protocol asked for cannot go with."""


def generation_context(protocol: str, ctx: Context) -> Context:
    """The context the graph writes documents with under ``protocol``."""
    if protocol == LLMI:
        return ctx
    if ctx.candidates > 1 or ctx.keep > 1:
        raise ProtocolError(
            "--protocol llm-i writes one document per item in one pass, so --candidates and "
            "--keep cannot be above 1",
            "drop --candidates and --keep (and LLMI_CANDIDATES, LLMI_KEEP), or use --protocol llmi",
        )
    # No vision judge while writing: LLM-I checks no image against its text.
    return replace(ctx, repair_rounds=0, planner_prompt=LLM_I_PROMPT, vision_judge_model="",
                   temperature=LLM_I_TEMPERATURE)


def protocol_scorers(protocol: str, scorers: Sequence[Scorer], ctx: Context) -> list[Scorer]:
    """``scorers`` with the rubric in the protocol's judge form; ValueError when that
    judge cannot be had."""
    if protocol == LLMI:
        return list(scorers)
    # Imported here: the scorers bring model clients, and the command line reads PROTOCOLS.
    from llmi.evaluation.scorers.rubric import LlmIRubricScorer

    return [LlmIRubricScorer.from_context(ctx) if s.name == "rubric" else s for s in scorers]


def check_folder(protocol: str, found: set[str], results: str) -> None:
    """Refuse to add results of ``protocol`` to a results file that holds those of ``found``."""
    others = sorted(found - {protocol})
    if others:
        raise ProtocolError(
            f"{results} holds results of --protocol {', '.join(others)}, not {protocol}",
            "write this evaluation to another --out folder",
        )
