"""``Evaluation`` driven directly: errors and retries, a torn or broken results file,
failing scorers, concurrency, per-split summaries and the report files.

The graph is the real document graph with a scripted planner and stand-in tools; no
HTTP, no judge models.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from rich.console import Console

from helpers import FakeTool, ScriptedModel, fake_tools, gradient_png, tag
from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.evaluation.records import EvalItem, ItemRun, ItemScore
from llmi.evaluation.report import item_dir
from llmi.evaluation.results import ResultsError, ResultsFile
from llmi.evaluation.runner import RESULTS, Evaluation
from llmi.evaluation.scorers.reward import RewardScorer
from llmi.evaluation.scorers.tool_use import ToolUseScorer
from llmi.graphs.document import build_graph
from llmi.judge import Judge
from llmi.tools.registry import ToolRegistry

# Stand-ins


def item(item_id: str, *, split: str = "test", image_num: int = 0,
         tools: Sequence[str] = ()) -> EvalItem:
    return EvalItem(
        id=item_id, prompt=f"Write about {item_id}.", images=[], image_num=image_num,
        tools=list(tools), split=split, criteria=[], data_source="hand", extra={},
    )


def asked(messages: list[BaseMessage]) -> str:
    """The planner's user message: the item's prompt."""
    content = messages[-1].content
    return content if isinstance(content, str) else ""


def plain_plan(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
    return f"# A note\n\n{asked(messages)} In words only."


def calls_for(scripted: ScriptedModel, item_id: str) -> int:
    return sum(asked(call["messages"]) == f"Write about {item_id}." for call in scripted.calls)


def context(tmp_path: Path) -> Context:
    return Context(
        model="m", artifact_dir=str(tmp_path / "artifacts"), out_dir=str(tmp_path / "out"),
        judge_model="", vision_judge_model="", repair_rounds=0, tool_cache=False,
    )


def evaluation(
    tmp_path: Path, items: Sequence[EvalItem], scripted: ScriptedModel, *,
    scorers: Sequence[Any] = (), tools: ToolRegistry | None = None, concurrency: int = 2,
) -> Evaluation:
    registry = tools if tools is not None else fake_tools()
    return Evaluation(
        items, tmp_path / "eval",
        graph=lambda saver: build_graph(model=scripted, tools=registry).compile(
            checkpointer=saver),
        scorers=list(scorers) or [CountingScorer()],
        context=context(tmp_path),
        dataset="hand",
        concurrency=concurrency,
    )


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def result_lines(tmp_path: Path) -> list[dict[str, Any]]:
    text = (tmp_path / "eval" / RESULTS).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


class CountingScorer:
    """Scores 1.0 for split ``x`` and 0.0 otherwise; remembers which items it scored."""

    name = "counting"

    def __init__(self) -> None:
        self.scored: list[str] = []
        self._lock = threading.Lock()

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        with self._lock:
            self.scored.append(run["item"]["id"])
        return ItemScore(score=1.0 if run["item"]["split"] == "x" else 0.0,
                         details={"draft_chars": len(run["document"].get("draft", ""))},
                         errors=[])

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        known = [s["score"] for s in scores if s["score"] is not None]
        return {"score": fmean(known) if known else None, "items": len(scores)}


class BrokenScorer:
    name = "broken"

    def score(self, run: ItemRun, store: ArtifactStore) -> ItemScore:
        raise ValueError("the scorer's judge fell over")

    def summarize(self, scores: Sequence[ItemScore]) -> dict[str, Any]:
        return {"score": None, "items": len(scores),
                "unknown": sum(s["score"] is None for s in scores)}


# Errors and retries


def test_a_failed_item_is_recorded_and_only_it_runs_again(tmp_path: Path) -> None:
    failed_once = threading.Event()

    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        if asked(messages) == "Write about beta." and not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("the planner server is down")
        return plain_plan(messages, kwargs)

    scripted = ScriptedModel(script=script)
    items = [item("alpha"), item("beta"), item("gamma")]

    summary = evaluation(tmp_path, items, scripted).run(quiet())

    by_id = {line["id"]: line for line in result_lines(tmp_path)}
    assert set(by_id) == {"alpha", "beta", "gamma"}
    assert by_id["beta"]["status"] == "error"
    assert "RuntimeError" in by_id["beta"]["error"]
    assert "the planner server is down" in by_id["beta"]["error"]
    assert by_id["beta"]["scores"] == {} and by_id["beta"]["document"] == {}
    for ok in ("alpha", "gamma"):
        assert by_id[ok]["status"] == "ok" and by_id[ok]["error"] is None
        assert by_id[ok]["document"]["draft"].endswith(f"Write about {ok}. In words only.")
        assert by_id[ok]["scores"]["counting"]["score"] == 0.0
    assert [by_id[i]["index"] for i in ("alpha", "beta", "gamma")] == [0, 1, 2]
    assert (summary["items"], summary["ok"], summary["errors"]) == (3, 2, 1)
    assert summary["scorers"]["counting"]["items"] == 2
    assert [calls_for(scripted, i) for i in ("alpha", "beta", "gamma")] == [1, 1, 1]

    again = evaluation(tmp_path, items, scripted).run(quiet())

    assert [calls_for(scripted, i) for i in ("alpha", "beta", "gamma")] == [1, 2, 1]
    lines = result_lines(tmp_path)
    assert len(lines) == 4
    assert lines[-1]["id"] == "beta" and lines[-1]["status"] == "ok"
    assert lines[-1]["document"]["draft"].endswith("Write about beta. In words only.")
    assert [line["status"] for line in lines[:3]].count("error") == 1
    assert (again["items"], again["ok"], again["errors"]) == (3, 3, 0)
    assert again["scorers"]["counting"]["items"] == 3
    # The last line of an item is what counts when the file is read.
    assert {i: line["status"] for i, line in
            ResultsFile(tmp_path / "eval" / RESULTS).read().items()} == dict.fromkeys(
        ("alpha", "beta", "gamma"), "ok")


def test_a_torn_last_line_is_dropped_and_its_item_scored_again(tmp_path: Path) -> None:
    scripted = ScriptedModel(script=plain_plan)
    items = [item("alpha"), item("beta")]
    evaluation(tmp_path, items, scripted, concurrency=1).run(quiet())
    path = tmp_path / "eval" / RESULTS
    first, second = path.read_text(encoding="utf-8").splitlines()
    torn_id = json.loads(second)["id"]
    kept_id = json.loads(first)["id"]
    # The writer was killed half way through the second line.
    path.write_text(first + "\n" + second[: len(second) // 2], encoding="utf-8")

    scorer = CountingScorer()
    resumed = evaluation(tmp_path, items, scripted, scorers=[scorer], concurrency=1)

    assert path.read_text(encoding="utf-8") == first + "\n"
    summary = resumed.run(quiet())

    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == first
    assert [json.loads(line)["id"] for line in lines] == [kept_id, torn_id]
    assert json.loads(lines[1])["status"] == "ok"
    assert scorer.scored == [torn_id]
    # Its graph had finished: the document comes from its checkpoint, not a new plan.
    assert calls_for(scripted, torn_id) == 1 and calls_for(scripted, kept_id) == 1
    assert (summary["ok"], summary["errors"]) == (2, 0)


def test_a_line_that_is_not_json_names_the_file_and_line(tmp_path: Path) -> None:
    scripted = ScriptedModel(script=plain_plan)
    items = [item("alpha"), item("beta")]
    evaluation(tmp_path, items, scripted).run(quiet())
    path = tmp_path / "eval" / RESULTS
    first, second = path.read_text(encoding="utf-8").splitlines()
    path.write_text(f"{first}\n{{'id': 'oops', broken\n{second}\n", encoding="utf-8")

    with pytest.raises(ResultsError, match=r"line 2\b") as raised:
        evaluation(tmp_path, items, scripted).run(quiet())

    assert str(path) in str(raised.value)
    assert "not JSON" in str(raised.value)
    assert calls_for(scripted, "alpha") == 1 and calls_for(scripted, "beta") == 1

    path.write_text(f"{first}\n[1, 2]\n{second}\n", encoding="utf-8")
    with pytest.raises(ResultsError, match=r"line 2, is not a results line"):
        ResultsFile(path).read()

    path.write_text(f'{first}\n{{"id": "beta", "status": "ok"}}\n', encoding="utf-8")
    with pytest.raises(ResultsError, match=r"line 2, is not a results line \(no index, error, "):
        ResultsFile(path).read()


# Scorers


def test_a_failing_scorer_loses_its_score_and_the_others_keep_theirs(tmp_path: Path) -> None:
    plan = "# Rain\n\nIt rains.\n\n" + tag("diffusion", "rain on a roof", prompt="rain") + "\n\nEnd."
    scripted = ScriptedModel(script=lambda messages, kwargs: plan)
    tools = fake_tools(diffusion=FakeTool(
        "diffusion", ("prompt",), make=lambda call: gradient_png(7, (320, 300))))
    scorers = [CountingScorer(), BrokenScorer(), ToolUseScorer()]

    summary = evaluation(tmp_path, [item("rain", tools=["diffusion"])], scripted,
                         scorers=scorers, tools=tools).run(quiet())

    (line,) = result_lines(tmp_path)
    assert line["status"] == "ok"
    assert line["scores"]["broken"] == {
        "score": None, "details": {},
        "errors": ["the broken scorer failed: ValueError: the scorer's judge fell over"],
    }
    assert line["scores"]["counting"]["score"] == 0.0
    assert line["scores"]["counting"]["details"]["draft_chars"] == len(plan)
    tool_use = line["scores"]["tool_use"]
    assert tool_use["score"] == 1.0 and tool_use["errors"] == []
    assert tool_use["details"]["sources"]["diffusion"]["successes"] == 1
    assert tool_use["details"]["agreement"] == 1.0
    assert summary["scorers"]["broken"] == {"score": None, "items": 1, "unknown": 1}
    assert summary["scorers"]["tool_use"]["score"] == 1.0
    assert summary["ok"] == 1 and summary["errors"] == 0


# Concurrency


def test_items_run_concurrency_at_a_time(tmp_path: Path) -> None:
    together = threading.Barrier(2, timeout=10)
    lock = threading.Lock()
    active, most = 0, 0

    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            # Two planners must be in here at once, or this raises BrokenBarrierError.
            together.wait()
            return plain_plan(messages, kwargs)
        finally:
            with lock:
                active -= 1

    scripted = ScriptedModel(script=script)
    items = [item(name) for name in ("a", "b", "c", "d")]

    summary = evaluation(tmp_path, items, scripted, concurrency=2).run(quiet())

    statuses = {line["id"]: (line["status"], line["error"]) for line in result_lines(tmp_path)}
    assert statuses == dict.fromkeys(("a", "b", "c", "d"), ("ok", None))
    assert summary["ok"] == 4
    assert most == 2


def test_with_concurrency_one_items_do_not_overlap(tmp_path: Path) -> None:
    lock = threading.Lock()
    active, most = 0, 0
    order: list[str] = []

    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            order.append(asked(messages))
        time.sleep(0.02)  # a window in which an overlapping item would be counted
        with lock:
            active -= 1
        return plain_plan(messages, kwargs)

    items = [item(name) for name in ("a", "b", "c")]

    summary = evaluation(tmp_path, items, ScriptedModel(script=script), concurrency=1).run(quiet())

    assert summary["ok"] == 3
    assert most == 1
    assert order == ["Write about a.", "Write about b.", "Write about c."]
    assert [line["id"] for line in result_lines(tmp_path)] == ["a", "b", "c"]


# Summary and report


def test_summary_has_splits_only_with_more_than_one(tmp_path: Path) -> None:
    scripted = ScriptedModel(script=plain_plan)

    one = evaluation(tmp_path / "one", [item("a", split="x"), item("b", split="x")],
                     scripted).run(quiet())

    assert "splits" not in one
    assert one["scorers"]["counting"] == {"score": 1.0, "items": 2}

    items = [item("a", split="x"), item("b", split="y"), item("c", split="y"),
             item("d", split="x")]
    many = evaluation(tmp_path / "many", items, scripted,
                      scorers=[CountingScorer(), ToolUseScorer()]).run(quiet())

    assert set(many["splits"]) == {"x", "y"}
    assert many["splits"]["x"]["counting"] == {"score": 1.0, "items": 2}
    assert many["splits"]["y"]["counting"] == {"score": 0.0, "items": 2}
    assert many["splits"]["x"]["tool_use"]["items"] == 2
    assert many["scorers"]["counting"] == {"score": 0.5, "items": 4}
    assert (many["dataset"], many["graph"], many["items"]) == ("hand", "document", 4)


def test_splits_count_only_items_that_ran(tmp_path: Path) -> None:
    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        if asked(messages) == "Write about b.":
            raise RuntimeError("no planner for b")
        return plain_plan(messages, kwargs)

    items = [item("a", split="x"), item("b", split="y")]

    summary = evaluation(tmp_path, items, ScriptedModel(script=script)).run(quiet())

    # The only item of split "y" failed: one split has results, so no per-split figures.
    assert (summary["ok"], summary["errors"]) == (1, 1)
    assert "splits" not in summary


def test_report_writes_the_summary_the_index_and_a_page_per_item(tmp_path: Path) -> None:
    plan = "# Rain\n\nIt rains.\n\n" + tag("diffusion", "rain on a roof", prompt="rain") + "\n\nEnd."
    scripted = ScriptedModel(script=lambda messages, kwargs: plan)
    tools = fake_tools(diffusion=FakeTool(
        "diffusion", ("prompt",), make=lambda call: gradient_png(9, (320, 300))))
    items = [item("rain", split="x"), item("snow", split="y")]
    run = evaluation(tmp_path, items, scripted, tools=tools,
                     scorers=[CountingScorer(), RewardScorer(Judge()), ToolUseScorer()])
    out = tmp_path / "eval"

    summary = run.run(quiet())

    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(summary))
    assert written["ok"] == 2 and set(written["splits"]) == {"x", "y"}
    assert set(written["scorers"]) == {"counting", "reward", "tool_use"}
    index = (out / "index.html").read_text(encoding="utf-8")
    for item_id in ("rain", "snow"):
        page = item_dir(out, item_id) / "report.html"
        assert page.is_file()
        assert f"items/{item_id}/report.html" in index
        assert f"Write about {item_id}." in page.read_text(encoding="utf-8")
        # The assembler wrote the item's document into its folder too.
        assert (item_dir(out, item_id) / "document.md").is_file()

    for name in ("summary.json", "index.html"):
        (out / name).unlink()
    for item_id in ("rain", "snow"):
        (item_dir(out, item_id) / "report.html").unlink()

    again = run.report(quiet())

    assert again == summary
    assert (out / "summary.json").is_file() and (out / "index.html").is_file()
    assert all((item_dir(out, i) / "report.html").is_file() for i in ("rain", "snow"))
