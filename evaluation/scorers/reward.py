"""The hybrid reward of ``llmi.judge.scoring`` as a scorer, with every component."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean
from typing import Any

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.evaluation.records import ItemRun, ItemScore
from llmi.judge import TEXT_KEYS, VISION_KEYS, Judge


class RewardScorer:
    """LLM-I's reward of each finished document: rules, text judge, vision judge.

    Slots whose tool's service failed are left out of the reward unless
    ``exclude_infrastructure`` is False; they are counted either way.
    """

    name = "reward"

    def __init__(self, judge: Judge, *, exclude_infrastructure: bool = True) -> None:
        self.judge = judge
        self.exclude_infrastructure = exclude_infrastructure

    @classmethod
    def from_context(cls, ctx: Context) -> RewardScorer:
        return cls(Judge.from_context(ctx))

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        item, document = run["item"], run["document"]
        scores = self.judge.score(
            item["prompt"],
            document.get("draft", ""),
            document.get("segments", []),
            document.get("results", []),
            store=store,
            inputs=document.get("inputs", []),
            image_num=item["image_num"],
            exclude_infrastructure=self.exclude_infrastructure,
        )
        details = {key: value for key, value in scores.items() if key != "errors"}
        return ItemScore(score=scores["reward"], details=details, errors=scores["errors"])

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        details = [s["details"] for s in scores]
        rules = sorted({rule for d in details for rule in d["rules"]})
        return {
            "score": _mean([s["score"] for s in scores]),
            "items": len(scores),
            "rules": {rule: _mean([d["rules"].get(rule) for d in details]) for rule in rules},
            "llm": {key: _mean([d["llm"].get(key) for d in details]) for key in TEXT_KEYS},
            "vision": {key: _mean([d["vision"].get(key) for d in details]) for key in VISION_KEYS},
            "unknown": sum(len(d["unknown"]) for d in details),
            "infrastructure_failures": sum(d["infrastructure_failures"] for d in details),
        }


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean of the known values; None when none is known."""
    known = [value for value in values if value is not None]
    return round(fmean(known), 6) if known else None
