"""Custom stream events: slots, repairs, candidates and the written document."""

from __future__ import annotations

from collections import defaultdict

from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_tts_graph
from llmi.judge import Judge
from llmi.tools.base import ToolError

from helpers import FakeTool, ScriptedModel, fake_tools, model, tag


def events(graph, context: Context, inputs: dict) -> list[dict]:
    # subgraphs=True: test-time scaling runs each candidate's tools in a subgraph.
    chunks = graph.stream(inputs, context=context, stream_mode="custom", subgraphs=True)
    return [event for _, event in chunks]


def test_each_slot_is_queued_started_and_finished_or_failed(context: Context) -> None:
    def fail(call) -> None:
        raise ToolError("no result for the query")

    draft = tag("diffusion", prompt="fox") + tag("search", query="q") + tag("edit", img_index=0, prompt="p")
    tools = fake_tools(search=FakeTool("search", ("query",), behaviour=fail))
    context.repair_rounds = 0
    seen = events(build_graph(model=model(draft), tools=tools).compile(), context, {"prompt": "p"})
    statuses = defaultdict(list)
    for event in seen:
        if event["llmi"] == "slot":
            statuses[event["slot"]].append(event["status"])
    assert statuses == {0: ["queued", "started", "finished"], 1: ["queued", "started", "failed"],
                        2: ["queued", "started", "finished"]}
    ended = [e for e in seen if e["llmi"] == "slot" and e["status"] in ("finished", "failed")]
    assert all(e["seconds"] >= 0 and e["source"] for e in ended)
    assert seen[-1]["llmi"] == "document" and seen[-1]["outputs"]["manifest"].endswith("manifest.json")


def test_repairs_are_announced(context: Context) -> None:
    broken = tag("code", "squares", code="plt.plot(x)")
    fixed = "```python\nplt.plot([1, 2])\n```"
    calls = []

    def fails_once(call) -> None:
        calls.append(call)
        if len(calls) == 1:
            raise ToolError("NameError: name 'x' is not defined")

    tools = fake_tools(code=FakeTool("code", ("code",), behaviour=fails_once))
    seen = events(build_graph(model=model(broken, fixed), tools=tools).compile(), context, {"prompt": "p"})
    [repair] = [e for e in seen if e["llmi"] == "repair"]
    assert (repair["slot"], repair["kind"]) == (0, "code") and "NameError" in repair["failed"]


def test_candidates_kept_and_pruned_are_announced(context: Context) -> None:
    def writer(messages, kwargs) -> str:
        if "seed" in kwargs:
            return f"Plan {kwargs['seed']}.\n\n" + tag("search", query=f"q{kwargs['seed']}")
        return messages[-1].text.split("DOCUMENT:\n", 1)[1].split("\n\nIMAGES:", 1)[0]

    context.candidates, context.keep = 3, 1
    graph = build_tts_graph(model=ScriptedModel(script=writer), judge=Judge(), tools=fake_tools())
    seen = events(graph.compile(), context, {"prompt": "p"})
    verdicts = {e["id"]: e["status"] for e in seen if e["llmi"] == "candidate"}
    assert verdicts == {"c0": "kept", "c1": "pruned", "c2": "pruned"}
    assert {e.get("candidate") for e in seen if e["llmi"] == "slot"} == {"c0"}
