"""The rubric and tool-use scorers, on documents built by hand."""

from __future__ import annotations

import base64
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from helpers import ScriptedModel, gradient_png, model
from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.evaluation.records import Document, EvalItem, ItemRun, ItemScore
from llmi.evaluation.scorers.base import Scorer
from llmi.evaluation.scorers.reward import RewardScorer
from llmi.evaluation.scorers.rubric import RubricScorer, parse_rubric_answer
from llmi.evaluation.scorers.tool_use import ToolUseScorer
from llmi.judge.scoring import PARSER, Judge
from llmi.state import ImageRef, ImageResult, Repair, Segment, failed_result


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def item(*, criteria: Sequence[str] = (), tools: Sequence[str] = (),
         prompt: str = "Tell me about Kyoto") -> EvalItem:
    return EvalItem(id="item", prompt=prompt, images=[], image_num=0, tools=list(tools),
                    split="test", criteria=list(criteria), data_source="hand", extra={})


def run(eval_item: EvalItem, **document: Any) -> ItemRun:
    return ItemRun(item=eval_item, document=Document(**document), seconds=1.0)


def made(slot: int, ref: ImageRef, source: str = "search", description: str = "a picture",
         *, attempt: int = 0) -> ImageResult:
    return ImageResult(slot=slot, source=source, description=description, ok=True, image=ref,
                       error=None, tool=source, backend="fake", provenance={}, seconds=0.1,
                       attempt=attempt)


def failed(slot: int, source: str, error: str = "no image", *, attempt: int = 0,
           infrastructure: bool = False) -> ImageResult:
    result = failed_result(slot, source, "a picture", error, tool=source, attempt=attempt)
    result["infrastructure"] = infrastructure
    return result


def broken_tag(slot: int) -> ImageResult:
    return failed_result(slot, "unknown", "", "the tag is not a dict", tool=PARSER)


def repair(slot: int, attempt: int) -> Repair:
    return Repair(slot=slot, attempt=attempt, kind="query", failed="x", tried="y")


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_urls(message: BaseMessage) -> list[str]:
    return [p["image_url"]["url"] for p in message.content
            if isinstance(p, dict) and p["type"] == "image_url"]


def texts(message: BaseMessage) -> list[str]:
    return [p["text"] for p in message.content if isinstance(p, dict) and p["type"] == "text"]


def in_order(haystack: list[str], needles: list[str]) -> bool:
    positions = [next(i for i, text in enumerate(haystack) if needle in text) for needle in needles]
    return positions == sorted(positions)


def criterion_of(messages: list[BaseMessage]) -> str:
    """The criterion of a text judge's message."""
    return messages[-1].content.split("<criterion>\n", 1)[1].split("\n</criterion>", 1)[0]


def test_scorers_follow_the_scorer_protocol() -> None:
    assert isinstance(RubricScorer(model("x"), vision=False), Scorer)
    assert isinstance(ToolUseScorer(), Scorer)
    assert (RubricScorer.name, ToolUseScorer.name) == ("rubric", "tool_use")


# Rubric: parsing answers


@pytest.mark.parametrize(("answer", "score"), [
    ('{"score": 2, "justification": "All there."}', 2),
    ('```json\n{"score": 1, "justification": "Half."}\n```', 1),
    ('<think>{"score": 0} maybe? no</think>{"score": 2, "justification": "ok"}', 2),
    ('{"Score": "2/2", "justification": "ok"}', 2),
    ('{"score": "1"}', 1),
    ('{"score": 1.0}', 1),
    ('{"score": 0}', 0),
    ("The criterion is partly met.\nScore: 1", 1),
    ("**Score**: 2/2 - all done", 2),
])
def test_parse_rubric_answer_reads_scores(answer: str, score: int) -> None:
    assert parse_rubric_answer(answer)[0] == score


@pytest.mark.parametrize("answer", [
    '{"score": 3}', '{"score": 1.5}', '{"score": "2/5"}', '{"score": true}', '{"score": -1}',
    '{"score": "high"}', "Score: 7", "I liked it.", "",
])
def test_parse_rubric_answer_refuses_other_answers(answer: str) -> None:
    with pytest.raises(ValueError, match="score"):
        parse_rubric_answer(answer)


def test_parse_rubric_answer_keeps_the_justification() -> None:
    assert parse_rubric_answer('{"score": 2, "justification": "Names all temples."}') == (
        2, "Names all temples.")


# Rubric: scoring items


ANSWERS = {
    "json": '{"score": 2, "justification": "Fully met."}',
    "fenced": 'Here you go:\n```json\n{"score": 1, "justification": "Partly."}\n```',
    "prose": "The chart is there but unlabeled. Score: 1",
    "range": '{"score": 3, "justification": "Above and beyond."}',
    "garbage": "I cannot grade this document.",
}


def answer_by_criterion(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
    criterion = criterion_of(messages)
    if criterion == "raise":
        raise TimeoutError("the judge server did not answer")
    return ANSWERS[criterion]


def test_rubric_counts_only_criteria_the_judge_could_grade(store: ArtifactStore) -> None:
    judge = ScriptedModel(script=answer_by_criterion)
    criteria = ["json", "fenced", "prose", "range", "garbage", "raise"]
    document = {"segments": [{"kind": "text", "text": "Kyoto is old."}], "results": []}

    scored = RubricScorer(judge, vision=False).score(run(item(criteria=criteria), **document),
                                                     store)

    details = scored["details"]
    assert [c["score"] for c in details["criteria"]] == [2, 1, 1, None, None, None]
    assert [c["criterion"] for c in details["criteria"]] == criteria
    assert details["criteria"][0]["justification"] == "Fully met."
    assert (details["points"], details["max_points"]) == (4, 6)
    assert scored["score"] == pytest.approx(4 / 6)
    assert [c["error"] is None for c in details["criteria"]] == [True] * 3 + [False] * 3
    assert len(scored["errors"]) == 3
    assert scored["errors"][0].startswith("criterion 4:")
    assert "score 3 is not 0, 1 or 2" in scored["errors"][0]
    assert "I cannot grade" in scored["errors"][1]
    assert "TimeoutError" in scored["errors"][2]
    assert len(judge.calls) == 6


def test_rubric_with_no_gradable_criterion_has_no_score(store: ArtifactStore) -> None:
    scored = RubricScorer(model("no idea"), vision=False).score(
        run(item(criteria=["a", "b"]), segments=[], results=[]), store)
    assert scored["score"] is None
    assert (scored["details"]["points"], scored["details"]["max_points"]) == (0, 0)
    assert len(scored["errors"]) == 2


def test_rubric_item_without_criteria_asks_no_judge(store: ArtifactStore) -> None:
    judge = ScriptedModel(script=lambda messages, kwargs: '{"score": 2}')
    scored = RubricScorer(judge, vision=True).score(run(item(), segments=[], results=[]), store)
    assert scored == ItemScore(score=None, errors=["the item has no criteria"],
                               details={"criteria": [], "points": 0, "max_points": 0})
    assert judge.calls == []


def illustrated(store: ArtifactStore) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A document with an input image, two made images, a failed one and a lost one."""
    pictures = {name: gradient_png(seed) for seed, name in enumerate(["input", "temple", "chart",
                                                                       "lost"])}
    refs = {name: store.put(data) for name, data in pictures.items()}
    store.path(refs["lost"]).unlink()
    segments: list[Segment] = [
        {"kind": "text", "text": "Kinkaku-ji glows in autumn."},
        {"kind": "slot", "slot": 0},
        {"kind": "text", "text": "Visitors by year:"},
        {"kind": "slot", "slot": 1},
        {"kind": "slot", "slot": 2},
        {"kind": "slot", "slot": 3},
        {"kind": "text", "text": "The end."},
    ]
    results = [
        made(0, refs["temple"], "search", "Kinkaku-ji in autumn"),
        failed(1, "diffusion", "the images server is down"),
        made(2, refs["chart"], "code", "visitors by year"),
        made(3, refs["lost"], "diffusion", "a tea house"),
    ]
    return {"inputs": [refs["input"]], "segments": segments, "results": results}, pictures


def test_vision_judge_sees_inputs_and_images_in_reading_order(store: ArtifactStore) -> None:
    document, pictures = illustrated(store)
    judge = ScriptedModel(script=lambda messages, kwargs: '{"score": 2, "justification": "ok"}')

    scored = RubricScorer(judge, vision=True).score(
        run(item(criteria=["Shows the temple"], prompt="Kyoto in autumn"), **document), store)

    assert scored["score"] == 1.0
    (call,) = judge.calls
    system, human = call["messages"]
    assert "0, 1 or 2" in system.content
    assert image_urls(human) == [data_url(pictures[name]) for name in ("input", "temple", "chart")]
    parts = texts(human)
    assert in_order(parts, [
        "Kyoto in autumn", "Input image 0:", "The document:", "Kinkaku-ji glows", "Image 0:",
        "Visitors by year:", "[Image 1 is missing: the images server is down]", "Image 2:",
        "[Image 3 is missing: its file is not in the artifact store]", "The end.",
        "Shows the temple",
    ])
    temple_label = human.content.index({"type": "text", "text": "Image 0:"})
    assert human.content[temple_label + 1]["image_url"]["url"] == data_url(pictures["temple"])
    assert '"score"' in parts[-1]


def test_text_judge_reads_notes_instead_of_images(store: ArtifactStore) -> None:
    document, _ = illustrated(store)
    judge = ScriptedModel(script=lambda messages, kwargs: '{"score": 1}')

    RubricScorer(judge, vision=False).score(run(item(criteria=["c"]), **document), store)

    (call,) = judge.calls
    human = call["messages"][-1]
    assert isinstance(human.content, str) and "data:image" not in human.content
    assert "[Image 0, made by search: Kinkaku-ji in autumn]" in human.content
    assert "[Image 2, made by code: visitors by year]" in human.content
    assert "[Image 1 is missing: the images server is down]" in human.content
    assert "[Input image 0: supplied by the user, not shown]" in human.content


def test_rubric_judges_criteria_in_parallel(store: ArtifactStore) -> None:
    # Each call waits until all three are in flight: judged one at a time, they would all
    # break the barrier and fail.
    barrier = threading.Barrier(3, timeout=10)

    def wait_for_the_others(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        barrier.wait()
        return '{"score": 2}'

    scorer = RubricScorer(ScriptedModel(script=wait_for_the_others), vision=False, max_parallel=3)
    scored = scorer.score(run(item(criteria=["a", "b", "c"]), segments=[], results=[]), store)

    assert scored["errors"] == [] and scored["score"] == 1.0


def test_rubric_summarize_is_micro_and_macro(store: ArtifactStore) -> None:
    judge = ScriptedModel(script=answer_by_criterion)
    scorer = RubricScorer(judge, vision=False)
    scores = [
        scorer.score(run(item(criteria=c), segments=[], results=[]), store)
        for c in (["json", "fenced", "garbage"], ["prose", "prose", "json", "json"], [])
    ]

    summary = scorer.summarize(scores)

    assert summary == {
        "score": pytest.approx((3 + 6) / (4 + 8)),
        "mean_item_score": pytest.approx((3 / 4 + 6 / 8) / 2),
        "items": 2, "points": 9, "max_points": 12, "criteria": 7, "errors": 1,
    }


def test_rubric_from_context_prefers_the_vision_judge() -> None:
    both = Context(judge_model="reader", vision_judge_model="eyes",
                   judge_base_url="http://127.0.0.1:9/v1")
    scorer = RubricScorer.from_context(both)
    assert scorer.vision and scorer.model.model_name == "eyes"

    text_only = Context(judge_model="reader", vision_judge_model="",
                        judge_base_url="http://127.0.0.1:9/v1")
    scorer = RubricScorer.from_context(text_only)
    assert not scorer.vision and scorer.model.model_name == "reader"

    with pytest.raises(ValueError, match="LLMI_VISION_JUDGE_MODEL or LLMI_JUDGE_MODEL"):
        RubricScorer.from_context(Context(judge_model="", vision_judge_model=""))


# Tool use


PNG = ImageRef(sha256="0" * 64, uri="file:///nowhere.png", mime="image/png", width=8, height=8)


def busy_run() -> ItemRun:
    """Two search slots (one repaired and still failing), a code chart made on its third try,
    a diffusion slot whose server was down, and a broken tag."""
    results = [
        made(0, PNG, "search"),
        failed(1, "search", "no usable image", attempt=1),
        made(2, PNG, "code", attempt=2),
        failed(3, "diffusion", "the images server is down", infrastructure=True),
        broken_tag(4),
    ]
    repairs = [repair(1, 1), repair(2, 1), repair(2, 2)]
    return run(item(tools=["search", "edit"]), results=results, repairs=repairs)


def test_tool_use_rates_calls_and_tags(store: ArtifactStore) -> None:
    scored = ToolUseScorer().score(busy_run(), store)

    details = scored["details"]
    assert details["sources"] == {
        "code": {"attempts": 1, "successes": 1, "rate": 1.0, "calls": 3,
                 "infrastructure_failures": 0},
        "diffusion": {"attempts": 1, "successes": 0, "rate": 0.0, "calls": 1,
                      "infrastructure_failures": 1},
        "search": {"attempts": 2, "successes": 1, "rate": 0.5, "calls": 3,
                   "infrastructure_failures": 0},
    }
    assert details["invalid_tags"] == 1
    assert details["infrastructure_failures"] == 1
    # The diffusion server's outage is not the request's fault: 2 made of 3 slots.
    assert scored["score"] == pytest.approx(2 / 3)
    assert scored["errors"] == []


def test_tool_use_agreement_with_the_required_tools(store: ArtifactStore) -> None:
    details = ToolUseScorer().score(busy_run(), store)["details"]
    assert details["used"] == ["code", "diffusion", "search"]
    assert details["required"] == ["edit", "search"]
    assert details["agreement"] == pytest.approx(1 / 4)
    assert details["missing"] == ["edit"]
    assert details["unexpected"] == ["code", "diffusion"]


def test_tool_use_without_tool_slots_or_required_tools(store: ArtifactStore) -> None:
    scored = ToolUseScorer().score(run(item(), results=[broken_tag(0)]), store)
    assert scored["score"] is None
    assert scored["details"]["invalid_tags"] == 1
    assert scored["details"]["sources"] == {} and scored["details"]["agreement"] is None

    only_outages = run(item(tools=["search"]), results=[failed(0, "search", infrastructure=True)])
    scored = ToolUseScorer().score(only_outages, store)
    assert scored["score"] is None and scored["details"]["agreement"] == 1.0


def test_tool_use_summarize_over_items(store: ArtifactStore) -> None:
    scorer = ToolUseScorer()
    runs = [
        busy_run(),
        run(item(tools=["code"]), results=[made(0, PNG, "code"), failed(1, "code")]),
        run(item(), results=[made(0, PNG, "search")]),
    ]

    summary = scorer.summarize([scorer.score(r, store) for r in runs])

    assert summary["items"] == 3
    assert summary["sources"] == {
        "code": {"attempts": 3, "successes": 2, "rate": pytest.approx(2 / 3), "calls": 5,
                 "infrastructure_failures": 0},
        "diffusion": {"attempts": 1, "successes": 0, "rate": 0.0, "calls": 1,
                      "infrastructure_failures": 1},
        "search": {"attempts": 3, "successes": 2, "rate": pytest.approx(2 / 3), "calls": 4,
                   "infrastructure_failures": 0},
    }
    # 4 made of 7 slots, less the one outage.
    assert summary["score"] == pytest.approx(4 / 6)
    assert summary["invalid_tags"] == 1
    assert summary["infrastructure_failures"] == 1
    # Only the first two items require tools: agreement 1/4 and 1, one exact match.
    assert summary["agreement"] == pytest.approx((1 / 4 + 1) / 2)
    assert summary["exact_match"] == pytest.approx(1 / 2)


def test_tool_use_summarize_without_items_requiring_tools(store: ArtifactStore) -> None:
    scorer = ToolUseScorer()
    summary = scorer.summarize([scorer.score(run(item(), results=[]), store)])
    assert summary["score"] is None and summary["agreement"] is None
    assert summary["exact_match"] is None and summary["sources"] == {}


def test_the_reward_scorer_keeps_unreadable_judge_answers_apart(store: ArtifactStore) -> None:
    segments: list[Segment] = [{"kind": "text", "text": "Kyoto."}, {"kind": "slot", "slot": 0}]
    document = {"draft": "Kyoto.", "segments": segments,
                "results": [made(0, store.put(gradient_png()))]}
    scorer = RewardScorer(Judge(llm=model("A fine document!"), vlm=model("Lovely pictures.")))

    scored = scorer.score(run(item(), **document), store)

    # llmi's strict rules: the five unknown scores leave the reward, which is S_num = 1
    # (image_num 0: any count; one valid tag; one tool call, made). A trainer reward by
    # LLM-I's rules would count them as 1 each: 0.2 * 1 + 0.3 * 0 + 0.5 * 0 = 0.2.
    assert scored["score"] == 1.0
    assert scored["details"]["unknown"] == [
        "llm.text", "llm.image", "vision.quality", "vision.task_relevance",
        "vision.text_image_relevance"]
    assert scorer.summarize([scored])["unknown"] == 5
