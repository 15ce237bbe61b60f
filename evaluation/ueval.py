"""UEval (Li et al. 2026) read as the Hugging Face Hub publishes it.

Its test split (``data/test-*.parquet``) has one row per question: ``id``, ``prompt``,
``text_ref`` and ``image_ref`` (the reference answer, its images as Hugging Face image
dicts), ``task_type`` (art, life, tech, exercise, space, textbook, diagram, paper),
``question_type`` (open or closed), and the rubrics ``text_rubrics`` and ``image_rubrics``:
lists of criteria, as strings or, in the first release, as ``{criterion, tags[, type]}``
objects. The prompt is text only; its reference images are the answer, not an input.
"""

from __future__ import annotations

from typing import Any

from llmi.evaluation.datasets import ItemError
from llmi.evaluation.records import UEVAL, EvalItem

RUBRIC_FIELDS = ("text_rubrics", "image_rubrics")
"""The fields that tell a UEval row from the other layouts."""
# ueval_eval.py's closed tasks; it judges the images of a closed question apart from the
# text answer, and takes any other task as open.
CLOSED_TASKS = frozenset({"space", "textbook", "diagram", "paper"})
# UEval's generation scripts keep an answer only when it has text and at least one image.
AT_LEAST_ONE_IMAGE = 99


def ueval_item(record: dict[str, Any], position: int, **_: Any) -> EvalItem:
    """A UEval row as an item: its id, its prompt as UEval's generation scripts send it,
    at least one image asked for; the other fields, rubrics included, in ``extra``."""
    if record.get("id") is None:
        raise ItemError("no id")
    if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
        raise ItemError("no prompt")
    for field in RUBRIC_FIELDS:
        rubrics(record, field)
    references = record.get("image_ref") or []
    extra = {key: value for key, value in record.items()
             if key not in ("id", "prompt", "image_ref")}
    return EvalItem(
        id=str(record["id"]),
        prompt=record["prompt"],
        images=[],
        image_num=AT_LEAST_ONE_IMAGE,
        tools=[],
        split="",
        criteria=[],
        data_source=UEVAL,
        extra={**extra, "reference_images": len(references)},
    )


def rubrics(fields: dict[str, Any], field: str) -> list[str]:
    """The criteria of ``text_rubrics`` or ``image_rubrics``, in either published form."""
    value = fields.get(field) or []
    if not isinstance(value, list):
        raise ItemError(f"{field} must be a list of criteria")
    criteria = [entry.get("criterion") if isinstance(entry, dict) else entry for entry in value]
    if not all(isinstance(criterion, str) for criterion in criteria):
        raise ItemError(f"{field} must hold strings or {{criterion: ...}} objects")
    return criteria


def is_open(fields: dict[str, Any]) -> bool:
    """Whether the question is open: its ``question_type``, else its task's kind."""
    kind = fields.get("question_type")
    if isinstance(kind, str) and kind.strip():
        return kind.strip().lower() == "open"
    return str(fields.get("task_type") or "").strip().lower() not in CLOSED_TASKS
