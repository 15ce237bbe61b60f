"""The trainer rewards, called exactly as TRL's GRPO trainer and verl's reward manager call them."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from llmi.context import Context
from llmi.judge import Judge
from llmi.rewards import DocumentReward, compute_score
from llmi.tools.base import ToolCall, ToolError
from helpers import FakeTool, ScriptedModel, fake_tools, gradient_png, tag
from openai_standin import routed_chat_server

SYSTEM = "You write interleaved documents with <imgen> tags."
GOOD = (
    "<think>Two images: a chart and a photo.</think># Kyoto\n\nRain peaks in June.\n\n"
    + tag("code", "Monthly rain", code="plt.bar(['May', 'Jun'], [160, 230])")
    + "\n\nThe Kamo river.\n\n"
    + tag("search", "The Kamo river", query="Kamo river")
)
BROKEN = "# Kyoto\n\n<imgen>{'source': 'search', 'description': 'x'</imgen>\n\nRain."


def judges() -> Judge:
    def text(messages: list, kwargs: dict) -> str:
        return '{"text": 5, "image": 4}' if "'code'" in messages[-1].text else '{"text": 2, "image": 1}'

    return Judge(llm=ScriptedModel(script=text),
                 vlm=ScriptedModel(script=lambda messages, kwargs: '{"quality": 4, '
                                   '"task_relevance": 4, "text_image_relevance": 4}'))


def quota(call: ToolCall) -> None:
    raise ToolError("out of search credits", kind="quota")


def reward(tmp_path: Path, **overrides: Any) -> DocumentReward:
    options: dict[str, Any] = {
        "context": Context(artifact_dir=str(tmp_path / "artifacts")),
        "judge": judges(),
        "tools": fake_tools(),
    }
    return DocumentReward(**(options | overrides))


def chat(content: str, role: str = "assistant") -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


def test_trl_calls_it_with_conversational_rows_and_extra_columns(tmp_path: Path) -> None:
    logged: dict[str, float] = {}
    columns: dict[str, list[Any]] = {}
    prompts = [[{"role": "system", "content": SYSTEM}, *chat("Rain in Kyoto, 2 images.", "user")]] * 2
    func = reward(tmp_path)

    # As GRPOTrainer._calculate_rewards calls every reward function.
    rewards = func(
        prompts=prompts,
        completions=[chat(GOOD), chat(BROKEN)],
        completion_ids=[[1, 2, 3], [4, 5]],
        trainer_state=None,
        log_metric=logged.__setitem__,
        log_extra=columns.__setitem__,
        extra_info=[{"image_num": 2, "split": "train"}, {"image_num": 2, "split": "train"}],
    )

    assert func.__name__ == "llmi_reward"
    assert len(rewards) == 2 and all(isinstance(value, float) for value in rewards)
    assert rewards[0] > rewards[1]
    assert 0 <= rewards[1] < rewards[0] <= 1
    assert logged["llmi/infrastructure_failures"] == 0.0
    assert logged["llmi/llm_text"] == pytest.approx(3.5)
    assert columns["llmi_infrastructure_failures"] == [0, 0]


def test_standard_rows_with_pil_input_images(tmp_path: Path) -> None:
    edit = FakeTool("edit", ("img_index", "prompt"))
    func = reward(tmp_path, tools=fake_tools(edit=edit))
    photo = Image.open(io.BytesIO(gradient_png(5, (300, 280))))
    completion = "Your photo, in winter.\n\n" + tag("edit", "with snow", img_index=0, prompt="snow")

    rewards = func(prompts=["Show my photo in winter."], completions=[completion],
                   images=[[photo]], image_num=[1])

    assert edit.calls and edit.calls[0].source_image is not None
    assert Image.open(io.BytesIO(edit.calls[0].source_image)).size == (300, 280)
    scores = func.score("Show my photo in winter.", completion,
                        images=[gradient_png(5, (300, 280))], image_num=1)
    assert scores["rules"] == {"tag_validity": 1.0, "tool_success": 1.0, "image_count": 1.0}
    assert rewards[0] == pytest.approx(scores["reward"])


def test_infrastructure_failures_are_left_out_unless_charged(tmp_path: Path) -> None:
    tools = fake_tools(search=FakeTool("search", ("query",), behaviour=quota))
    row = {"prompts": ["Rain in Kyoto."], "completions": [GOOD], "image_num": [2]}
    logged: dict[str, float] = {}

    excluded = reward(tmp_path, tools=tools)(**row, log_metric=logged.__setitem__)
    charged = reward(tmp_path, tools=tools, exclude_infrastructure=False)(**row)
    working = reward(tmp_path / "working")(**row)  # its own tool cache

    assert logged["llmi/infrastructure_failures"] == 1.0
    assert charged[0] < excluded[0]
    scores = reward(tmp_path, tools=tools).score("Rain in Kyoto.", GOOD, image_num=2)
    assert scores["rules"] == {"tag_validity": 1.0, "tool_success": 1.0, "image_count": 1.0}
    assert scores["infrastructure_failures"] == 1
    assert excluded[0] == pytest.approx(working[0])


def test_the_policy_answers_for_its_own_failures(tmp_path: Path) -> None:
    def broken_chart(call: ToolCall) -> None:
        raise ToolError("NameError: name 'dta' is not defined")

    tools = fake_tools(code=FakeTool("code", ("code",), behaviour=broken_chart))
    scores = reward(tmp_path, tools=tools).score("Rain in Kyoto.", GOOD, image_num=2)

    assert scores["infrastructure_failures"] == 0
    assert scores["rules"]["tool_success"] == 0.5
    assert scores["rules"]["image_count"] == 0.5  # lenient: one of two images


def verl_judge(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    if system.startswith("You review drafts"):
        return '{"text": 4, "image": 4}'
    return '{"quality": 5, "task_relevance": 4, "text_image_relevance": 4}'


@pytest.mark.slow
def test_verl_calls_compute_score_with_extra_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chart = "# Rain\n\nJune is wettest.\n\n" + tag(
        "code", "Monthly rain", code="plt.bar(['May', 'Jun'], [160, 230])")
    with routed_chat_server(verl_judge) as (base_url, seen):
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        monkeypatch.setenv("LLMI_JUDGE_MODEL", "judge")
        monkeypatch.setenv("LLMI_VISION_JUDGE_MODEL", "judge")
        # As verl's NaiveRewardManager calls a custom reward function.
        made = compute_score(
            data_source="interleaved", solution_str=chart, ground_truth="",
            extra_info={"prompt": chat("Rain in Kyoto, one chart.", "user"), "image_num": 1},
        )
        none = compute_score(
            data_source="interleaved", solution_str="Just words.", ground_truth="",
            extra_info={"question": "Rain in Kyoto, no pictures.", "image_num": -1},
        )

    assert set(made) == set(none)
    assert made["rules_tool_success"] == 1.0 and made["rules_image_count"] == 1.0
    assert made["llm_text"] == 4.0 and made["vision_quality"] == 5.0
    assert math.isnan(none["vision_quality"])
    assert made["infrastructure_failures"] == 0.0
    assert 0.5 < made["score"] <= 1
    # The vision judge saw the chart itself.
    vision = [r for r in seen if isinstance(r["body"]["messages"][1]["content"], list)]
    assert any(part.get("type") == "image_url"
               for part in vision[0]["body"]["messages"][1]["content"])
    assert json.dumps(made)  # plain numbers, as verl's metrics expect
