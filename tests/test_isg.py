"""ISG-Bench (Chen et al. 2025) read as published: its ``ISG-Bench.jsonl`` lines, the
images beside it in ``images/``, and its four levels of scores.

The lines copy the structure of ISG's published sample line (``0000`` in its readme) and
of its ``task_few_shot.json`` entry for Realistic Object Detection: the query and golden
blocks, and under ``predict`` the structure, block questions and image questions ISG
generated, ``image_qa`` once as a list and once as a dict holding one, as its scripts
take both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ScriptedModel, gradient_png, tag
from llmi.artifacts import ArtifactStore
from llmi.cli import main
from llmi.evaluation.datasets import load_items
from llmi.evaluation.records import Document, ItemRun
from llmi.evaluation.scorers.isg import IsgScorer
from llmi.state import failed_result
from test_eval import judged_server, message_text

HANDS, OBJECTS, MISSING = "0000", "0312", "0999"
HANDS_QUERY = ("I will give you a picture of a person washing their hands. Please use a "
               "combination of 4 images and text to show what will happen next. Please "
               "generate an overall description first, then directly generate adjacent image "
               "blocks. For example, [whole description] <object1 image> <object2 image> "
               "<object3 image> <object4 image>.")
OBJECTS_QUERY = ("Select and extract [sign, car] from the image. For each object, generate "
                 "a separate image. Start with the whole image description, then each "
                 "object's image followed by its caption.")


def text(content: str) -> dict[str, str]:
    return {"type": "text", "content": content}


def image(path: str) -> dict[str, str]:
    return {"type": "image", "content": path}


def hands_line() -> dict[str, Any]:
    return {
        "id": HANDS, "Category": "Prediction",
        "Query": [text(HANDS_QUERY), image("images/0000_q1.png")],
        "Golden": [text("The person keeps scrubbing, then rinses the lather away."),
                   *(image(f"images/0000_g{n}.png") for n in range(1, 5))],
        "predict": {
            "structure": {"Query": ["<query_text1>", "<query_img1>"],
                          "Answer": ["<gen_text1>", *(f"<gen_img{n}>" for n in range(1, 5))]},
            "block_tuple": {"relation": [["<gen_text1>", "<query_img1>",
                                          "is an overall description of"]]},
            "block_qa": {"questions": [
                {"subject": "<gen_text1>", "object": "<query_img1>",
                 "relation": "is an overall description of",
                 "Question": "Does <gen_text1> describe this image?"},
                {"subject": "<gen_img1>", "object": "<query_img1>", "relation": "follows",
                 "Question": "Does the first image follow from the second image?"},
                {"subject": "<gen_text1>", "object": "<query_text1>", "relation": "answers",
                 "Question": "Does <gen_text1> answer <query_text1>?"},
                {"subject": "<gen_img2>", "object": "<all>", "relation": "is part of",
                 "Question": "Is the image part of the whole answer?"},
            ]},
            "image_tuple": [["entity", "hands", "<gen_img1>"]],
            "image_qa": {"questions": [
                {"image": "<gen_img1>", "Question": "Are there hands in this image?",
                 "id": 0, "Preliminary": []},
                {"image": "<gen_img1>", "Question": "Is there soap on the hands?",
                 "id": 1, "Preliminary": [0]},
                {"image": "<gen_img2>", "Question": "Is the soap lathered?",
                 "id": 2, "Preliminary": [1]},
                {"image": "<gen_img5>", "Question": "Are the hands dry?",
                 "id": 3, "Preliminary": []},
            ]},
        },
    }


def objects_line() -> dict[str, Any]:
    return {
        "id": OBJECTS, "Category": "Realistic Object Detection",
        "Query": [image("images/0312_q1.png"), text(OBJECTS_QUERY)],
        "Golden": [text("A stop sign by a road, a car far off."), image("images/0312_g1.png"),
                   text("A round black sign."), image("images/0312_g2.png"),
                   text("A blue car, partly visible.")],
        "predict": {
            "structure": {"Query": ["<query_img1>", "<query_text1>"],
                          "Answer": ["<gen_text1>", "<gen_img1>", "<gen_text2>", "<gen_img2>",
                                     "<gen_text3>"]},
            "block_qa": {"questions": [
                {"subject": "<gen_text2>", "object": "<gen_img1>", "relation": "is a caption for",
                 "Question": "Is <gen_text2> a caption for the first image?"},
            ]},
            "image_qa": [{"image": "<gen_img1>", "Question": "Is there a sign?", "id": 0,
                          "Preliminary": []}],
        },
    }


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """ISG_eval/: ISG-Bench.jsonl and the images its lines name, except MISSING's query image."""
    root = tmp_path / "ISG_eval"
    (root / "images").mkdir(parents=True)
    names = ["0000_q1", *(f"0000_g{n}" for n in range(1, 5)), "0312_q1", "0312_g1", "0312_g2"]
    for seed, name in enumerate(names):
        (root / "images" / f"{name}.png").write_bytes(gradient_png(seed, (32, 24)))
    missing = {"id": MISSING, "Category": "HowTo", "Query": [text("How to fold a crane?"),
                                                              image("images/0999_q1.png")],
               "Golden": [text("Fold it.")], "predict": {}}
    path = root / "ISG-Bench.jsonl"
    path.write_text("".join(json.dumps(line) + "\n"
                            for line in (hands_line(), objects_line(), missing)), encoding="utf-8")
    return path


def test_items_are_read_as_isg_frames_them(bench: Path, tmp_path: Path) -> None:
    items = {item["id"]: item for item in load_items(bench, image_dir=tmp_path / "in")}

    hands = items[HANDS]
    assert hands["prompt"] == HANDS_QUERY + "\n\n[Input image 0]"
    assert [Path(p).read_bytes() for p in hands["images"]] == [
        (bench.parent / "images" / "0000_q1.png").read_bytes()]
    assert (hands["image_num"], hands["data_source"], hands["extra"]["Category"]) == (
        4, "isg", "Prediction")
    assert len(hands["extra"]["golden_images"]) == 4
    assert hands["extra"]["predict"] == hands_line()["predict"]

    objects = items[OBJECTS]
    assert objects["prompt"] == "[Input image 0]\n\n" + OBJECTS_QUERY
    assert objects["image_num"] == 2

    assert "images/0999_q1.png" in items[MISSING]["error"]
    assert items[MISSING]["image_num"] == -1  # its golden answer is text only

    named = load_items(bench, image_dir=tmp_path / "in", format="isg")
    assert [item["id"] for item in named] == [HANDS, OBJECTS, MISSING]


def code(n: int) -> str:
    return tag("code", f"Step {n}", code=f"plt.bar(['a', 'b'], [1, {n}])")


def answer(body: dict[str, Any]) -> str:
    first = message_text(body["messages"][0])
    if first.startswith("You write documents"):
        user = message_text(body["messages"][-1])
        if "washing" in user:
            return "The hands are rinsed clean.\n\n" + "\n\n".join(map(code, range(1, 5)))
        return "A sign and a car.\n\n" + code(1) + "\n\nA sign."
    if "Text 1" in first:
        return '{"Judge": 8, "Reason": "it answers"}'
    if "Text: [Start of Text]" in first:
        return 'Sure:\n```json\n{"Judge": "6", "Reason": "roughly"}\n```'
    if "two images" in first:
        return "They look alike."  # no JSON: unknown
    if "Answer it now" in first:
        return json.dumps({"Judge": "Yes" if "hands in" in first else "No", "Reason": "seen"})
    if "The golden answer:" in first:
        return json.dumps({"coherence": {"score": 7, "explanation": "fine"},
                           "overall_score": 7 if "washing" in first else 4,
                           "final_thoughts": "good enough"})
    return '{"match": "yes", "reason": "it fits"}'


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    with judged_server(answer, monkeypatch, repair_rounds=0) as (_, seen):
        yield seen


def test_eval_on_isg_scores_its_four_levels(served: list[dict], bench: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code_ = main(["eval", str(bench), "--format", "isg", "--out", str(out), "--concurrency", "1"])

    assert code_ == 1  # the item whose image is missing
    lines = {json.loads(t)["id"]: json.loads(t)
             for t in (out / "results.jsonl").read_text().splitlines()}
    assert lines[MISSING]["status"] == "error" and "0999_q1.png" in lines[MISSING]["error"]
    assert set(lines[HANDS]["scores"]) == {"isg", "tool_use"}

    hands = lines[HANDS]["scores"]["isg"]["details"]
    assert hands["structure"] is True  # text, then four images, as the golden answer
    # Text-image 6 and text-text 8; the image-image answer is unreadable; <all> is no block.
    assert hands["block"] == 7 and hands["unknown"]["block"] == 1
    assert [q["judge"] for q in hands["questions"]["block"]] == [6, None, 8]
    # Yes; no; no unasked after a no; no for an image the document does not have.
    assert [q["judge"] for q in hands["questions"]["image"]] == ["yes", "no", "no", "no"]
    assert hands["image"] == 0.25
    assert hands["holistic"] == 7 and lines[HANDS]["scores"]["isg"]["score"] == 0.7

    objects = lines[OBJECTS]["scores"]["isg"]["details"]
    assert objects["structure"] is False  # text, image, text against five blocks
    assert (objects["block"], objects["image"], objects["holistic"]) == (1, 0, 4)
    assert objects["questions"] == {"block": [], "image": []}

    judged = [r["body"] for r in served if r["body"]["messages"][0]["role"] == "user"]
    text_text = next(b for b in judged if "Text 1" in message_text(b["messages"][0]))
    assert text_text["model"] == "text-judge"
    assert "Does  `Text 1`  answer  `Text 2` ?" in message_text(text_text["messages"][0])
    text_image = next(b for b in judged
                      if "Text: [Start of Text]" in message_text(b["messages"][0]))
    assert text_image["model"] == "vision-judge"
    parts = text_image["messages"][0]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["detail"] == "low"
    assert "Question: [Start of Question] Does  `Text`  describe" in parts[1]["text"]
    holistic = next(b for b in judged if "washing" in message_text(b["messages"][0])
                    and "The golden answer:" in message_text(b["messages"][0]))
    shown = [p["type"] for p in holistic["messages"][0]["content"]]
    # The prompt, the query (text, image), the answer (text, four images), the golden
    # answer (text, four images), the closing.
    assert shown == ["text", "text", "image_url", "text", "text", *["image_url"] * 4,
                     "text", "text", *["image_url"] * 4, "text"]

    summary = json.loads((out / "summary.json").read_text())["scorers"]["isg"]
    assert summary["items"] == 2
    assert (summary["structure"], summary["block"], summary["image"], summary["holistic"]) == (
        0.5, 4, 0.125, 5.5)
    assert summary["unknown"] == {"block": 1, "image": 0, "holistic": 0}
    assert summary["categories"]["Temporal Prediction"]["block"] == 7
    assert summary["categories"]["Image Decomposition"]["structure"] == 0


def test_a_failed_image_keeps_the_structure_and_answers_no(bench: Path, tmp_path: Path) -> None:
    hands = next(i for i in load_items(bench, image_dir=tmp_path / "in") if i["id"] == HANDS)
    store = ArtifactStore(tmp_path / "artifacts")
    made = [store.put(gradient_png(n)) for n in range(3)]
    results = [failed_result(0, "diffusion", "hands", "the server is down")]
    results += [{**failed_result(n, "code", "a step", ""), "ok": True, "image": ref,
                 "error": None} for n, ref in enumerate(made, 1)]
    document = Document(
        segments=[{"kind": "text", "text": "Rinsed. "}, {"kind": "text", "text": " Clean."},
                  *({"kind": "slot", "slot": n} for n in range(4))],
        results=results, inputs=[])
    judge = ScriptedModel(script=lambda messages, kwargs: '{"overall_score": "11/10"}')

    score = IsgScorer(text=None, vision=judge).score(
        ItemRun(item=hands, document=document, seconds=1.0), store)

    details = score["details"]
    assert details["structure"] is True
    image_questions = details["questions"]["image"]
    assert [q["judge"] for q in image_questions] == ["no", "no", "no", "no"]
    assert image_questions[0]["reason"] == "the document has no such image"
    block = {q["question"]: q for q in details["questions"]["block"]}
    assert block["Does the first image follow from the second image?"]["judge"] == 1
    assert details["holistic"] is None and details["unknown"]["holistic"] == 1
    assert any("holistic" in e and "11/10" in e for e in score["errors"])
    holistic_call = judge.calls[-1]["messages"][0].content
    assert {"type": "text", "text": "Rinsed.  Clean."} in holistic_call
    assert {"type": "text", "text": "[an image that was not made]"} in holistic_call
