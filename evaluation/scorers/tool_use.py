"""Tool use: how often each tool made its image, what repairs cost, and whether the
document used the sources its item requires.

A slot counts once, by its final result (and that result's source). A failure the
tool's service caused (down, quota, time-out: ``infrastructure``) says nothing of the
request, so the headline leaves it out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import mean
from typing import Any, TypedDict

from llmi.artifacts import ArtifactStore
from llmi.evaluation.records import ItemRun, ItemScore
from llmi.judge.scoring import PARSER
from llmi.state import ImageResult


class SourceUse(TypedDict):
    attempts: int
    """Slots whose final result came from this source."""
    successes: int
    rate: float | None
    calls: int
    """Tool calls those slots took: one each, plus one per repair."""
    infrastructure_failures: int


class ToolUseScorer:
    """Success rates by source, repair calls, broken tags and agreement with the item's tools."""

    name = "tool_use"

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        document = run["document"]
        results = document.get("results", [])
        calls = Counter(repair["slot"] for repair in document.get("repairs", []))
        tool_results = [r for r in results if r["tool"] != PARSER]
        sources = {
            source: _source_use([r for r in tool_results if r["source"] == source], calls)
            for source in sorted({r["source"] for r in tool_results})
        }
        used, required = set(sources), set(run["item"]["tools"])
        return ItemScore(
            score=_headline(sources.values()),
            details={
                "sources": sources,
                "invalid_tags": len(results) - len(tool_results),
                "used": sorted(used),
                "required": sorted(required),
                "agreement": len(used & required) / len(used | required) if required else None,
                "missing": sorted(required - used),
                "unexpected": sorted(used - required),
                "infrastructure_failures": sum(
                    s["infrastructure_failures"] for s in sources.values()
                ),
            },
            errors=[],
        )

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        """Rates over all items' slots; agreement over the items that require tools."""
        details = [s["details"] for s in scores]
        names = sorted({name for d in details for name in d["sources"]})
        sources = {
            name: _total([d["sources"][name] for d in details if name in d["sources"]])
            for name in names
        }
        judged = [d for d in details if d["agreement"] is not None]
        return {
            "score": _headline(sources.values()),
            "items": len(scores),
            "sources": sources,
            "invalid_tags": sum(d["invalid_tags"] for d in details),
            "agreement": mean(d["agreement"] for d in judged) if judged else None,
            "exact_match": (
                mean(d["used"] == d["required"] for d in judged) if judged else None
            ),
            "infrastructure_failures": sum(d["infrastructure_failures"] for d in details),
        }


def _source_use(results: Sequence[ImageResult], repairs: Counter[int]) -> SourceUse:
    successes = sum(r["ok"] for r in results)
    return SourceUse(
        attempts=len(results),
        successes=successes,
        rate=successes / len(results) if results else None,
        calls=sum(1 + repairs[r["slot"]] for r in results),
        infrastructure_failures=sum(
            not r["ok"] and r.get("infrastructure", False) for r in results
        ),
    )


def _total(uses: Sequence[SourceUse]) -> SourceUse:
    attempts = sum(u["attempts"] for u in uses)
    successes = sum(u["successes"] for u in uses)
    return SourceUse(
        attempts=attempts,
        successes=successes,
        rate=successes / attempts if attempts else None,
        calls=sum(u["calls"] for u in uses),
        infrastructure_failures=sum(u["infrastructure_failures"] for u in uses),
    )


def _headline(uses: Iterable[SourceUse]) -> float | None:
    """Successes over the slots whose failure, if any, was not the service's fault."""
    total = _total(list(uses))
    judged = total["attempts"] - total["infrastructure_failures"]
    return total["successes"] / judged if judged else None
