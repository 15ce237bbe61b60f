"""The trainer reward against LLM-I's, case by case, with the same judge answers.

Every expected value is worked out by hand from LLM-I's code (ByteDance-BandAI/LLM-I):
``verl/workers/reward_manager/llmi.py`` computes

    llm_score  = ((1.4 * text + 0.6 * image) / 2 - 1) / 4
    mllm_score = ((quality + task + text_image) / 3 - 1) / 4
    R          = 0.2 * img_num + 0.3 * mllm_score * img_num + 0.5 * llm_score

with the factors of ``recipe/llmi/llmi_grpo.sh``; ``verl/utils/reward_score/llmi_rm.py``
gives ``img_num`` (``image_num_score`` on the train split, ``image_num_score_eval`` on any
other) from the ``<image>`` marks of the rendered answer, one per image made
(``imageutils/interleaved_gen.py``), and its judge rules; ``judge_client.py`` reads a
failed or unreadable answer as 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmi.context import Context
from llmi.evaluation import rewards
from llmi.judge import Judge, RewardRules, RewardWeights
from llmi.rewards import DocumentReward, compute_score
from llmi.tools.base import ToolCall, ToolError
from helpers import FakeTool, ScriptedModel, fake_tools, tag

TEXT = '{"text": 4, "image": 3}'
VISION = '{"quality": 4, "task_relevance": 4, "text_image_relevance": 4}'
S_LLM = ((1.4 * 4 + 0.6 * 3) / 2 - 1) / 4  # (3.7 - 1) / 4 = 0.675
S_MLLM = ((4 + 4 + 4) / 3 - 1) / 4  # 0.75
INTRO = "# Kyoto\n\nRain and temples.\n\n"


def charts(n: int) -> str:
    """A document of ``n`` charts, each after a line of text."""
    return INTRO + "".join(
        f"Chart {i}:\n\n" + tag("code", f"chart {i}", code=f"plt.plot([{i}, {i + 1}])") + "\n\n"
        for i in range(n)
    )


def answering(reply: str) -> ScriptedModel:
    return ScriptedModel(script=lambda messages, kwargs: reply)


def judge(text: str = TEXT, vision: str = VISION, **weights: float) -> Judge:
    return Judge(llm=answering(text), vlm=answering(vision), weights=RewardWeights(**weights))


def reward(tmp_path: Path, judge_: Judge | None = None, **options: Any) -> DocumentReward:
    options.setdefault("tools", fake_tools())
    return DocumentReward(context=Context(artifact_dir=str(tmp_path / "artifacts")),
                          judge=judge_ or judge(), **options)


def failing_chart(call: ToolCall) -> None:
    raise ToolError("NameError: name 'dta' is not defined")


def out_of_quota(call: ToolCall) -> None:
    raise ToolError("out of search credits", kind="quota")


# The image count


def test_too_many_images_on_the_train_split(tmp_path: Path) -> None:
    scores = reward(tmp_path).score("Two charts.", charts(3), image_num=2)

    # image_num_score: 3 / 2 > 1, so max(0, 1 - 0.3 * (3 - 2)) = 0.7
    assert scores["rules"]["image_count"] == pytest.approx(0.7)
    assert scores["reward"] == pytest.approx(0.2 * 0.7 + 0.3 * S_MLLM * 0.7 + 0.5 * S_LLM)
    assert scores["reward"] == pytest.approx(0.635, abs=0.005)


def test_too_few_images_on_the_train_split(tmp_path: Path) -> None:
    scores = reward(tmp_path).score("Three charts.", charts(2), image_num=3)

    # image_num_score: 2 / 3
    assert scores["reward"] == pytest.approx(0.2 * 2 / 3 + 0.3 * S_MLLM * 2 / 3 + 0.5 * S_LLM)
    assert scores["reward"] == pytest.approx(0.6208, abs=0.005)


def test_the_split_picks_the_exact_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMI_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(rewards, "default_tools", fake_tools)
    monkeypatch.setattr(Judge, "from_context", classmethod(lambda cls, ctx: judge()))

    def score(split: str) -> float:
        info = {"question": "Three charts.", "image_num": 3, "split": split}
        return compute_score("interleaved", charts(2), "", info)["score"]

    # image_num_score on "train": 2 / 3; image_num_score_eval elsewhere: 2 != 3, so 0
    assert score("train") == pytest.approx(0.2 * 2 / 3 + 0.3 * S_MLLM * 2 / 3 + 0.5 * S_LLM)
    assert score("test") == pytest.approx(0.2 * 0 + 0.3 * S_MLLM * 0 + 0.5 * S_LLM)
    assert score("validation") == pytest.approx(0.3375, abs=0.005)
    trl = reward(tmp_path)(prompts=["Three charts."], completions=[charts(2)], image_num=[3],
                           extra_info=[{"split": "test"}])
    assert trl == pytest.approx([0.5 * S_LLM])


# The text judge's weights


@pytest.mark.parametrize(("text_judge", "expected"), [
    ("1.4,0.6", 0.2 + 0.3 * 0.75 + 0.5 * ((1.4 * 5 + 0.6 * 2) / 2 - 1) / 4),  # LLMs: 0.8125
    ("1.5,0.5", 0.2 + 0.3 * 0.75 + 0.5 * ((1.5 * 5 + 0.5 * 2) / 2 - 1) / 4),  # MLLMs: 0.83125
])
def test_text_judge_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text_judge: str,
                            expected: float) -> None:
    monkeypatch.setenv("LLMI_TEXT_JUDGE_WEIGHTS", text_judge)
    ctx = Context()
    weights = RewardWeights.from_setting(ctx.reward_weights, ctx.text_judge_weights)
    judge_ = Judge(llm=answering('{"text": 5, "image": 2}'), vlm=answering(VISION),
                   weights=weights)

    scores = reward(tmp_path, judge_).score("One chart.", charts(1), image_num=1)

    assert scores["reward"] == pytest.approx(expected)


def test_the_default_text_judge_weights_are_llm_is_for_llms() -> None:
    assert Context().text_judge_weights == "1.4,0.6"
    assert RewardWeights() == RewardWeights.from_setting("0.2,0.3,0.5", "1.4,0.6")


# Failures are charged once


def test_a_failed_tool_costs_its_image_once(tmp_path: Path) -> None:
    tools = fake_tools(code=FakeTool("code", ("code",), behaviour=failing_chart))
    completion = charts(0) + tag("search", "the river", query="Kamo river") + "\n\n" + (
        tag("code", "rain", code="plt.bar([1], [2])"))

    scores = reward(tmp_path, tools=tools).score("Two images.", completion, image_num=2)
    strict = reward(tmp_path, tools=tools, rules=RewardRules.STRICT).score(
        "Two images.", completion, image_num=2)

    # one <image>, one <fail_to_generate_image>: image_num_score = 1 / 2
    assert scores["rules"] == {"tag_validity": 1.0, "tool_success": 0.5, "image_count": 0.5}
    assert scores["reward"] == pytest.approx(0.2 * 0.5 + 0.3 * S_MLLM * 0.5 + 0.5 * S_LLM)
    assert scores["reward"] == pytest.approx(0.55, abs=0.005)
    # strict: S_num = 1 * 0.5 * 0.5
    assert strict["reward"] == pytest.approx(0.2 * 0.25 + 0.3 * S_MLLM * 0.25 + 0.5 * S_LLM)


def test_a_malformed_tag_costs_its_image_once(tmp_path: Path) -> None:
    completion = charts(1) + "<imgen>{'source': 'search', 'description': 'x'}</imgen>\n\nEnd."

    scores = reward(tmp_path).score("Two images.", completion, image_num=2)

    # LLM-I's is_image_valid refuses a tag without params: one <image> of two asked
    assert scores["rules"] == {"tag_validity": 0.5, "tool_success": 1.0, "image_count": 0.5}
    assert scores["reward"] == pytest.approx(0.2 * 0.5 + 0.3 * S_MLLM * 0.5 + 0.5 * S_LLM)


# LLM-I's judge rules


def test_more_than_ten_images_get_the_lowest_vision_scores_unasked(tmp_path: Path) -> None:
    judge_ = judge()

    scores = reward(tmp_path, judge_).score("Many charts.", charts(11), image_num=99)

    # 11 > 10: quality, task and text-image relevance are 1, 1, 1, so mllm_score = 0
    assert judge_.vlm.calls == []
    assert scores["vision"] == {"quality": 1, "task_relevance": 1, "text_image_relevance": 1}
    assert scores["reward"] == pytest.approx(0.2 * 1 + 0.3 * 0 * 1 + 0.5 * S_LLM)
    assert scores["reward"] == pytest.approx(0.5375, abs=0.005)


def test_an_answer_of_images_alone_gets_the_lowest_text_score(tmp_path: Path) -> None:
    completion = tag("code", "rain", code="plt.bar([1], [2])")

    scores = reward(tmp_path).score("One chart.", completion, image_num=1)

    # the rendered answer is "<image>" alone: text = 1, image = 3 as judged
    s_llm = ((1.4 * 1 + 0.6 * 3) / 2 - 1) / 4  # 0.15
    assert scores["llm"] == {"text": 1, "image": 3}
    assert scores["reward"] == pytest.approx(0.2 * 1 + 0.3 * S_MLLM * 1 + 0.5 * s_llm)
    assert scores["reward"] == pytest.approx(0.5, abs=0.005)


def test_unreadable_judges_give_the_lowest_scores(tmp_path: Path) -> None:
    confused = judge(text="A fine document!", vision="Lovely pictures.")

    scores = reward(tmp_path, confused).score("One chart.", charts(1), image_num=1)

    # every score reads as 1: llm_score = mllm_score = 0
    assert scores["reward"] == pytest.approx(0.2 * 1 + 0.3 * 0 * 1 + 0.5 * 0)
    assert scores["unknown"] == ["llm.text", "llm.image", "vision.quality",
                                 "vision.task_relevance", "vision.text_image_relevance"]
    assert len(confused.llm.calls) == len(confused.vlm.calls) == 2  # one retry each


def test_a_score_missing_from_an_answer_is_the_lowest(tmp_path: Path) -> None:
    scores = reward(tmp_path, judge(text="Text: 4")).score("One chart.", charts(1), image_num=1)

    # text = 4, image read as 1: llm_score = ((1.4 * 4 + 0.6 * 1) / 2 - 1) / 4 = 0.525
    assert scores["llm"] == {"text": 4, "image": None}
    assert scores["reward"] == pytest.approx(0.2 + 0.3 * S_MLLM + 0.5 * 0.525)


def test_evaluation_keeps_unreadable_scores_apart(tmp_path: Path) -> None:
    confused = judge(text="A fine document!", vision="Lovely pictures.")

    strict = reward(tmp_path, confused, rules=RewardRules.STRICT).score(
        "One chart.", charts(1), image_num=1)

    # strict rules leave unknown terms out: the rules alone, S_num = 1
    assert strict["reward"] == pytest.approx(1.0)
    assert len(strict["unknown"]) == 5


def test_no_images_asked_for_none(tmp_path: Path) -> None:
    judge_ = judge()

    scores = reward(tmp_path, judge_).score("No pictures.", INTRO, image_num=-1)

    # image_num_score = 1; no <image>: 5, 5, 5, so mllm_score = 1
    assert judge_.vlm.calls == []
    assert scores["reward"] == pytest.approx(0.2 * 1 + 0.3 * 1 * 1 + 0.5 * S_LLM)
    assert scores["reward"] == pytest.approx(0.8375, abs=0.005)


# The two departures


def test_no_free_image_credit(tmp_path: Path) -> None:
    scores = reward(tmp_path).score("Kyoto.", INTRO, image_num=0)

    llm_i = 0.2 * 1 + 0.3 * 1 * 1 + 0.5 * S_LLM  # no <image>: 5, 5, 5
    assert llm_i == pytest.approx(0.8375)
    # llmi: asked for images (image_num 0 allows any) and none made: S_mllm = 0
    assert scores["reward"] == pytest.approx(0.2 * 1 + 0.3 * 0 * 1 + 0.5 * S_LLM)


def test_an_unavailable_service_is_not_charged(tmp_path: Path) -> None:
    tools = fake_tools(search=FakeTool("search", ("query",), behaviour=out_of_quota))
    completion = charts(1) + tag("search", "the river", query="Kamo river")

    excluded = reward(tmp_path, tools=tools).score("Two images.", completion, image_num=2)
    charged = reward(tmp_path, tools=tools, exclude_infrastructure=False).score(
        "Two images.", completion, image_num=2)

    # LLM-I: one <image> of two, image_num_score = 1 / 2
    assert charged["reward"] == pytest.approx(0.2 * 0.5 + 0.3 * S_MLLM * 0.5 + 0.5 * S_LLM)
    # llmi: the slot counts as the image it would have been, image_num_score = 2 / 2
    assert excluded["infrastructure_failures"] == 1
    assert excluded["reward"] == pytest.approx(0.2 * 1 + 0.3 * S_MLLM * 1 + 0.5 * S_LLM)
