"""``llmi eval --protocol llm-i``: LLMI-Bench written and judged as LLM-I's evaluation does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import BadRequestError, OpenAI

from helpers import ScriptedModel, gradient_png, tag
from llmi.artifacts import ArtifactStore
from llmi.cli import main
from llmi.evaluation.scorers.rubric import LlmIRubricScorer, parse_llm_i_answer
from llmi.prompts import llm_i_training_prompt
from openai_standin import chat_server
from test_eval import judged_server, message_text
from test_eval_scorers import item, made, run

CORPUS = Path(__file__).parent / "corpus" / "llmi"
JUDGE_SYSTEM = ("You are an expert AI performance evaluator. Your task is to objectively "
                "assess an AI-generated report based on a specific criterion.")
CHART = tag("code", "Monthly rainfall", code="plt.bar(['May', 'Jun'], [160, 230])")
BROKEN = tag("code", "Rainfall by year", code="raise ValueError('no data')")
PLANS = {
    "rainfall": f"Kyoto is wet.\n{CHART}\nMost rain falls in June.\n{BROKEN}\nThat is all.",
    "fox": "A fox, in words only.",
}
# LLMI-Bench's form: a JSON list of items with a prompt and criteria r1...r10.
BENCH = [
    {"prompt": "A short report on rainfall in Kyoto, with charts.",
     "r1": "Has a chart of monthly rain", "r2": "Explains the rainy season",
     "r3": "Charts rain by year"},
    {"prompt": "A two-line fable about a fox.",
     "r1": "Is two lines long", "r2": "Has a moral", "r3": "Stars a fox"},
]
# What the judge answers, by criterion. LLM-I reads only an answer that is one JSON
# object, so "Score: 2" is its -1, left out; "2" as a string is int("2") = 2.
VERDICTS = {
    "Has a chart of monthly rain": '{"score": 2, "justification": "a bar chart"}',
    "Explains the rainy season": '{"score": 1, "justification": "briefly"}',
    "Charts rain by year": "Score: 2",
    "Is two lines long": '{"score": 0, "justification": "one line"}',
    "Has a moral": '{"score": "2", "justification": "yes"}',
    "Stars a fox": '{"score": 2}',
}


def answer(body: dict[str, Any]) -> str:
    system = message_text(body["messages"][0])
    user = message_text(body["messages"][-1])
    if system == llm_i_training_prompt():
        return next(plan for word, plan in PLANS.items() if word in user)
    if system == JUDGE_SYSTEM:
        asked = user.split("## CRITERION TO EVALUATE:\n        ")[1].split("\n")[0]
        return VERDICTS[asked]
    return "```python\nplt.plot([1, 2])\n```"  # a repair, were one asked for


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    # Repairs are on in the environment: the protocol turns them off.
    with judged_server(answer, monkeypatch, repair_rounds=2) as (_, seen):
        yield seen


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    path = tmp_path / "llmi_bench.json"
    path.write_text(json.dumps(BENCH), encoding="utf-8")
    return path


def bodies(seen: list[dict], system: str) -> list[dict]:
    return [r["body"] for r in seen if message_text(r["body"]["messages"][0]) == system]


@pytest.mark.slow
def test_llm_i_protocol_writes_in_one_pass_and_judges_as_llm_i(
    served: list[dict], bench: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"

    assert main(["eval", str(bench), "--out", str(out), "--protocol", "llm-i",
                 "--scorer", "rubric"]) == 0

    # The planner got LLM-I's training prompt, its published example in it.
    planned = bodies(served, llm_i_training_prompt())
    assert len(planned) == 2 and all(body["temperature"] == 1.0 for body in planned)
    assert (CORPUS / "training_prompt_example.txt").read_text(encoding="utf-8").strip() \
        in llm_i_training_prompt()
    # No repair ran, though a chart failed and LLMI_REPAIR_ROUNDS is 2.
    assert len(served) == len(planned) + 6
    manifest = json.loads((out / "items" / "0" / "manifest.json").read_text())
    assert [slot["ok"] for slot in manifest["slots"]] == [True, False]
    assert [(slot["attempts"], slot["repairs"]) for slot in manifest["slots"]] == [(1, [])] * 2

    judged = bodies(served, JUDGE_SYSTEM)
    assert len(judged) == 6
    assert all(b["temperature"] == 0 and b["response_format"] == {"type": "json_object"}
               for b in judged)
    chart = next(b for b in judged if "Has a chart" in message_text(b["messages"][1]))
    before, image, after = chart["messages"][1]["content"]
    assert before["text"].startswith(
        "\n        # CONTEXT\n        ## Original Benchmark Prompt:\n        "
        "A short report on rainfall in Kyoto, with charts.\n\n"
        "        ## AI-Generated Report Text (Images are provided visually):\n"
        "        Kyoto is wet.\n\n")
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert after["text"].startswith("\n\nMost rain falls in June.\n\n<fail_to_generate_image>")
    assert "## CRITERION TO EVALUATE:\n        Has a chart of monthly rain\n" in after["text"]

    lines = {line["id"]: line for line in map(json.loads, (out / "results.jsonl").open())}
    assert {line["protocol"] for line in lines.values()} == {"llm-i"}
    rain, fox = (lines[i]["scores"]["rubric"] for i in ("0", "1"))
    assert [c["score"] for c in rain["details"]["criteria"]] == [2, 1, None]
    assert (rain["details"]["points"], rain["details"]["max_points"]) == (3, 4)
    assert [c["score"] for c in fox["details"]["criteria"]] == [0, 2, 2]
    assert (fox["details"]["points"], fox["details"]["max_points"]) == (4, 6)

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["protocol"], summary["graph"]) == ("llm-i", "document")
    rubric = summary["scorers"]["rubric"]
    # Total over total: (3 + 4) / (4 + 6); the mean of the items' ratios beside it.
    assert rubric["score"] == pytest.approx(7 / 10)
    assert rubric["mean_item_score"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert "protocol llm-i" in (out / "index.html").read_text()

    # An output folder holds one protocol's results.
    assert main(["eval", str(bench), "--out", str(out), "--scorer", "rubric"]) == 2


def test_llm_i_protocol_takes_one_candidate(
    served: list[dict], bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    assert main(["eval", str(bench), "--out", str(out), "--protocol", "llm-i",
                 "--candidates", "2"]) == 2
    assert "--candidates" in capsys.readouterr().err
    assert served == [] and not (out / "results.jsonl").exists()


@pytest.mark.parametrize(("text", "score"), [
    ('{"score": 2, "justification": "ok"}', 2),
    ('  {"score": "1"}\n', 1),
    ('{"score": 1.9}', 1),  # int(), as LLM-I reads it
])
def test_llm_i_reads_a_whole_json_answer(text: str, score: int) -> None:
    assert parse_llm_i_answer(text)[0] == score


@pytest.mark.parametrize("text", [
    '```json\n{"score": 2}\n```', "Score: 2", '{"score": 3}', '{"score": "2/2"}', '[2]', "",
])
def test_llm_i_leaves_out_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="score|JSON"):
        parse_llm_i_answer(text)


def test_an_item_with_input_images_is_judged_in_eval_mm_form(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    photo, drawn = store.put(gradient_png(1)), store.put(gradient_png(2))
    judge = ScriptedModel(script=lambda messages, kwargs: '{"score": 1}')
    document = {"inputs": [photo], "results": [made(0, drawn)], "segments": [
        {"kind": "text", "text": "Your photo, in winter:"}, {"kind": "slot", "slot": 0}]}

    scored = LlmIRubricScorer(judge).score(
        run(item(criteria=["Shows snow"], prompt="Show my photo in winter."), **document), store)

    assert (scored["details"]["points"], scored["details"]["max_points"]) == (1, 2)
    call = judge.calls[0]
    assert call["response_format"] == {"type": "json_object"}
    kinds = [part["type"] for part in call["messages"][1].content]
    assert kinds == ["text", "image_url", "text", "image_url", "text"]
    first, _, second, _, _ = (part.get("text") for part in call["messages"][1].content)
    # eval_mm.py's sentence; the input image after the prompt, the made one at its mark.
    assert "The full context, including the original prompt's text and images" in first
    assert first.endswith("        Show my photo in winter.")
    assert second.endswith("Your photo, in winter:\n\n")


def test_json_mode_is_refused_unless_a_message_asks_for_json() -> None:
    # OpenAI refuses it, so LLM-I's judge prompt, which runs in JSON mode, must say "JSON"
    # (the protocol test above sends it through this same refusal).
    with chat_server('{"score": 2, "justification": "met"}') as (url, seen):
        client = OpenAI(base_url=url, api_key="k", max_retries=0)
        ask = {"model": "gpt-4o", "response_format": {"type": "json_object"}}
        with pytest.raises(BadRequestError, match="must contain the word 'json'"):
            client.chat.completions.create(
                messages=[{"role": "user", "content": "Grade the report."}], **ask)
        reply = client.chat.completions.create(
            messages=[{"role": "user", "content": "Grade the report; answer in JSON."}], **ask)
    assert json.loads(reply.choices[0].message.content)["score"] == 2 and len(seen) == 2
