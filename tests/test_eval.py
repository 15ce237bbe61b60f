"""``llmi eval`` end to end: a dataset, an OpenAI-compatible stand-in, every scorer, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmi.cli import main
from helpers import gradient_png, tag
from openai_standin import routed_chat_server

RAIN_PLAN = (
    "# Rain in Kyoto\n\nKyoto is wettest in June.\n\n"
    + tag("code", "Monthly rainfall in Kyoto", code="plt.bar(['May', 'Jun'], [160, 230])")
    + "\n\nThe Kamo river in flood.\n\n"
    + tag("search", "The Kamo river in flood", query="Kamo river flood")
    + "\n\nThe rains end in July."
)
FOX_PLAN = "# The fox\n\nA fox, in words only."
EDIT_PLAN = "Here is your photo, in winter.\n\n" + tag(
    "edit", "The photo with snow", img_index=0, prompt="add snow"
)
PLANS = {"rainfall": RAIN_PLAN, "fox": FOX_PLAN, "winter": EDIT_PLAN}
RUBRIC_ANSWERS = {
    "chart": '{"score": 2, "justification": "there is a bar chart"}',
    "river": 'Score: 1. The river picture is missing.',
    "haiku": "I cannot tell.",
}


def message_text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def _roles(body: dict[str, Any]) -> tuple[str, str]:
    system = "\n".join(message_text(m) for m in body["messages"] if m["role"] == "system")
    user = "\n".join(message_text(m) for m in body["messages"] if m["role"] == "user")
    return system, user


def answer(body: dict[str, Any]) -> str:
    """What the stand-in server says: a plan to the planner, JSON to each judge."""
    system, user = _roles(body)
    if system.startswith("You write documents"):
        return next(plan for word, plan in PLANS.items() if word in user)
    if system.startswith("You review drafts"):
        return '{"text": 4, "image": 3}'
    if system.startswith("You review finished documents"):
        return '{"quality": 4, "task_relevance": 4, "text_image_relevance": 5}'
    if system.startswith("You check one image"):
        return '{"match": "yes", "reason": "it fits"}'
    if system.startswith("You grade"):
        return next(reply for word, reply in RUBRIC_ANSWERS.items()
                    if word in user.rpartition("<criterion>")[2])
    return "flooded river"


def planner_calls(seen: list[dict], word: str) -> int:
    return sum(
        system.startswith("You write documents") and word in user
        for system, user in map(_roles, (request["body"] for request in seen))
    )


@contextmanager
def judged_server(
    reply: Callable[[dict[str, Any]], str], monkeypatch: pytest.MonkeyPatch, repair_rounds: int = 1
) -> Iterator[tuple[str, list[dict]]]:
    """An OpenAI-compatible stand-in that answers with ``reply``, set in the environment as
    the planner and both judges; yields (base_url, requests)."""
    with routed_chat_server(reply) as (base_url, seen):
        for name, value in {
            "LLMI_MODEL": "planner", "OPENAI_BASE_URL": base_url,
            "LLMI_JUDGE_MODEL": "text-judge", "LLMI_VISION_JUDGE_MODEL": "vision-judge",
            "LLMI_REPAIR_ROUNDS": str(repair_rounds),
        }.items():
            monkeypatch.setenv(name, value)
        yield base_url, seen


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[dict]]]:
    with judged_server(answer, monkeypatch) as served:
        yield served


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def dataset(tmp_path: Path) -> Path:
    (tmp_path / "photo.png").write_bytes(gradient_png(3, (320, 300)))
    return write_jsonl(tmp_path / "bench.jsonl", [
        {"id": "rain", "prompt": "A short report on rainfall in Kyoto, with a chart.",
         "criteria": ["Has a chart of monthly rain", "Shows the river", "Ends with a haiku"],
         "tools": ["code", "search"], "split": "report"},
        {"id": "fox", "prompt": "A two-line fable about a fox, no pictures.",
         "image_num": -1, "split": "story"},
        {"id": "snow", "prompt": "Show my photo in winter.", "images": ["photo.png"],
         "image_num": 1, "tools": ["edit"], "split": "edit"},
    ])


@pytest.mark.slow
def test_eval_scores_a_dataset_with_every_scorer(
    served: tuple[str, list[dict]], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    code = main(["eval", str(dataset(tmp_path)), "--out", str(out), "--scorer", "rubric",
                 "--scorer", "reward", "--scorer", "tool-use", "--concurrency", "2"])

    assert code == 0
    lines = [json.loads(text) for text in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["fox", "rain", "snow"]
    by_id = {line["id"]: line for line in lines}
    assert all(line["status"] == "ok" for line in lines)

    rubric = by_id["rain"]["scores"]["rubric"]
    assert [c["score"] for c in rubric["details"]["criteria"]] == [2, 1, None]
    assert (rubric["details"]["points"], rubric["details"]["max_points"]) == (3, 4)
    assert rubric["score"] == pytest.approx(0.75)
    assert "criterion 3" in rubric["errors"][0]

    # Search and edit have no backend here: failures of the service, not of the document.
    reward = by_id["rain"]["scores"]["reward"]["details"]
    assert reward["infrastructure_failures"] == 1
    assert reward["rules"]["tool_success"] == 1.0
    assert reward["llm"] == {"text": 4, "image": 3}
    assert reward["vision"]["text_image_relevance"] == 5
    snow = by_id["snow"]["scores"]["reward"]["details"]
    assert snow["infrastructure_failures"] == 1 and snow["vision"] == {}
    assert by_id["fox"]["scores"]["reward"]["details"]["rules"]["image_count"] == 1.0

    tool_use = by_id["rain"]["scores"]["tool_use"]["details"]
    assert tool_use["sources"]["code"]["successes"] == 1
    assert tool_use["sources"]["search"]["infrastructure_failures"] == 1
    assert tool_use["agreement"] == 1.0

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items"], summary["ok"], summary["errors"]) == (3, 3, 0)
    assert summary["scorers"]["rubric"]["points"] == 3
    assert summary["scorers"]["reward"]["infrastructure_failures"] == 2
    assert summary["scorers"]["tool_use"]["sources"]["edit"]["infrastructure_failures"] == 1
    assert set(summary["splits"]) == {"report", "story", "edit"}
    index = (out / "index.html").read_text()
    for item in ("rain", "fox", "snow"):
        assert (out / "items" / item / "report.html").is_file()
        assert f"items/{item}/report.html" in index
        assert (out / "items" / item / "document.md").is_file()


def test_eval_runs_the_test_time_scaling_graph(
    served: tuple[str, list[dict]], tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "fox.jsonl", [
        {"id": "fox", "prompt": "A two-line fable about a fox, no pictures.", "image_num": -1},
    ])
    out = tmp_path / "eval"

    assert main(["eval", str(data), "--out", str(out), "--candidates", "2", "--keep", "1"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["graph"] == "tts"
    assert planner_calls(served[1], "fox") == 2
    manifest = json.loads((out / "items" / "fox" / "manifest.json").read_text())
    assert len(manifest["candidates"]) == 2


def test_dataset_and_scorer_errors_are_one_line(
    served: tuple[str, list[dict]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "fine"}\n{"prompt": \n', encoding="utf-8")
    assert main(["eval", str(broken), "--out", str(tmp_path / "a")]) == 2
    assert "line 2" in capsys.readouterr().err

    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "A fox fable about rainfall."}])
    os.environ.pop("LLMI_JUDGE_MODEL")
    os.environ.pop("LLMI_VISION_JUDGE_MODEL")
    assert main(["eval", str(plain), "--out", str(tmp_path / "b"), "--scorer", "rubric"]) == 2
    assert "LLMI_VISION_JUDGE_MODEL" in capsys.readouterr().err
    assert not (tmp_path / "b" / "results.jsonl").exists()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_evaluation_resumes_without_repeating_finished_items(tmp_path: Path) -> None:
    release = threading.Event()

    def stalling(body: dict[str, Any]) -> str:
        system, user = _roles(body)
        if system.startswith("You write documents") and "second" in user:
            release.wait(60)
        return f"# Fable\n\n{user.splitlines()[0]} as a fable."

    data = write_jsonl(tmp_path / "three.jsonl", [
        {"id": word, "prompt": f"The {word} fable.", "image_num": -1}
        for word in ("first", "second", "third")
    ])
    out = tmp_path / "eval"
    results = out / "results.jsonl"
    with routed_chat_server(stalling) as (base_url, seen):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMI_", "OPENAI_"))}
        env |= {"LLMI_MODEL": "planner", "OPENAI_BASE_URL": base_url,
                "LLMI_ARTIFACTS": str(tmp_path / "artifacts")}
        command = [sys.executable, "-m", "llmi.cli", "eval", str(data), "--out", str(out),
                   "--concurrency", "1", "--scorer", "tool-use"]
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_for(lambda: results.exists() and results.read_text().count("\n") == 1,
                     "the first item's line")
            wait_for(lambda: planner_calls(seen, "second") == 1, "the second item to start")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        assert [json.loads(t)["id"] for t in results.read_text().splitlines()] == ["first"]
        release.set()

        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert second.returncode == 0, second.stderr
    assert "1 of 3 items already done" in second.stderr
    lines = [json.loads(text) for text in results.read_text().splitlines()]
    assert [line["id"] for line in lines][0] == "first"
    assert sorted(line["id"] for line in lines) == ["first", "second", "third"]
    assert all(line["status"] == "ok" for line in lines)
    assert planner_calls(seen, "first") == 1
    assert planner_calls(seen, "third") == 1
    assert json.loads((out / "summary.json").read_text())["ok"] == 3
