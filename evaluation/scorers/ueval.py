"""UEval's rubric score: a judge says of each rubric whether the answer meets it.

It follows UEval's ``ueval_eval.py`` (Li et al. 2026): one judge call per rubric. A text
rubric is judged on the question and the document's text; an image rubric on the
document's images, shown after the question and, for an open question, the text too.
The judge answers JSON with ``criteria_met``: true, false or "not sure", which UEval counts
as not met. An answer that says none of these is unknown: left out of the rates and
counted apart. An item's text (image) rate is its met text (image) rubrics over those
judged; the summary, like UEval's, averages each rate over the items that have one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from statistics import fmean
from typing import Any, TypedDict

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from llmi.artifacts import ArtifactStore
from llmi.evaluation.records import Document, ItemRun, ItemScore
from llmi.evaluation.results import image_of, output_steps
from llmi.evaluation.scorers.base import JudgeScorer, judge_answer
from llmi.evaluation.scorers.rubric import Part, lower_keys
from llmi.evaluation.ueval import is_open, rubrics
from llmi.judge.scoring import (excerpt, image_part, json_objects, parse_verdict,
                                text_part)
from llmi.models import TEXT_JUDGE, VISION_JUDGE
from llmi.reasoning import split_reply

# The judge's prompts, in llmi's words, in the shape of ueval_eval.py's: its system
# instruction, a context per rubric kind (an open question's image context holds the text
# answer too; a closed one's does not), then the rubric.
SYSTEM = """\
You are an expert evaluator. You look at a conversation and one rubric item, and judge \
whether the model's output (text and images) satisfies that rubric. Reply with a JSON \
object with "criteria_met"."""

TEXT_CONTEXT = """\
Judge whether the model's text answer satisfies the rubric item below.

# Conversation
Question: {question}
Text Answer: {text_answer}

# Instructions
Reply with a JSON object with the field "criteria_met": true, false or "not sure".
- true only if the rubric is fully satisfied; false if any requirement is missing or \
wrong; "not sure" if there is not enough information to tell.
Reply with the JSON object only, nothing else."""

IMAGE_CONTEXT_OPEN = """\
Judge whether the generated image(s), taken together with the text answer, satisfy the \
rubric item below.

# Conversation
Question: {question}
Text Answer: {text_answer}

# Instructions
You are given the question, the model's text answer and the generated image(s). Judge \
whether the visual content, and how it matches the text, meets the rubric. Reply with a \
JSON object with "criteria_met".
- true only if the rubric is completely satisfied; false otherwise; "not sure" if the \
evidence is not enough.
- Each image must show the action or content it stands for visually: text drawn inside \
an image does not stand in for visual content. If the rubric asks that each image match a \
step of the text answer, the image must depict that step's action (the motion, object or \
scene), not a written label of it.
- Except: when the rubric checks that an image agrees with its step of the text, the \
image needs to show the step's primary action only, not every action or detail of the \
step. An image that clearly shows turning the oven dial to preheat meets "each image shows \
the primary action of its step" even if the step also prepares the tray.
Reply with the JSON object only."""

IMAGE_CONTEXT_CLOSED = """\
Judge whether the generated image(s) satisfy the image rubric item below.

# Question
{question}

# Instructions
You are given the question and the generated image(s). Judge whether the images meet the \
rubric. Reply with a JSON object with "criteria_met".
- true only if the rubric is completely satisfied; false otherwise; "not sure" if the \
evidence is not enough.
- Each image must depict the described content visually: text drawn inside an image does \
not stand in for visual content. If any image is only text, with no visual content, the \
answer is false.
Reply with the JSON object only."""

RUBRIC = """\
# Rubric Item
{rubric}"""

_MET = {"true": True, "yes": True, "y": True, "1": True,
        "false": False, "no": False, "n": False, "0": False,
        # UEval counts an unsure judge as not met.
        "not sure": False, "unsure": False, "unknown": False}


class Verdict(TypedDict):
    rubric: str
    met: bool | None
    """None when the judge's answer could not be read: left out of the rates."""
    criteria_met: Any
    """The judge's value as it answered it (true, false, "not sure")."""
    explanation: str
    error: str | None


class UEvalScorer(JudgeScorer):
    """Judges each rubric of an item with one call, up to ``max_parallel`` at once: text
    rubrics with the text judge (the vision judge when there is none), image rubrics with
    the vision judge, which sees the images; without one they are unknown."""

    name = "ueval"

    needs = ("a judge model: set LLMI_VISION_JUDGE_MODEL (it sees the images, as UEval's "
             "judge does) and optionally LLMI_JUDGE_MODEL")

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        fields, question = run["item"]["extra"], run["item"]["prompt"]
        text_answer, images = document_answer(run["document"], store)
        text_rubrics = rubrics(fields, "text_rubrics")
        image_rubrics = rubrics(fields, "image_rubrics")
        text_context, image_context = (
            template.format(question=question, text_answer=text_answer) for template in
            (TEXT_CONTEXT, IMAGE_CONTEXT_OPEN if is_open(fields) else IMAGE_CONTEXT_CLOSED))
        jobs = [(False, text_context, rubric, []) for rubric in text_rubrics] + [
            (True, image_context, rubric, images) for rubric in image_rubrics]
        if not jobs:
            return ItemScore(score=None, details={}, errors=["the item has no UEval rubrics"])
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(jobs))) as pool:
            verdicts = list(pool.map(lambda job: self._judge(*job), jobs))
        text, image = verdicts[:len(text_rubrics)], verdicts[len(text_rubrics):]
        text_rate, image_rate = rate(text), rate(image)
        return ItemScore(
            score=_mean_known(text_rate, image_rate),
            details={"task": fields.get("task_type"), "open": is_open(fields),
                     "text_rate": text_rate, "image_rate": image_rate,
                     "unknown": sum(v["met"] is None for v in verdicts),
                     "text_rubrics": text, "image_rubrics": image},
            errors=[f"{kind} rubric {n}: {v['error']}" for kind, group in
                    (("text", text), ("image", image)) for n, v in enumerate(group, 1)
                    if v["error"]],
        )

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        """UEval's summary (mean text and image rates over the items with each, and their
        mean), overall and per task; ``task_mean`` averages the tasks' overall rates, as
        UEval's leaderboard averages its task columns. ``unknown`` counts rubrics whose
        verdict could not be read."""
        details = [s["details"] for s in scores]
        tasks = sorted({d["task"] for d in details if d.get("task")})
        by_task = {task: _rates([d for d in details if d.get("task") == task]) for task in tasks}
        overall = _rates(details)
        known = [rates["overall_avg_rate"] for rates in by_task.values()
                 if rates["overall_avg_rate"] is not None]
        return {
            "score": overall["overall_avg_rate"],
            **overall,
            "unknown": sum(d.get("unknown", 0) for d in details),
            "tasks": by_task,
            "task_mean": fmean(known) if known else None,
        }

    def _judge(self, sees_images: bool, context: str, rubric: str,
               images: Sequence[Part]) -> Verdict:
        model = self.vision if sees_images else self.text or self.vision
        if model is None:
            return _unknown(rubric, "no vision judge to see the images: set "
                                    "LLMI_VISION_JUDGE_MODEL")
        role = VISION_JUDGE if model is self.vision else TEXT_JUDGE
        messages = _messages(context, rubric, images, vision=model is self.vision)
        try:
            answer = judge_answer(lambda: model.invoke(messages), role)
            met, value, explanation = parse_ueval_answer(answer)
        except ValueError as exc:
            return _unknown(rubric, str(exc))
        return Verdict(rubric=rubric, met=met, criteria_met=value, explanation=explanation,
                       error=None)


def document_answer(document: Document, store: ArtifactStore) -> tuple[str, list[Part]]:
    """The document as UEval's model outputs are: its text, and its images in order as
    image parts (an image that cannot be read is left out, as UEval skips one)."""
    steps = output_steps(document)
    images: list[Part] = []
    for ref in filter(None, map(image_of, steps)):
        try:
            images.append(image_part(store.get(ref), ref["mime"]))
        except (OSError, ValueError):
            continue
    return "\n\n".join(step["text"] for step in steps if step["text"]), images


def parse_ueval_answer(text: str) -> tuple[bool, Any, str]:
    """(met, the judge's value, explanation) from a judge's answer; ValueError when it
    gives no verdict.

    The last JSON object (reasoning left out) with ``criteria_met`` counts: true or false,
    as a boolean or a word (yes/no), or "not sure", which is not met. Without one, a bare
    verdict is read as llmi reads the relevance judge's.
    """
    answer = split_reply(text).answer
    judged = [fields for obj in json_objects(answer)
              if "criteria_met" in (fields := lower_keys(obj))]
    if not judged:
        met, reason = parse_verdict(answer)
        if met is None:
            raise ValueError(f"the judge's answer holds no criteria_met: {excerpt(answer, 200)!r}")
        return met, met, reason
    value = judged[-1]["criteria_met"]
    met = value if isinstance(value, bool) else _MET.get(str(value).strip().lower())
    if met is None:
        raise ValueError(f"criteria_met {value!r} is not true, false or \"not sure\"")
    return met, value, str(judged[-1].get("explanation") or "")


def rate(verdicts: Sequence[Verdict]) -> float | None:
    """Met rubrics over the judged ones; None when none was judged."""
    known = [v["met"] for v in verdicts if v["met"] is not None]
    return sum(known) / len(known) if known else None


def _rates(details: Sequence[dict[str, Any]]) -> dict[str, Any]:
    text = [d["text_rate"] for d in details if d.get("text_rate") is not None]
    image = [d["image_rate"] for d in details if d.get("image_rate") is not None]
    text_avg, image_avg = (fmean(text) if text else None), (fmean(image) if image else None)
    return {
        "num_items": len(details),
        "num_items_with_text": len(text),
        "num_items_with_image": len(image),
        "text_avg_rate": text_avg,
        "image_avg_rate": image_avg,
        "overall_avg_rate": _mean_known(text_avg, image_avg),
    }


def _mean_known(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return fmean(known) if known else None


def _unknown(rubric: str, error: str) -> Verdict:
    return Verdict(rubric=rubric, met=None, criteria_met=None, explanation="", error=error)


def _messages(context: str, rubric: str, images: Sequence[Part], *,
              vision: bool) -> list[BaseMessage]:
    prompt = f"{context}\n\n{RUBRIC.format(rubric=rubric)}"
    human = HumanMessage([text_part(prompt), *images]) if vision else HumanMessage(prompt)
    return [SystemMessage(SYSTEM), human]
