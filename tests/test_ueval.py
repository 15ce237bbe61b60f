"""UEval (Li et al. 2026) read as the Hub publishes it, and judged rubric by rubric.

The datasets are Parquet in the schema of UEval's test split: ``id``, ``prompt``,
``text_ref``, ``image_ref`` (Hugging Face images), ``task_type``, ``question_type`` and
the rubrics, as ``{criterion, tags[, type]}`` objects (its first release) or as strings
(its current one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import ScriptedModel, gradient_png
from llmi.artifacts import ArtifactStore
from llmi.cli import main
from llmi.evaluation.datasets import DatasetError, load_items
from llmi.evaluation.records import Document, ItemRun
from llmi.evaluation.scorers.ueval import UEvalScorer, parse_ueval_answer
from test_eval import judged_server, message_text
from test_opening import answer as planned, images_in

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TAGS = ("tags", pa.list_(pa.string()))
FIRST_RELEASE = pa.schema([
    ("id", pa.string()), ("prompt", pa.string()), ("text_ref", pa.string()),
    ("image_ref", pa.list_(IMAGE)), ("task_type", pa.string()), ("question_type", pa.string()),
    ("text_rubrics", pa.list_(pa.struct([("criterion", pa.string()), TAGS]))),
    ("image_rubrics", pa.list_(pa.struct([("criterion", pa.string()), TAGS,
                                          ("type", pa.string())]))),
])
CURRENT = pa.schema([*(f for f in FIRST_RELEASE if not f.name.endswith("_rubrics")),
                     ("text_rubrics", pa.list_(pa.string())),
                     ("image_rubrics", pa.list_(pa.string()))])

# Each rubric says how the scripted judge answers it.
ROWS = [
    ("art_1", "art", "open", "How do I paint a sunset? Show the steps.",
     ["Names three colours [met]", "Mentions a brush [not met]"],
     ["Shows a palette [met]", "The image is a painting [garbled]"]),
    ("art_2", "art", "open", "Draw a cat in watercolour and explain the wash.",
     ["Explains the wet-on-wet wash [met]"], ["Shows a cat [not met]"]),
    ("space_3", "space", "closed", "Show the Earth and the Moon in orbit.",
     ["States the orbit period [unsure]"],
     ["Shows Earth [met]", "Shows the Moon [met]", "Labels the Sun [not met]"]),
]


def ueval_parquet(path: Path, *, strings: bool = False) -> Path:
    def rubric(text: str, kind: str | None) -> Any:
        if strings:
            return text
        return {"criterion": text, "tags": ["accuracy"], **({"type": kind} if kind else {})}

    rows = [{
        "id": uid, "prompt": prompt, "text_ref": "A reference answer.",
        "image_ref": [{"bytes": gradient_png(n), "path": f"{uid}_{n}.png"} for n in range(2)],
        "task_type": task, "question_type": kind,
        "text_rubrics": [rubric(r, None) for r in text],
        "image_rubrics": [rubric(r, "image") for r in image],
    } for uid, task, kind, prompt, text, image in ROWS]
    pq.write_table(pa.Table.from_pylist(rows, schema=CURRENT if strings else FIRST_RELEASE), path)
    return path


@pytest.fixture
def test_split(tmp_path: Path) -> Path:
    return ueval_parquet(tmp_path / "test-00000-of-00001.parquet")


@pytest.mark.parametrize("strings", [False, True])
def test_rows_are_read_as_ueval_items(tmp_path: Path, strings: bool) -> None:
    path = ueval_parquet(tmp_path / "test.parquet", strings=strings)

    items = load_items(path, image_dir=tmp_path / "in")

    assert [i["id"] for i in items] == ["art_1", "art_2", "space_3"]
    art = items[0]
    assert art["prompt"] == "How do I paint a sunset? Show the steps."
    assert (art["images"], art["image_num"], art["data_source"]) == ([], 99, "ueval")
    assert art["extra"]["task_type"] == "art" and art["extra"]["reference_images"] == 2
    assert "image_ref" not in art["extra"]
    assert not list((tmp_path / "in").glob("*"))  # reference images are not inputs


def test_the_format_can_be_named_and_rubrics_are_checked(test_split: Path,
                                                          tmp_path: Path) -> None:
    assert len(load_items(test_split, image_dir=tmp_path / "in", format="ueval")) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "p", "text_rubrics": [3],
                               "image_rubrics": []}) + "\n")
    with pytest.raises(DatasetError, match=r"line 1: text_rubrics must hold strings"):
        load_items(bad, image_dir=tmp_path / "in")


def test_the_judges_answer_is_read_as_ueval_writes_it() -> None:
    assert parse_ueval_answer('```json\n{"criteria_met": true, "explanation": "ok"}\n```') \
        == (True, True, "ok")
    assert parse_ueval_answer('<think>{"criteria_met": true}</think>{"Criteria_Met": "No"}')[0] \
        is False
    assert parse_ueval_answer('{"criteria_met": "not sure"}') == (False, "not sure", "")
    assert parse_ueval_answer("Yes, it is met.")[0] is True
    with pytest.raises(ValueError, match="not true, false"):
        parse_ueval_answer('{"criteria_met": "partly"}')
    with pytest.raises(ValueError, match="no criteria_met"):
        parse_ueval_answer("I cannot decide.")


def judge_reply(rubric: str) -> str:
    if rubric.endswith("[met]"):
        return '{"criteria_met": true, "explanation": "it does"}'
    if rubric.endswith("[not met]"):
        return '{"criteria_met": false, "explanation": "it does not"}'
    if rubric.endswith("[unsure]"):
        return '{"criteria_met": "not sure"}'
    return "I cannot decide."


def answer(body: dict[str, Any]) -> str:
    """The OpenING tests' planner and relevance check; UEval's judge by rubric."""
    if message_text(body["messages"][0]).startswith("You are an expert evaluator"):
        user = message_text(body["messages"][-1])
        return judge_reply(user.rsplit("# Rubric Item\n", 1)[-1].strip())
    return planned(body)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    with judged_server(answer, monkeypatch, repair_rounds=0) as (_, seen):
        yield seen


def test_eval_on_ueval_judges_each_rubric_and_reports_its_rates(
    served: list[dict], test_split: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    assert main(["eval", str(test_split), "--out", str(out), "--concurrency", "1",
                 "--format", "ueval"]) == 0

    lines = {json.loads(t)["id"]: json.loads(t)
             for t in (out / "results.jsonl").read_text().splitlines()}
    art = lines["art_1"]["scores"]
    assert set(art) == {"ueval", "tool_use"}
    details = art["ueval"]["details"]
    assert [v["met"] for v in details["text_rubrics"]] == [True, False]
    assert [v["met"] for v in details["image_rubrics"]] == [True, None]
    assert (details["text_rate"], details["image_rate"], details["unknown"]) == (0.5, 1.0, 1)
    assert art["ueval"]["score"] == pytest.approx(0.75)
    assert art["ueval"]["errors"] == [
        "image rubric 2: the judge's answer holds no criteria_met: 'I cannot decide.'"]
    space = lines["space_3"]["scores"]["ueval"]["details"]
    assert space["text_rubrics"][0]["criteria_met"] == "not sure"
    assert (space["text_rate"], space["image_rate"]) == (0.0, pytest.approx(2 / 3))

    judged = [r["body"] for r in served
              if message_text(r["body"]["messages"][0]).startswith("You are an expert evaluator")]
    assert len(judged) == 10  # every rubric once
    text_calls = [b for b in judged if "Judge whether the model's text answer"
                  in message_text(b["messages"][-1])]
    assert len(text_calls) == 4 and {b["model"] for b in text_calls} == {"text-judge"}
    assert all("Text Answer: # Answer\n\nFirst the chart.\n\nThat is all." in
               message_text(b["messages"][-1]) for b in text_calls)
    image_calls = [b for b in judged if b not in text_calls]
    assert {b["model"] for b in image_calls} == {"vision-judge"}
    assert all(images_in(b["messages"][-1]) == 1 for b in image_calls)
    closed = [message_text(b["messages"][-1]) for b in image_calls
              if "Earth" in message_text(b["messages"][-1])]
    assert len(closed) == 3 and not any("Text Answer" in text for text in closed)

    summary = json.loads((out / "summary.json").read_text())["scorers"]["ueval"]
    # Text rates 1/2, 1, 0; image rates 1 (one unknown left out), 0, 2/3.
    assert summary["text_avg_rate"] == pytest.approx(0.5)
    assert summary["image_avg_rate"] == pytest.approx(5 / 9)
    assert summary["overall_avg_rate"] == summary["score"] == pytest.approx(19 / 36)
    assert (summary["num_items_with_text"], summary["num_items_with_image"]) == (3, 3)
    assert summary["unknown"] == 1
    assert summary["tasks"]["art"]["overall_avg_rate"] == pytest.approx(0.625)
    assert summary["tasks"]["space"]["overall_avg_rate"] == pytest.approx(1 / 3)
    assert summary["task_mean"] == pytest.approx(23 / 48)


def test_without_a_vision_judge_image_rubrics_are_unknown(test_split: Path,
                                                           tmp_path: Path) -> None:
    item = load_items(test_split, image_dir=tmp_path / "in")[2]
    judge = ScriptedModel(script=lambda messages, kwargs: '{"criteria_met": true}')
    scorer = UEvalScorer(text=judge, vision=None)

    score = scorer.score(ItemRun(item=item, document=Document(), seconds=1.0),
                         ArtifactStore(tmp_path / "artifacts"))

    assert len(judge.calls) == 1
    assert (score["details"]["text_rate"], score["details"]["image_rate"]) == (1.0, None)
    assert score["details"]["unknown"] == 3 and "no vision judge" in score["errors"][0]


def test_an_item_without_rubrics_is_left_unscored(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"id": "x", "prompt": "A fable."}) + "\n")
    item = load_items(path, image_dir=tmp_path / "in")[0]
    scorer = UEvalScorer(text=ScriptedModel(script=lambda messages, kwargs: "yes"), vision=None)

    score = scorer.score(ItemRun(item=item, document=Document(), seconds=1.0),
                         ArtifactStore(tmp_path / "artifacts"))

    assert score == {"score": None, "details": {}, "errors": ["the item has no UEval rubrics"]}
    assert scorer.summarize([score])["num_items"] == 1
