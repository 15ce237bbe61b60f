"""OpenING (Zhou et al. 2025) read as published: its ``test_data.jsonl`` lines, its input
images beside it, its GPT-score protocol, and its own output shape for its judge scripts.

The dataset lines copy the structure of real lines of OpenING's ``test_data.jsonl``; the
output shape is that of its ``gen_outputs/GPT-4o+DALL-E3_output/0301096.json``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from helpers import ScriptedModel, gradient_png, tag
from llmi.artifacts import ArtifactStore
from llmi.cli import main
from llmi.evaluation.datasets import DatasetError, load_items
from llmi.evaluation.records import Document, EvalItem, ItemRun, ItemScore
from llmi.evaluation.scorers.opening import CRITERIA, OpeningScorer, parse_opening_answer
from llmi.state import ImageResult
from test_eval import judged_server, message_text

STORY, DIAGRAM, MISSING = "0301096", "1502011", "1502046"

# gen_outputs/GPT-4o+DALL-E3_output/0301096.json, its texts shortened.
GEN_OUTPUT = {
    "meta_task_id": "3", "meta_task_name": "Multimodal Content Completion", "subtask_id": "1",
    "subtask_name": "Storybook Completion", "data_id": "96",
    "conversations": [
        {"input": [
            {"image": "./images/Storybook Completion/96-i-1.jpg",
             "text": "Please complete the subsequent parts of the story with images and text "
                     "based on the given opening parts. <BEGIN> One evening, Curious George "
                     "was playing outside near his house. <image>"},
        ]},
        {"output": [
            {"text": "George's hand gently touched something soft and feathery.",
             "image": "0301096-o-0.jpg"},
        ]},
    ],
}


def opening_line(uid: str, subtask: str, data_id: str, inputs: list[tuple[str, str | None]],
                 outputs: int) -> dict[str, Any]:
    """A line of OpenING's test_data.jsonl; ``inputs`` are (text, image path) steps."""
    return {
        "total_uid": uid, "meta_task_id": uid[:2].lstrip("0"), "meta_task_name": "A task",
        "subtask_id": uid[2:4].lstrip("0"), "subtask_name": subtask, "data_id": data_id,
        "conversations": [
            {"input": [{"image": image, "text": text} for text, image in inputs]},
            {"output": [{"image": f"./images/{subtask}/{data_id}-o-{n}.jpg",
                         "text": f"Reference step {n}. <image>"} for n in range(1, outputs + 1)]},
        ],
    }


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(gradient_png(seed, (64, 48)))).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def test_data(tmp_path: Path) -> Path:
    """OpenING-benchmark/: test_data.jsonl and the input images its lines name, except the
    one of MISSING."""
    root = tmp_path / "OpenING-benchmark"
    story = root / "images" / "Storybook Completion"
    story.mkdir(parents=True)
    (story / "96-i-1.jpg").write_bytes(jpeg(1))
    (story / "96-i-2.jpg").write_bytes(jpeg(2))
    lines = [
        opening_line(STORY, "Storybook Completion", "96", [
            ("Please complete the subsequent parts of the story with images and text based "
             "on the given opening parts. <BEGIN> One evening, Curious George was playing "
             "outside. <image>", "./images/Storybook Completion/96-i-1.jpg"),
            ("Suddenly, George heard a soft thumping sound. <image>",
             "./images/Storybook Completion/96-i-2.jpg"),
        ], outputs=2),
        opening_line(DIAGRAM, "Academic Scenarios Brainstorming", "11", [
            ("<BEGIN> Please draw a workflow diagram for developing large language models.",
             None),
        ], outputs=1),
        opening_line(MISSING, "Academic Scenarios Brainstorming", "46", [
            ("<BEGIN> How could a language model understand images? <image>",
             "./images/Academic Scenarios Brainstorming/46-i-1.jpg"),
        ], outputs=1),
    ]
    path = root / "test_data.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_items_are_read_as_opening_frames_them(test_data: Path, tmp_path: Path) -> None:
    items = {item["id"]: item for item in load_items(test_data, image_dir=tmp_path / "in")}

    story = items[STORY]
    assert story["prompt"] == (
        "The number of generated text-image pairs can be 2: Please complete the subsequent "
        "parts of the story with images and text based on the given opening parts. One "
        "evening, Curious George was playing outside. [Input image 0]\n\n"
        "Suddenly, George heard a soft thumping sound. [Input image 1]"
    )
    root = test_data.parent / "images" / "Storybook Completion"
    assert [Path(p).read_bytes() for p in story["images"]] == [
        (root / "96-i-1.jpg").read_bytes(), (root / "96-i-2.jpg").read_bytes()]
    assert (story["image_num"], story["data_source"], story["extra"]["data_id"]) == (
        2, "opening", "96")
    assert "error" not in story

    diagram = items[DIAGRAM]
    assert diagram["prompt"].endswith(": Please draw a workflow diagram for developing "
                                      "large language models.")
    assert (diagram["images"], diagram["image_num"]) == ([], 1)

    assert "46-i-1.jpg" in items[MISSING]["error"]


def test_the_format_can_be_named_and_must_be_known(test_data: Path, tmp_path: Path) -> None:
    assert len(load_items(test_data, image_dir=tmp_path / "in", format="opening")) == 3
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_items(test_data, image_dir=tmp_path / "in", format="gen")


def scores_json(score: Any = 8, *, wrapped: bool = True) -> str:
    scores = {name: {"Score": score, "Justification": f"{name} is fine"} for name in CRITERIA}
    return json.dumps({"scores": scores} if wrapped else scores)


def test_the_judges_answer_is_read_as_its_protocol_writes_it() -> None:
    # The system prompt's shape, in a fence after reasoning.
    graded = parse_opening_answer("<think>{\"Correctness\": 1}</think>Here:\n```json\n"
                                  + scores_json(8) + "\n```")
    assert [c["criterion"] for c in graded] == list(CRITERIA)
    assert {c["score"] for c in graded} == {8}
    assert graded[0]["justification"] == "Correctness is fine"

    # The function call's arguments: no "scores" wrapper; names in another spelling.
    flat = json.loads(scores_json("9/10", wrapped=False))
    flat["image_text_coherency"] = flat.pop("Image-Text Coherency") | {"Score": 11}
    del flat["Completeness"]
    by_name = {c["criterion"]: c for c in parse_opening_answer(json.dumps(flat))}
    assert by_name["Correctness"]["score"] == 9
    assert by_name["Image-Text Coherency"]["score"] is None
    assert "11" in by_name["Image-Text Coherency"]["error"]
    assert by_name["Completeness"]["error"] == "the answer does not score it"

    with pytest.raises(ValueError, match="no OpenING scores"):
        parse_opening_answer("Correctness: 8")


def images_in(message: dict[str, Any]) -> int:
    content = message["content"]
    return 0 if isinstance(content, str) else sum(p["type"] == "image_url" for p in content)


def answer(body: dict[str, Any]) -> str:
    system, user = message_text(body["messages"][0]), message_text(body["messages"][-1])
    if system.startswith("You write documents"):
        chart = tag("code", "A bar chart", code="plt.bar(['a', 'b'], [1, 2])")
        return f"# Answer\n\nFirst the chart.\n\n{chart}\n\nThat is all."
    if system.startswith("You evaluate interleaved"):
        return scores_json(9 if "George" in user else 6)
    return '{"match": "yes", "reason": "it fits"}'


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    with judged_server(answer, monkeypatch, repair_rounds=0) as (_, seen):
        yield seen


def requests_of(seen: list[dict], system_start: str) -> list[dict[str, Any]]:
    return [r["body"] for r in seen
            if message_text(r["body"]["messages"][0]).startswith(system_start)]


def test_eval_on_opening_scores_it_and_writes_its_output_shape(
    served: list[dict], test_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    code = main(["eval", str(test_data), "--out", str(out), "--concurrency", "1"])

    assert code == 1  # the item whose image is missing
    lines = {json.loads(t)["id"]: json.loads(t)
             for t in (out / "results.jsonl").read_text().splitlines()}
    assert lines[MISSING]["status"] == "error" and "46-i-1.jpg" in lines[MISSING]["error"]
    story = lines[STORY]
    assert story["status"] == "ok" and set(story["scores"]) == {"opening", "tool_use"}
    assert story["scores"]["opening"]["details"]["overall"] == 9
    assert story["scores"]["opening"]["score"] == pytest.approx(0.9)

    plans = {message_text(b["messages"][-1]): b for b in requests_of(served, "You write documents")}
    assert len(plans) == 2
    story_plan = next(b for text, b in plans.items() if "George" in text)
    assert images_in(story_plan["messages"][-1]) == 2

    judged = requests_of(served, "You evaluate interleaved")
    assert all(b["model"] == "vision-judge" for b in judged)
    story_judged = next(b for b in judged if "George" in message_text(b["messages"][-1]))
    user = message_text(story_judged["messages"][-1])
    assert user.startswith("INPUT: Please complete") and "<BEGIN>" not in user
    assert "outside. <IMG_0></IMG_0>" in user and "\nOUTPUT: # Answer" in user
    assert "First the chart. <IMG_2></IMG_2>" in user
    assert images_in(story_judged["messages"][-1]) == 3

    summary = json.loads((out / "summary.json").read_text())["scorers"]["opening"]
    assert summary["items"] == 2
    assert summary["criteria"]["Correctness"] == pytest.approx(7.5)
    assert summary["overall"] == pytest.approx(7.5)

    predictions = [json.loads(t) for t in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["total_uid"] for p in predictions] == [STORY, DIAGRAM]
    story_out = next(p for p in predictions if p["total_uid"] == STORY)
    assert shape({k: v for k, v in story_out.items() if k != "total_uid"}) == shape(GEN_OUTPUT)
    steps = story_out["conversations"][1]["output"]
    assert steps == [{"text": "# Answer\n\nFirst the chart.", "image": f"{STORY}-o-0.jpg"},
                     {"text": "That is all.", "image": None}]
    with Image.open(out / f"{STORY}-o-0.jpg") as image:
        assert image.format == "JPEG"
    assert json.loads((out / f"{STORY}.json").read_text()) == story_out
    assert "Overall: 9" in (out / "items" / STORY / "report.html").read_text()


def shape(value: Any) -> Any:
    """The keys and kinds of a JSON value, lists by their first element."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_a_text_judge_reads_notes_and_a_bad_answer_leaves_the_item_out(
    test_data: Path, tmp_path: Path
) -> None:
    diagram = next(i for i in load_items(test_data, image_dir=tmp_path / "in")
                   if i["id"] == DIAGRAM)
    store = ArtifactStore(tmp_path / "artifacts")
    chart = store.put(gradient_png(4))
    result = ImageResult(slot=0, source="code", description="the workflow", ok=True, image=chart,
                         error=None, tool="code", backend="fake", provenance={}, seconds=0.1,
                         attempt=0)
    document = Document(segments=[{"kind": "text", "text": "The workflow:"},
                                  {"kind": "slot", "slot": 0}], results=[result], inputs=[])
    judge = ScriptedModel(script=lambda messages, kwargs: "It is good.")
    scorer = OpeningScorer(text=judge, vision=None)

    score = scorer.score(ItemRun(item=diagram, document=document, seconds=1.0), store)

    asked = judge.calls[0]["messages"][-1].content
    assert asked.startswith("INPUT: Please draw a workflow diagram")
    assert "OUTPUT: The workflow: <IMG_0></IMG_0>\n[made by code: the workflow]" in asked
    assert score["score"] is None and "no OpenING scores" in score["errors"][0]
    assert {c["error"] for c in score["details"]["criteria"]} == {"not scored"}
    summary = scorer.summarize([score])
    assert (summary["items"], summary["incomplete"], summary["overall"]) == (0, 1, None)


def test_the_opening_score_applies_to_other_datasets_too(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    photo = store.put(gradient_png(5))
    plain = EvalItem(id="fox", prompt="A fable about a fox.", images=[], image_num=0, tools=[],
                     split="", criteria=[], data_source="hand", extra={})
    document = Document(segments=[{"kind": "text", "text": "Once, a fox."}], results=[],
                        inputs=[photo])
    judge = ScriptedModel(script=lambda messages, kwargs: scores_json(7))

    score = OpeningScorer(text=None, vision=judge).score(
        ItemRun(item=plain, document=document, seconds=1.0), store)

    parts = judge.calls[0]["messages"][-1].content
    assert [p.get("text") for p in parts[:2]] == ["INPUT: A fable about a fox.",
                                                  " <IMG_0></IMG_0>"]
    assert parts[2]["type"] == "image_url"
    assert score["details"]["overall"] == 7


def test_the_summary_counts_only_items_with_every_criterion_scored() -> None:
    def scored(score: int | None, missing: str = "") -> ItemScore:
        criteria = [{"criterion": name, "score": None if name == missing else score}
                    for name in CRITERIA]
        return ItemScore(score=None, details={"criteria": criteria}, errors=[])

    failed_scorer = ItemScore(score=None, details={}, errors=["the opening scorer failed"])
    summary = OpeningScorer(text=None, vision=ScriptedModel(script=print)).summarize(
        [scored(8), scored(6), scored(2, missing="Completeness"), failed_scorer])

    assert (summary["items"], summary["incomplete"]) == (2, 2)
    assert summary["criteria"]["Completeness"] == summary["overall"] == 7
    assert summary["score"] == pytest.approx(0.7)
