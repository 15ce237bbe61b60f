"""ISG's four levels (Chen et al. 2025, ``ISG-eval.py`` and ``calculate_performance.py``).

- structure: the document, as ISG's generation script records one (each text between
  images, stripped, when not empty; each image the document places, made or not), has
  the golden answer's sequence of text and image blocks. Exactly ISG's rule.
- block: when the structure holds, each of the item's ``block_qa`` questions whose two
  blocks the document and the query have (``<gen_text1>``, ``<query_img1>``, ...) is put
  to a judge with those blocks, scored 1-10; the item scores their mean, 1 when none
  applies.
- image: when the structure holds, each ``image_qa`` question is put to the vision judge
  with the image it names, answered yes or no; a question whose preliminary questions
  were not all answered yes counts as no unasked, as DSG means. The item scores its
  yes answers over its questions.
- holistic: the vision judge sees the query, the document and the golden answer, and
  gives an ``overall_score`` 1-10; an empty document scores 1.

An answer without such a score is unknown: recorded with its error and left out (counted
apart in ``unknown``), never taken as a score. A document of another structure scores 1
for block and 0 for image, as ``calculate_performance.py`` counts it, and a question about
an image the document failed to make is answered at the bottom of its scale unasked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage

from llmi.artifacts import ArtifactStore, inspect_image
from llmi.evaluation import isg_prompts as prompts
from llmi.evaluation.isg import GOLDEN, GOLDEN_IMAGES, QUERY, Kind, blocks
from llmi.evaluation.records import ISG, Document, ItemRun, ItemScore
from llmi.evaluation.scorers.base import JudgeScorer, NoJudgeAnswer, judge_answer
from llmi.evaluation.scorers.rubric import Part, lower_keys, to_score
from llmi.judge.scoring import excerpt, image_part, json_objects, text_part
from llmi.models import TEXT_JUDGE, VISION_JUDGE

MAX_SCORE = 10
LOWEST = 1
LEVELS = ("structure", "block", "image", "holistic")
# calculate_performance.py's groups of ISG-Bench's categories, in its spelling.
CATEGORIES = {
    "Style Transer": ["Art Style Transfer", "Scene Attribute Transfer", "Photo Variation",
                      "Portrait Variation"],
    "Progressive": ["Animation Images", "Animation Text-Image", "Attribute Transfer"],
    "3D Scene": ["3D_object", "multi-Perspective Scene Generation"],
    "Image Decomposition": ["Realistic Object Detection", "Imaginary Object Detection"],
    "Image-Text Complementation": ["HowTo", "Scientific"],
    "Temporal Prediction": ["Prediction", "painting"],
    "Visual Story Telling": ["visual storytelling text-image", "visual storytelling image",
                             "visual storytelling text"],
    "VQA": ["Object_VQA", "Historical"],
}


Reader = Callable[[list[dict[str, Any]]], tuple[Any, str]]
"""Takes the JSON objects of an answer to (value, reason); raises ValueError."""


@dataclass(frozen=True)
class Block:
    """A text or an image of a query, a document or a golden answer."""

    kind: Kind
    text: str = ""
    image: tuple[bytes, str] | None = None
    """The image's bytes and type; None for an image that was not made."""


@dataclass(frozen=True)
class Asked:
    """A judge's answer: what it said (a score, ``"yes"``, ``"no"``) or why it is unknown."""

    value: Any = None
    reason: str = ""
    error: str | None = None


class IsgScorer(JudgeScorer):
    """Scores ISG-Bench's items on ISG's four levels: the vision judge sees the images;
    a question between two texts goes to the text judge when one is set."""

    name = "isg"

    needs = "a vision judge: set LLMI_VISION_JUDGE_MODEL"

    @staticmethod
    def can_judge(text: BaseChatModel | None, vision: BaseChatModel | None) -> bool:
        return vision is not None

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        item = run["item"]
        if item["data_source"] != ISG:
            return ItemScore(score=None, details={},
                             errors=["the isg scorer scores only ISG-Bench's items"])
        extra = item["extra"]
        query = _given(blocks(extra, QUERY), item["images"])
        golden = _given(blocks(extra, GOLDEN), extra[GOLDEN_IMAGES])
        output = output_blocks(run["document"], store)
        structure = [b.kind for b in output] == [b.kind for b in golden]
        questions: dict[str, list[dict[str, Any]]] = {"block": [], "image": []}
        if structure:
            named = _named(query, output)
            questions["block"] = self._block_questions(extra, named)
            questions["image"] = self._image_questions(extra, named)
        holistic = self._holistic(query, output, golden)
        details = {
            "category": str(extra.get("Category", "")),
            "structure": structure,
            "block": _block_score(questions["block"]) if structure else float(LOWEST),
            "image": _image_score(questions["image"]) if structure else 0.0,
            "holistic": holistic.value,
            "holistic_reason": holistic.reason,
            "questions": questions,
            "unknown": {"block": _unknown(questions["block"]),
                        "image": _unknown(questions["image"]),
                        "holistic": int(holistic.error is not None)},
        }
        errors = [f"{level}: {q['question']}: {q['error']}" for level, asked in questions.items()
                  for q in asked if q["error"]]
        if holistic.error:
            errors.append(f"holistic: {holistic.error}")
        known = details["holistic"]
        return ItemScore(score=known / MAX_SCORE if known is not None else None,
                         details=details, errors=errors)

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        """Each level's mean over the items it is known for (structure: the share that
        holds), overall and per category group as ``calculate_performance.py`` prints them;
        ``unknown`` counts the answers left out; ``score`` is the holistic mean over 10."""
        scored = [s["details"] for s in scores if "structure" in s["details"]]
        overall = _means(scored)
        groups = {group: _means([d for d in scored if d["category"] in members])
                  for group, members in CATEGORIES.items()}
        holistic = overall["holistic"]
        return {
            "score": holistic / MAX_SCORE if holistic is not None else None,
            "items": len(scored),
            **overall,
            "unknown": {level: sum(d["unknown"][level] for d in scored)
                        for level in ("block", "image", "holistic")},
            "categories": {group: means for group, means in groups.items() if means["items"]},
        }

    def _block_questions(self, extra: dict[str, Any],
                         named: dict[str, Block]) -> list[dict[str, Any]]:
        """Every ``block_qa`` question whose two blocks are at hand, with its answer."""
        found = [q for q in _questions(extra, "block_qa")
                 if isinstance(q.get("Question"), str)
                 and str(q.get("subject")) in named and str(q.get("object")) in named]
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            asked = list(pool.map(lambda q: self._block(q, named), found))
        return [_record(q, a, subject=q["subject"], object=q["object"])
                for q, a in zip(found, asked, strict=True)]

    def _block(self, question: dict[str, Any], named: dict[str, Block]) -> Asked:
        subject, object_ = named[question["subject"]], named[question["object"]]
        text = question["Question"]
        requirement = prompts.SCORE_REQUIREMENT
        if subject.kind == object_.kind == "text":
            text = text.replace(question["subject"], " `Text 1` ").replace(
                question["object"], " `Text 2` ")
            prompt = prompts.TEXT_TEXT.format(requirement=requirement, text1=subject.text,
                                              text2=object_.text, question=text)
            return self._ask([prompt], read=_score, text_only=True)
        if subject.kind == object_.kind == "image":
            images = [subject, object_]
            prompt = prompts.IMAGE_IMAGE.format(requirement=requirement, question=text)
        else:
            said, tag, image = (subject, question["subject"], object_) if subject.kind == "text" \
                else (object_, question["object"], subject)
            images = [image]
            prompt = prompts.TEXT_IMAGE.format(requirement=requirement, text=said.text,
                                               question=text.replace(tag, " `Text` "))
        if any(block.image is None for block in images):
            return Asked(LOWEST, "an image it needs was not made")
        return self._ask([*map(_image, images), prompt], read=_score)

    def _image_questions(self, extra: dict[str, Any],
                         named: dict[str, Block]) -> list[dict[str, Any]]:
        """Every ``image_qa`` question in order; one is asked only once all its
        preliminary questions were answered yes."""
        found = _questions(extra, "image_qa")
        answers: dict[str, Any] = {}
        asked = []
        for question in found:
            before = [answers.get(str(p)) for p in question.get("Preliminary") or []]
            block = named.get(str(question.get("image")))
            if any(value is None for value in before):
                answer = Asked(error="a preliminary question has no answer")
            elif "no" in before:
                answer = Asked("no", "a preliminary question was answered no")
            elif block is None or block.image is None:
                answer = Asked("no", "the document has no such image")
            else:
                answer = self._ask([_image(block), prompts.IMAGE_QUESTION.format(
                    question=question.get("Question", ""))], read=_verdict)
            answers[str(question.get("id"))] = answer.value
            asked.append(_record(question, answer, image=question.get("image")))
        return asked

    def _holistic(self, query: list[Block], output: list[Block],
                  golden: list[Block]) -> Asked:
        if not output:
            return Asked(LOWEST, "the document is empty")
        parts: list[Part] = [prompts.HOLISTIC_QUERY]
        for heading, shown in ((None, query), (prompts.HOLISTIC_ANSWER, output),
                               (prompts.HOLISTIC_GOLDEN, golden)):
            parts += [heading] if heading else []
            parts += map(_shown, shown)
        return self._ask([*parts, prompts.HOLISTIC_CLOSING], read=_overall)

    def _ask(self, parts: list[Part], *, read: Reader, text_only: bool = False) -> Asked:
        """One judge call with ``parts`` as one user message, as ISG sends them; ``read``
        takes the answer's fields to (value, reason) or raises ValueError."""
        text_judge = text_only and self.text is not None
        role, model = (TEXT_JUDGE, self.text) if text_judge else (VISION_JUDGE, self.vision)
        assert model is not None
        message = HumanMessage("\n".join(map(str, parts))) if text_only else HumanMessage(
            [text_part(p) if isinstance(p, str) else p for p in parts])
        try:
            answer = judge_answer(lambda: model.invoke([message]), role)
        except NoJudgeAnswer as exc:
            return Asked(error=str(exc))
        fields = [lower_keys(obj) for obj in json_objects(answer)]
        try:
            value, reason = read(fields)
        except ValueError as exc:
            return Asked(error=f"{exc}: {excerpt(answer, 200)!r}")
        return Asked(value, reason)


def output_blocks(document: Document, store: ArtifactStore) -> list[Block]:
    """The document's blocks as ISG's generation script records an answer: the text
    between two images, stripped, when there is any; every image the document places."""
    results = {result["slot"]: result for result in document.get("results", [])}
    found: list[Block] = []
    text: list[str] = []
    for segment in document.get("segments", []):
        if segment["kind"] == "text":
            text.append(segment["text"])
            continue
        found += _text(text)
        text = []
        result = results.get(segment["slot"])
        ref = result["image"] if result and result["ok"] else None
        found.append(Block("image", image=(store.get(ref), ref["mime"]) if ref else None))
    return found + _text(text)


def _text(texts: list[str]) -> list[Block]:
    joined = "".join(texts).strip()
    return [Block("text", text=joined)] if joined else []


def _given(published: list[dict[str, str]], images: Sequence[str]) -> list[Block]:
    """A query's or golden answer's blocks, each image read from its copy."""
    paths = iter(images)
    return [Block("text", text=b["content"]) if b["type"] == "text" else _file(next(paths))
            for b in published]


def _file(path: str) -> Block:
    data = Path(path).read_bytes()
    return Block("image", image=(data, inspect_image(data)[0]))


def _named(query: list[Block], output: list[Block]) -> dict[str, Block]:
    """The blocks by ISG's names: ``<gen_text1>``, ``<gen_img1>``, ``<query_text1>``, ..."""
    named: dict[str, Block] = {}
    for prefix, shown in (("gen", output), ("query", query)):
        counts = {"text": 0, "image": 0}
        for block in shown:
            counts[block.kind] += 1
            kind = "text" if block.kind == "text" else "img"
            named[f"<{prefix}_{kind}{counts[block.kind]}>"] = block
    return named


def _questions(extra: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``predict[key]``'s questions: a list, or, as published, a dict holding one."""
    held = (extra.get("predict") or {}).get(key)
    if isinstance(held, dict):
        held = next(iter(held.values()), [])
    return [q for q in held if isinstance(q, dict)] if isinstance(held, list) else []


def _shown(block: Block) -> Part:
    """A block as the holistic judge sees it; ISG puts each text on one line."""
    if block.kind == "text":
        return block.text.replace("\n", " ")
    return _image(block) if block.image else prompts.MISSING_IMAGE


def _image(block: Block) -> dict[str, Any]:
    """An image part at low detail, as ISG sends its images."""
    assert block.image is not None
    part = image_part(*block.image)
    return {**part, "image_url": {**part["image_url"], "detail": "low"}}


def _judged(fields: list[dict[str, Any]]) -> dict[str, Any]:
    found = [f for f in fields if "judge" in f]
    if not found:
        raise ValueError('the answer has no "Judge"')
    return found[-1]


def _score(fields: list[dict[str, Any]]) -> tuple[int, str]:
    judged = _judged(fields)
    return _on_scale(judged["judge"]), str(judged.get("reason") or "")


def _verdict(fields: list[dict[str, Any]]) -> tuple[str, str]:
    judged = _judged(fields)
    verdict = str(judged["judge"]).strip().lower()
    if verdict not in ("yes", "no"):
        raise ValueError(f"the judgment {judged['judge']!r} is neither yes nor no")
    return verdict, str(judged.get("reason") or "")


def _overall(fields: list[dict[str, Any]]) -> tuple[int, str]:
    found = [f for f in fields if "overall_score" in f]
    if not found:
        raise ValueError('the answer has no "overall_score"')
    return _on_scale(found[-1]["overall_score"]), str(found[-1].get("final_thoughts") or "")


def _on_scale(raw: Any) -> int:
    score = to_score(raw, MAX_SCORE)
    if not score:  # ISG's scales start at 1
        raise ValueError(f"the score {raw!r} is not a whole number from 1 to {MAX_SCORE}")
    return score


def _record(question: dict[str, Any], answer: Asked, **about: Any) -> dict[str, Any]:
    return {"question": str(question.get("Question", "")), **about, "judge": answer.value,
            "reason": answer.reason, "error": answer.error}


def _block_score(asked: list[dict[str, Any]]) -> float | None:
    if not asked:
        return float(LOWEST)
    known = [q["judge"] for q in asked if q["judge"] is not None]
    return fmean(known) if known else None


def _image_score(asked: list[dict[str, Any]]) -> float | None:
    known = [q["judge"] for q in asked if q["judge"] is not None]
    return known.count("yes") / len(known) if known else None


def _unknown(asked: list[dict[str, Any]]) -> int:
    return sum(q["judge"] is None for q in asked)


def _means(details: list[dict[str, Any]]) -> dict[str, Any]:
    means: dict[str, Any] = {"items": len(details)}
    for level in LEVELS:
        known = [float(d[level]) for d in details if d[level] is not None]
        means[level] = fmean(known) if known else None
    return means
