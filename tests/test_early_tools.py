"""Tools start as their tags close in the planner's streamed draft, and dispatch joins them."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_tts_graph
from llmi.judge import Judge
from llmi.tools.base import ToolCall, ToolError
from llmi.tools.inflight import CALLS, InFlight

from helpers import FakeTool, ScriptedModel, fake_tools, tag
from openai_standin import Completion, Streamed, chat_server

CHART = tag("code", "Rain by month", code="plt.bar([1, 2], [3, 4])")
TAIL = "\n\nThe gardens are greenest in June, and the moss is at its deepest." * 3


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def served(url: str, tmp_path: Path, **fields: Any) -> Context:
    fields = {"seed": 0, **fields}
    return Context(model="qwen3", base_url=url, artifact_dir=str(tmp_path / "artifacts"),
                   out_dir=str(tmp_path / "out"), **fields)


def gated(content: str, first: str, gate: threading.Event) -> Streamed:
    """``content`` streamed with ``first`` as its first piece; the rest waits for ``gate``."""
    return Streamed(Completion(content=content), size=len(first), gate=gate)


def opens(gate: threading.Event) -> Any:
    return lambda call: gate.set()


def run(url: str, tmp_path: Path, tools, **fields: Any) -> dict:
    graph = build_graph(tools=tools).compile()
    return graph.invoke({"prompt": "Kyoto"}, context=served(url, tmp_path, **fields))


def in_flight(folder: Path) -> list[tuple[str, str]]:
    """The calls in flight for artifact folders under ``folder``."""
    return [key for key in CALLS._calls if key[0].startswith(str(folder))]


def test_a_finished_call_left_unjoined_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = InFlight()
    done, running = Future(), Future()
    done.set_result("made")
    assert calls.add(("a", "1"), done) and calls.add(("a", "2"), running)
    monkeypatch.setattr("llmi.tools.inflight.UNCLAIMED_S", 0.0)
    calls.add(("a", "3"), Future())
    assert calls.claim(("a", "1")) is None  # finished, and never joined
    assert calls.claim(("a", "2")) is running  # still running: a request may yet join it


def test_a_chart_runs_while_the_model_still_writes(tmp_path: Path) -> None:
    gate = threading.Event()
    tools = fake_tools(code=FakeTool("code", ("code",), behaviour=opens(gate)))
    first = "# Kyoto\n\n" + CHART
    with chat_server(gated(first + TAIL, first, gate)) as (url, seen):
        out = run(url, tmp_path, tools)
    # The server sent the text after the tag only once the chart had been drawn.
    assert seen[0]["gate_opened"]
    assert len(tools["code"].calls) == 1
    (result,) = out["results"]
    assert result["ok"] and result["provenance"] == {"fake": True}
    assert "moss" in Path(out["outputs"]["markdown"]).read_text()
    assert not in_flight(tmp_path)  # joined, so nothing is left in flight


def test_an_edit_starts_once_the_image_it_edits_is_made(tmp_path: Path) -> None:
    gate = threading.Event()
    tools = fake_tools(edit=FakeTool("edit", ("img_index", "prompt"), behaviour=opens(gate)))
    first = ("# Fox\n\n" + tag("diffusion", "a fox", prompt="a red fox")
             + "\n\nThe fox again.\n\n" + tag("edit", "the fox in snow", img_index=0, prompt="snow"))
    with chat_server(gated(first + TAIL, first, gate)) as (url, seen):
        out = run(url, tmp_path, tools)
    assert seen[0]["gate_opened"]
    assert len(tools["diffusion"].calls) == len(tools["edit"].calls) == 1
    made, edited = out["results"]
    assert edited["provenance"]["edited"] == made["image"]["sha256"]
    (call,) = tools["edit"].calls
    assert call.source_image == Path(made["image"]["uri"].removeprefix("file://")).read_bytes()


@pytest.mark.parametrize("why", ["drawn seed", "early_tools off"])
def test_a_request_dispatch_cannot_join_waits_for_the_draft(why: str, tmp_path: Path) -> None:
    sent_before: list[int] = []
    tools = fake_tools(diffusion=FakeTool(
        "diffusion", ("prompt",), behaviour=lambda call: sent_before.append(seen[0]["sent"])))
    content = "# Fox\n\n" + tag("diffusion", "a fox", prompt="a red fox") + TAIL
    fields = {"seed": -1} if why == "drawn seed" else {"early_tools": False}
    with chat_server(Streamed(Completion(content=content), size=8, pause=0.01)) as (url, seen):
        out = run(url, tmp_path, tools, **fields)
    assert out["results"][0]["ok"]
    assert sent_before == [seen[0]["chunks"]]


def test_a_tool_that_fails_early_fails_its_slot_once(tmp_path: Path) -> None:
    gate = threading.Event()

    def refuse(call: ToolCall) -> None:
        gate.set()
        raise ToolError("the chart's code raised NameError", kind="code")

    tools = fake_tools(code=FakeTool("code", ("code",), behaviour=refuse))
    first = "# Rain\n\n" + CHART
    with chat_server(gated(first + TAIL, first, gate)) as (url, seen):
        out = run(url, tmp_path, tools, repair_rounds=0)
    assert seen[0]["gate_opened"]
    (result,) = out["results"]
    assert not result["ok"] and "NameError" in result["error"]
    assert len(tools["code"].calls) == 1


def test_a_tag_that_proved_to_be_reasoning_is_never_in_the_document(tmp_path: Path) -> None:
    # The chat template opened the <think> block in the prompt: the content starts inside
    # it, so the first tag shows as answer until the "</think>" after it.
    drafted = tag("code", "a first idea", code="plt.plot([9])")
    content = f"Let me plan. {drafted} Better a bar chart.</think># Rain\n\n{CHART}{TAIL}"
    tools = fake_tools()
    with chat_server(Streamed(Completion(content=content), size=6)) as (url, _):
        out = run(url, tmp_path, tools)
    (result,) = out["results"]
    assert result["ok"] and result["description"] == "Rain by month"
    joined = [call for call in tools["code"].calls if call.request["params"]["code"] == "plt.bar([1, 2], [3, 4])"]
    assert len(joined) == 1
    assert "first idea" not in Path(out["outputs"]["markdown"]).read_text()
    assert not in_flight(tmp_path)  # the reasoning's call was withdrawn


def test_candidates_start_no_tool_before_their_plans_are_screened(context: Context) -> None:
    def writer(messages, kwargs) -> str:
        return f"# Plan {kwargs['seed']}\n\n" + tag("code", "chart", code=f"plt.plot([{kwargs['seed']}])")

    context = replace(context, candidates=2, keep=1, seed=0)
    tools = fake_tools()
    graph = build_tts_graph(model=ScriptedModel(script=writer), judge=Judge(), tools=tools).compile()
    graph.invoke({"prompt": "Rain"}, context=context)
    assert len(tools["code"].calls) == 1
