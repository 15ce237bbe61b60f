"""ISG-Bench (Chen et al. 2025, ``ISG_eval/ISG-Bench.jsonl``) read as published.

A line holds an ``id``, a ``Category``, the ``Query`` and the human-written ``Golden``
answer (each a list of ``{"type": "text" | "image", "content": ...}`` blocks, an image's
content a path such as ``images/0000_q1.png``), and under ``predict`` the questions ISG
generated to judge an answer: ``block_qa`` about the relations between blocks, and
``image_qa`` about what each image shows.

The query's texts make the prompt, each query image labelled where it stands; the query
states how many images it wants, which is as many as the golden answer holds, so that
count is the item's ``image_num``. Image paths resolve against the dataset's folder
(ISG's ``ISG_eval/``, where its ``images/`` lie), as ``ISG-eval.py`` resolves them
against its root. The golden answer's images are copied too, since the holistic judge is
shown them; an image of either that cannot be read ends the item with an error naming
it, and the other items run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from llmi.evaluation.datasets import ItemError, save_images
from llmi.evaluation.records import ISG, EvalItem

QUERY, GOLDEN = "Query", "Golden"
GOLDEN_IMAGES = "golden_images"
"""The ``extra`` field that holds the paths of the golden answer's images, in order."""
QUERY_IMAGE = "[Input image {index}]"

Kind = Literal["text", "image"]


def is_isg(record: dict[str, Any]) -> bool:
    return {"id", QUERY, GOLDEN} <= record.keys()


def isg_item(record: dict[str, Any], position: int, *, base_dir: Path,
             image_dir: Path) -> EvalItem:
    """An ISG-Bench line as an item; its other fields (``Category``, ``predict``) go to
    ``extra`` as published, with the golden images' copies under ``golden_images``."""
    if record.get("id") is None:
        raise ItemError("no id")
    query, golden = blocks(record, QUERY), blocks(record, GOLDEN)
    inputs, query_errors = save_images(_image_paths(query), QUERY, base_dir=base_dir,
                                       image_dir=image_dir)
    golden_images, golden_errors = save_images(_image_paths(golden), GOLDEN,
                                               base_dir=base_dir, image_dir=image_dir)
    errors = query_errors + golden_errors
    wanted = sum(block["type"] == "image" for block in golden)
    item = EvalItem(
        id=str(record["id"]),
        prompt=_prompt(query),
        images=inputs,
        image_num=wanted or -1,
        tools=[],
        split="",
        criteria=[],
        data_source=ISG,
        extra={key: value for key, value in record.items() if key != "id"}
        | {GOLDEN_IMAGES: golden_images},
    )
    if errors:
        item["error"] = "; ".join(errors)
    return item


def blocks(record: dict[str, Any], key: str) -> list[dict[str, str]]:
    """``record[key]``: a list of text and image blocks, each content a string."""
    value = record.get(key)
    if not isinstance(value, list) or not all(
            isinstance(block, dict) and block.get("type") in ("text", "image")
            and isinstance(block.get("content"), str) for block in value):
        raise ItemError(f"{key} must be a list of {{type: text | image, content}} blocks")
    return value


def _prompt(query: list[dict[str, str]]) -> str:
    """The query's texts, each image labelled where it stands."""
    texts, shown = [], 0
    for block in query:
        if block["type"] == "text":
            texts.append(block["content"].strip())
        else:
            texts.append(QUERY_IMAGE.format(index=shown))
            shown += 1
    return "\n\n".join(text for text in texts if text)


def _image_paths(blocks: list[dict[str, str]]) -> list[str]:
    return [block["content"] for block in blocks if block["type"] == "image"]
