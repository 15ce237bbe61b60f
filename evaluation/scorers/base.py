"""The interface every scorer implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.evaluation.records import ItemRun, ItemScore
from llmi.judge.scoring import describe_error
from llmi.models import Role, judge_model
from llmi.reasoning import NoAnswer, answer_of


@runtime_checkable
class Scorer(Protocol):
    """Scores one finished item at a time; called from worker threads.

    ``score`` never raises on a failing judge or a strange document: what went wrong goes
    in the score's ``errors`` and that part is left out of the score.
    """

    name: str
    """The ``--scorer`` value, and the key of its scores in a results line."""

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore: ...

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        """The dataset's figures from the items' scores (items that errored are not given)."""
        ...


class NoJudgeAnswer(ValueError):
    """A judge call with no answer to read: the call failed, or its reply held none."""


def judge_answer(ask: Callable[[], BaseMessage], role: Role) -> str:
    """The answer of the reply ``ask`` gets from ``role``'s judge; NoJudgeAnswer says why
    there is none. A failing judge costs its score, never the item."""
    try:
        return answer_of(ask(), who=role.name, limit=role.limit_setting)
    except NoAnswer as exc:
        raise NoJudgeAnswer(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - whatever the judge's client raises
        raise NoJudgeAnswer(f"the judge failed: {describe_error(exc)}") from None


class JudgeScorer:
    """The judges of a scorer that asks the text judge, the vision judge or both.

    ``needs`` says which judge to set when the scorer cannot work without it; by default
    either will do.
    """

    name: str
    needs = ("a judge model: set LLMI_VISION_JUDGE_MODEL (it sees the images) or "
             "LLMI_JUDGE_MODEL")

    def __init__(self, *, text: BaseChatModel | None, vision: BaseChatModel | None,
                 max_parallel: int = 4) -> None:
        if not self.can_judge(text, vision):
            raise ValueError(f"the {self.name} scorer needs {self.needs}")
        self.text = text
        self.vision = vision
        self.max_parallel = max_parallel

    @staticmethod
    def can_judge(text: BaseChatModel | None, vision: BaseChatModel | None) -> bool:
        return text is not None or vision is not None

    @classmethod
    def from_context(cls, ctx: Context) -> Any:
        return cls(text=judge_model(ctx), vision=judge_model(ctx, vision=True))
