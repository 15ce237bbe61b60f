"""OpenING's GPT score: a judge scores the document on seven criteria, each 0-10.

It follows OpenING's protocol (Zhou et al. 2025, ``GPT_score_A.py``): one call per item
that shows the input's steps and the output's steps, each image (resized to 512x512, as
OpenING sends them) after the marks ``<IMG_i></IMG_i>`` that number the images from 0
across input and output; the judge answers JSON with a ``Score`` and a ``Justification``
per criterion. A criterion without a 0-10 score is an error and left out; the summary,
like OpenING's ``summarize_GPT_scores.py``, counts only items with all seven scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import fmean
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from llmi.artifacts import ArtifactStore
from llmi.evaluation import prompts
from llmi.evaluation.datasets import opening_text
from llmi.evaluation.records import OPENING, ItemRun, ItemScore, OutputStep
from llmi.evaluation.results import image_of, jpeg, output_steps
from llmi.evaluation.scorers.base import JudgeScorer, judge_answer
from llmi.evaluation.scorers.rubric import CriterionScore, Part, lower_keys, to_score, ungraded
from llmi.judge.scoring import excerpt, image_part, json_objects, text_part
from llmi.models import TEXT_JUDGE, VISION_JUDGE
from llmi.reasoning import split_reply
from llmi.state import ImageRef

CRITERIA = ("Correctness", "Image-Text Coherency", "Multi-step Consistency", "Content Quality",
            "Human Preference Alignment", "Completeness", "Content Richness")
MAX_SCORE = 10
JUDGE_SIZE = (512, 512)


class OpeningScorer(JudgeScorer):
    """Scores each item with one judge call: the vision judge when the item has images
    to show and one is configured, else the text judge, which reads a note per image."""

    name = "opening"

    needs = ("a judge model: set LLMI_VISION_JUDGE_MODEL (it sees the images, as OpenING's "
             "judge does) or LLMI_JUDGE_MODEL")

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        steps = output_steps(run["document"])
        shows_images = bool(run["document"].get("inputs")) or any(map(image_of, steps))
        vision = self.vision is not None and (shows_images or self.text is None)
        try:
            graded = self._grade(judge_parts(run, steps, store, vision=vision), vision=vision)
            errors = [f"{c['criterion']}: {c['error']}" for c in graded if c["error"]]
        except ValueError as exc:
            graded, errors = [ungraded(name, "not scored") for name in CRITERIA], [str(exc)]
        known = [c["score"] for c in graded if c["score"] is not None]
        overall = fmean(known) if known else None
        return ItemScore(
            score=overall / MAX_SCORE if overall is not None else None,
            details={"criteria": graded, "overall": overall},
            errors=errors,
        )

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        """Per-criterion means and their mean (``overall``), 0-10, over the items with
        every criterion scored; ``score`` is ``overall`` over 10."""
        scored = [{c["criterion"]: c["score"] for c in s["details"].get("criteria", [])
                   if c["score"] is not None} for s in scores]
        complete = [item for item in scored if len(item) == len(CRITERIA)]
        means = {name: fmean(item[name] for item in complete) if complete else None
                 for name in CRITERIA}
        overall = fmean(means.values()) if complete else None
        return {
            "score": overall / MAX_SCORE if overall is not None else None,
            "items": len(complete),
            "incomplete": len(scores) - len(complete),
            "overall": overall,
            "criteria": means,
        }

    def _grade(self, parts: list[Part], *, vision: bool) -> list[CriterionScore]:
        role = VISION_JUDGE if vision else TEXT_JUDGE
        model = self.vision if vision else self.text
        assert model is not None
        answer = judge_answer(lambda: model.invoke(_messages(parts, vision=vision)), role)
        return parse_opening_answer(answer)


def judge_parts(run: ItemRun, steps: Sequence[OutputStep], store: ArtifactStore, *,
                vision: bool) -> list[Part]:
    """The judge's user message, as OpenING builds it: ``INPUT:`` and the input's steps,
    ``OUTPUT:`` and the output's, each image after the marks that number it."""
    inputs = iter(run["document"].get("inputs", []))
    parts: list[Part] = []
    number = 0
    for index, step in enumerate(_input_steps(run)):
        text = (prompts.OPENING_INPUT if index == 0 else "") + opening_text(step)
        ref = next(inputs, None) if step.get("image") is not None else None
        shown = _image(ref, prompts.OPENING_INPUT_NOTE, store, vision=vision)
        if shown is not None:
            text, number = text + prompts.OPENING_IMAGE.format(index=number), number + 1
        parts += [text, *([shown] if shown is not None else [])]
    if not steps:
        parts.append(prompts.OPENING_NO_OUTPUT)
    for index, step in enumerate(steps):
        text = (prompts.OPENING_OUTPUT if index == 0 else "") + step["text"]
        result = step["result"]
        note = prompts.OPENING_IMAGE_NOTE.format(
            source=result["source"], description=result["description"]) if result else ""
        shown = _image(image_of(step), note, store, vision=vision)
        if shown is not None:
            text, number = text + prompts.OPENING_IMAGE.format(index=number), number + 1
        parts += [text, *([shown] if shown is not None else [])]
    return [*parts, prompts.OPENING_REPLY]


def _input_steps(run: ItemRun) -> list[dict[str, Any]]:
    """OpenING's input steps; for another dataset's item, its prompt, then its images."""
    item = run["item"]
    if item["data_source"] == OPENING:
        return item["extra"]["conversations"][0]["input"]
    images = run["document"].get("inputs", [])
    return [{"text": item["prompt"], "image": None},
            *({"text": "", "image": ref["uri"]} for ref in images)]


def parse_opening_answer(text: str) -> list[CriterionScore]:
    """The seven criteria's scores from a judge's answer; ValueError when it scores none.

    The last JSON object (anywhere in the answer, reasoning left out) that names a
    criterion counts, bare or under ``scores``; names match in any case and spelling. A
    criterion's value is ``{"Score": ..., "Justification": ...}`` or a bare score, a
    whole number from 0 to 10 (``8``, ``"8"``, ``"8/10"``).
    """
    text = split_reply(text).answer
    found: dict[str, Any] = {}
    for obj in json_objects(text):
        named = {_norm(str(key)): value for key, value in obj.items()}
        if any(_norm(name) in named for name in CRITERIA):
            found = named
    if not found:
        raise ValueError(f"the judge's answer holds no OpenING scores: {excerpt(text, 200)!r}")
    return [_criterion(name, found.get(_norm(name))) for name in CRITERIA]


def _criterion(name: str, value: Any) -> CriterionScore:
    fields = lower_keys(value) if isinstance(value, dict) else {"score": value}
    raw = fields.get("score")
    score = to_score(raw, MAX_SCORE)
    if score is None:
        error = ("the answer does not score it" if raw is None
                 else f"the score {raw!r} is not a whole number from 0 to {MAX_SCORE}")
        return ungraded(name, error)
    return CriterionScore(criterion=name, score=score,
                          justification=str(fields.get("justification") or ""), error=None)


def _image(ref: ImageRef | None, note: str, store: ArtifactStore, *,
           vision: bool) -> Part | None:
    """What stands for an image: the image, the note, or nothing when there is none to
    show (OpenING leaves out an image it cannot read)."""
    if ref is None:
        return None
    if not vision:
        return note
    try:
        return image_part(jpeg(store.get(ref), JUDGE_SIZE), "image/jpeg")
    except (OSError, ValueError):
        return None


def _messages(parts: Sequence[Part], *, vision: bool) -> list[BaseMessage]:
    seen = prompts.OPENING_SEEN if vision else prompts.OPENING_UNSEEN
    system = SystemMessage(prompts.OPENING_SYSTEM.format(images=seen))
    if vision:
        return [system, HumanMessage([text_part(p) if isinstance(p, str) else p for p in parts])]
    return [system, HumanMessage("\n".join(map(str, parts)))]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())
