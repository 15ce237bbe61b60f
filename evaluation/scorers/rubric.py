"""LLMI-Bench's rubric score: a judge grades the document against each of its item's criteria.

For every criterion (Guo et al. 2025, "LLM-I") a judge model is shown the request, the
document with its images inline and that one criterion, and answers 0 (not met),
1 (partly met) or 2 (fully met). An item scores its points over its maximum. A criterion
the judge could not grade (a failed call, an answer without a 0-2 score) is recorded as
an error and left out of both, never counted as 0.

``RubricScorer`` asks in llmi's words; ``LlmIRubricScorer`` in LLM-I's judge form, for
``llmi eval --protocol llm-i``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from statistics import mean
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.evaluation import prompts
from llmi.evaluation.records import ItemRun, ItemScore
from llmi.evaluation.results import jpeg
from llmi.evaluation.scorers.base import judge_answer
from llmi.models import TEXT_JUDGE, VISION_JUDGE, judge_model
from llmi.nodes.assembler import collect_figures, processed_text
from llmi.judge.scoring import describe_error, excerpt, image_part, json_objects, text_part
from llmi.reasoning import split_reply
from llmi.state import ImageRef, ImageResult

MAX_SCORE = 2
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)
_PROSE = re.compile(
    r"\bscore\b\W{0,6}?(?:(?:is|of)\W{0,3})?(\d+(?:\.\d+)?(?:\s*(?:/|out\s+of)\s*\d+)?)",
    re.IGNORECASE,
)

LLM_I_JPEG_QUALITY = 75
"""PIL's default, with which LLM-I's judge encodes every image it shows."""

Part = str | dict[str, Any]
"""Text, or an image part of a chat message."""
Prompter = Callable[[str], list[BaseMessage]]
"""A judge's messages for one criterion of an item."""


class CriterionScore(TypedDict):
    criterion: str
    score: int | None
    """0, 1 or 2; None when the judge could not grade it."""
    justification: str
    error: str | None


class RubricScorer:
    """Grades each criterion of an item with one judge call, up to ``max_parallel`` at once.

    With ``vision`` the judge sees the images; without, it reads a note per image that
    says what it shows and which tool made it.
    """

    name = "rubric"

    def __init__(self, model: BaseChatModel, *, vision: bool, max_parallel: int = 4) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, not {max_parallel}")
        self.model = model
        self.vision = vision
        self.max_parallel = max_parallel

    @classmethod
    def from_context(cls, ctx: Context) -> RubricScorer:
        """The vision judge when one is configured, else the text judge."""
        if (vlm := judge_model(ctx, vision=True)) is not None:
            return cls(vlm, vision=True)
        if (llm := judge_model(ctx)) is not None:
            return cls(llm, vision=False)
        raise ValueError(
            "the rubric scorer needs a judge model: set LLMI_VISION_JUDGE_MODEL or "
            "LLMI_JUDGE_MODEL (only a vision judge sees the images)"
        )

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        criteria = run["item"]["criteria"]
        if not criteria:
            return ItemScore(score=None, details=_details([]), errors=["the item has no criteria"])
        prompter = self._prompter(run, store)
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(criteria))) as pool:
            graded = list(pool.map(lambda criterion: self._grade(prompter, criterion), criteria))
        details = _details(graded)
        return ItemScore(
            score=_ratio(details["points"], details["max_points"]),
            details=details,
            errors=[f"criterion {n}: {c['error']}" for n, c in enumerate(graded, 1) if c["error"]],
        )

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        """Points over the maximum of all items (micro), and the mean item score (macro)."""
        graded = [c for s in scores for c in s["details"]["criteria"]]
        points = sum(s["details"]["points"] for s in scores)
        max_points = sum(s["details"]["max_points"] for s in scores)
        known = [s["score"] for s in scores if s["score"] is not None]
        return {
            "score": _ratio(points, max_points),
            "mean_item_score": mean(known) if known else None,
            "items": len(known),
            "points": points,
            "max_points": max_points,
            "criteria": len(graded),
            "errors": sum(c["error"] is not None for c in graded),
        }

    def _grade(self, prompter: Prompter, criterion: str) -> CriterionScore:
        role = VISION_JUDGE if self.vision else TEXT_JUDGE
        try:
            answer = judge_answer(lambda: self._ask(prompter(criterion)), role)
            score, justification = self._parse(answer)
        except ValueError as exc:
            return ungraded(criterion, str(exc))
        return CriterionScore(
            criterion=criterion, score=score, justification=justification, error=None
        )

    def _prompter(self, run: ItemRun, store: ArtifactStore) -> Prompter:
        shown = document_parts(run, store, vision=self.vision)
        return lambda criterion: self._messages(shown, criterion)

    def _ask(self, messages: list[BaseMessage]) -> BaseMessage:
        return self.model.invoke(messages)

    @staticmethod
    def _parse(answer: str) -> tuple[int, str]:
        return parse_rubric_answer(answer)

    def _messages(self, shown: list[Part], criterion: str) -> list[BaseMessage]:
        parts = [*shown, prompts.RUBRIC_CRITERION.format(criterion=criterion)]
        if self.vision:
            human = HumanMessage([text_part(p) if isinstance(p, str) else p for p in parts])
        else:
            # Without images every part is text; one string suits text-only servers best.
            human = HumanMessage("\n\n".join(map(str, parts)))
        return [SystemMessage(prompts.RUBRIC_SYSTEM), human]


class LlmIRubricScorer(RubricScorer):
    """The rubric judged as LLM-I's evaluation judges LLMI-Bench (``BenchJudgeCLient`` of
    its ``evaluation/eval_text_only.py`` and ``eval_mm.py``).

    Its system prompt, and its evaluation prompt with the request, the report's text (each
    image made a ``<image>`` mark, each failed one ``<fail_to_generate_image>``) and the
    criterion; every ``<image>`` mark is followed by its image, input images first, as
    JPEG. The judge is asked at temperature 0 for a JSON object, and its whole answer must
    be one whose ``score``, as ``int()`` reads it, is 0, 1 or 2; anything else is LLM-I's
    -1, left out of the points and the maximum as llmi leaves out an unknown score.

    llmi's items keep no ``<image>`` marks in their prompt, so an item's input images are
    marked after its prompt, and such an item gets eval_mm.py's wording.
    """

    def __init__(self, model: BaseChatModel, *, max_parallel: int = 4) -> None:
        super().__init__(model, vision=True, max_parallel=max_parallel)

    @classmethod
    def from_context(cls, ctx: Context) -> LlmIRubricScorer:
        """The vision judge, at temperature 0 (unless its model takes only its default)."""
        vlm = judge_model(replace(ctx, vision_judge_temperature=0.0), vision=True)
        if vlm is None:
            raise ValueError(
                "the rubric of --protocol llm-i needs a vision judge, as LLM-I's judge sees "
                "the report's images: set LLMI_VISION_JUDGE_MODEL"
            )
        return cls(vlm)

    def _prompter(self, run: ItemRun, store: ArtifactStore) -> Prompter:
        document = run["document"]
        inputs = [store.get(ref) for ref in document.get("inputs", [])]
        answer_text, images = llm_i_report(run, store)
        question = run["item"]["prompt"] + prompts.LLM_I_IMAGE * len(inputs)
        context = prompts.LLM_I_INPUT_CONTEXT if inputs else ""

        def prompter(criterion: str) -> list[BaseMessage]:
            text = prompts.LLM_I_EVALUATION.format(
                context=context, question=question, answer_text=answer_text, criterion=criterion
            )
            return llm_i_messages(text, [*inputs, *images])

        return prompter

    def _ask(self, messages: list[BaseMessage]) -> BaseMessage:
        return self.model.invoke(messages, response_format={"type": "json_object"})

    @staticmethod
    def _parse(answer: str) -> tuple[int, str]:
        return parse_llm_i_answer(answer)


def llm_i_report(run: ItemRun, store: ArtifactStore) -> tuple[str, list[bytes]]:
    """The document as LLM-I's judge reads it: its text with each image made a ``<image>``
    mark and each failed one ``<fail_to_generate_image>``, and the images made, in order."""
    document = run["document"]
    segments = document.get("segments", [])
    results = {result["slot"]: result for result in document.get("results", [])}
    figures = collect_figures(segments, results, {}, store)
    images = [figure.data for figure in figures.values() if figure.ok]
    return processed_text(segments, figures), images


def llm_i_messages(text: str, images: Sequence[bytes]) -> list[BaseMessage]:
    """LLM-I's judge messages: the text cut at each ``<image>``, each piece followed by the
    next image while images are left, as JPEG."""
    content: list[dict[str, Any]] = []
    for index, piece in enumerate(text.split(prompts.LLM_I_IMAGE)):
        if piece:
            content.append(text_part(piece))
        if index < len(images):
            data = jpeg(images[index], quality=LLM_I_JPEG_QUALITY)
            content.append(image_part(data, "image/jpeg"))
    return [SystemMessage(prompts.LLM_I_SYSTEM), HumanMessage(content)]


def parse_llm_i_answer(text: str) -> tuple[int, str]:
    """(score, justification) as LLM-I reads its judge's answer: the whole answer is a JSON
    object whose ``score``, through ``int()``, is 0, 1 or 2; ValueError otherwise."""
    try:
        result = json.loads(text.strip())
        score = int(result.get("score"))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(
            f"the judge's answer is not a JSON object with a whole score: {excerpt(text, 200)!r}"
        ) from None
    if score not in range(MAX_SCORE + 1):
        raise ValueError(f"the judge's score {score} is not 0, 1 or 2: {excerpt(text, 200)!r}")
    return score, str(result.get("justification", prompts.LLM_I_NO_JUSTIFICATION))


def document_parts(run: ItemRun, store: ArtifactStore, *, vision: bool) -> list[Part]:
    """What the judge is shown before the criterion: the request, the input images, and
    the document's text and images in reading order.

    With ``vision`` an image is an image part read from ``store``; without, it is a text
    note. An image that was not made or cannot be read is a note that says why.
    """
    document = run["document"]
    parts: list[Part] = [prompts.RUBRIC_REQUEST.format(prompt=run["item"]["prompt"])]
    for index, ref in enumerate(document.get("inputs", [])):
        parts += _input_parts(index, ref, store, vision=vision)
    parts.append(prompts.RUBRIC_DOCUMENT)
    results = {result["slot"]: result for result in document.get("results", [])}
    for segment in document.get("segments", []):
        if segment["kind"] == "text":
            parts.append(segment["text"])
        else:
            slot = segment["slot"]
            parts += _slot_parts(slot, results.get(slot), store, vision=vision)
    return parts


def _input_parts(index: int, ref: ImageRef, store: ArtifactStore, *, vision: bool) -> list[Part]:
    if not vision:
        return [prompts.INPUT_IMAGE_NOTE.format(index=index)]
    try:
        data = store.get(ref)
    except (OSError, ValueError) as exc:
        return [prompts.INPUT_IMAGE_MISSING.format(index=index, error=_unreadable(exc))]
    return [prompts.INPUT_IMAGE.format(index=index), image_part(data, ref["mime"])]


def _slot_parts(
    slot: int, result: ImageResult | None, store: ArtifactStore, *, vision: bool
) -> list[Part]:
    if result is None:
        return [prompts.IMAGE_MISSING.format(slot=slot, error="no result was recorded")]
    if not (result["ok"] and result["image"]):
        error = result["error"] or "its tool failed"
        return [prompts.IMAGE_MISSING.format(slot=slot, error=error)]
    if not vision:
        description = result["description"] or "no description"
        return [prompts.IMAGE_NOTE.format(slot=slot, source=result["source"],
                                          description=description)]
    try:
        data = store.get(result["image"])
    except (OSError, ValueError) as exc:
        return [prompts.IMAGE_MISSING.format(slot=slot, error=_unreadable(exc))]
    return [prompts.IMAGE.format(slot=slot), image_part(data, result["image"]["mime"])]


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "its file is not in the artifact store"
    return describe_error(exc)


def parse_rubric_answer(text: str) -> tuple[int, str]:
    """(score, justification) from a judge's answer; ValueError when it holds no 0-2 score.

    JSON objects anywhere in the answer are read first (fenced or not; reasoning such as
    a ``<think>`` block is never read), the last one with a ``score`` counting; then prose such as
    ``Score: 2``. A score is 0, 1 or 2, as a number or a numeric string (``2``, ``"2"``,
    ``"2/2"``, ``1.0``); anything else (``3``, ``1.5``, ``"2/5"``) is an error.
    """
    text = split_reply(text).answer
    graded = [fields for obj in json_objects(text) if "score" in (fields := lower_keys(obj))]
    if graded:
        raw, justification = graded[-1]["score"], str(graded[-1].get("justification") or "")
    elif prose := list(_PROSE.finditer(text)):
        raw, justification = prose[-1].group(1), text
    else:
        raise ValueError(f"the judge's answer holds no score: {excerpt(text, 200)!r}")
    score = to_score(raw)
    if score is None:
        raise ValueError(
            f"the judge's score {raw!r} is not 0, 1 or 2: {excerpt(text, 200)!r}"
        )
    return score, justification


def lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {str(key).strip().lower(): value for key, value in obj.items()}


def to_score(value: Any, maximum: int = MAX_SCORE) -> int | None:
    """A whole score from 0 to ``maximum``, as a number or a numeric string (``"8"``,
    ``"8/10"``); None for anything else, a score out of another scale included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        match = _NUMBER.match(value)
        if not match or (match.group(2) is not None and float(match.group(2)) != maximum):
            return None
        value = float(match.group(1))
    if isinstance(value, int | float) and value in range(maximum + 1):
        return int(value)
    return None


def ungraded(criterion: str, error: str) -> CriterionScore:
    return CriterionScore(criterion=criterion, score=None, justification="", error=error)


def _details(graded: Sequence[CriterionScore]) -> dict[str, Any]:
    known = [c["score"] for c in graded if c["score"] is not None]
    return {
        "criteria": list(graded),
        "points": sum(known),
        "max_points": MAX_SCORE * len(known),
    }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
