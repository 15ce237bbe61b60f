"""Test-time scaling: candidates sampled in parallel, screened, produced, ranked, polished."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime

from llmi.context import Context
from llmi.graphs.tts import build_tts_graph
from llmi.nodes.candidates import NoCandidate, sampling
from llmi.judge import Judge, RewardWeights
from llmi.prompts import POLISH_SYSTEM
from llmi.judge.prompts import TEXT_JUDGE_SYSTEM
from llmi.state import DocumentState

from helpers import FakeTool, ScriptedModel, fake_tools, tag

# The text judge's scores of each plan, by the seed that wrote it.
PLAN_SCORES = {0: 2, 1: 5, 2: 1, 3: 4}


def plan(seed: int) -> str:
    return f"# Plan {seed}\n\nIntro of plan {seed}.\n\n" + tag(
        "search", f"picture of plan {seed}", query=f"plan {seed} picture"
    ) + f"\n\nOutro of plan {seed}."


def writer(messages, kwargs) -> str:
    """The planner writes a plan per seed; the polisher echoes the document, revised."""
    if messages[0].text == POLISH_SYSTEM:
        document = messages[-1].text.split("DOCUMENT:\n", 1)[1].split("\n\nIMAGES:", 1)[0]
        return document.replace("Intro of", "Polished intro of")
    return plan(kwargs["seed"])


def text_judge(messages, kwargs) -> str:
    assert messages[0].text == TEXT_JUDGE_SYSTEM
    seed = int(re.search(r"# Plan (\d+)", messages[-1].text).group(1))
    return json.dumps({"text": PLAN_SCORES[seed], "image": PLAN_SCORES[seed]})


def run(context: Context, *, candidates: int, keep: int, tools=None, judge=None, model=None):
    context.candidates, context.keep, context.seed = candidates, keep, 0
    graph = build_tts_graph(
        model=model or ScriptedModel(script=writer),
        judge=judge if judge is not None else Judge(llm=ScriptedModel(script=text_judge)),
        tools=tools or fake_tools(),
    ).compile()
    out = graph.invoke({"prompt": "A guide"}, context=context)
    return out, json.loads(Path(out["outputs"]["manifest"]).read_text())


def test_pruned_candidates_run_no_tools(context: Context) -> None:
    search = FakeTool("search", ("query",))
    _, manifest = run(context, candidates=4, keep=2, tools=fake_tools(search=search))
    queried = sorted(call.request["params"]["query"] for call in search.calls)
    assert queried == ["plan 1 picture", "plan 3 picture"]
    pruned = {c["id"]: c["pruned"] for c in manifest["candidates"]}
    assert pruned == {"c0": True, "c1": False, "c2": True, "c3": False}


def test_the_best_finished_document_wins_and_the_manifest_says_why(context: Context) -> None:
    _, manifest = run(context, candidates=4, keep=2)
    assert manifest["winner"] == "c1"
    by_id = {c["id"]: c for c in manifest["candidates"]}
    assert by_id["c1"]["scores"]["reward"] >= by_id["c3"]["scores"]["reward"]
    assert by_id["c0"]["scores"] is None and by_id["c0"]["screen"]["llm"]["text"] == 2
    assert {c["id"]: c["sampling"]["seed"] for c in manifest["candidates"]} == {
        "c0": 0, "c1": 1, "c2": 2, "c3": 3}
    assert len({c["sampling"]["temperature"] for c in manifest["candidates"]}) == 4
    assert "Plan 1" in (Path(context.out_dir) / "document.md").read_text()


def test_a_failed_tool_can_lose_the_ranking(context: Context) -> None:
    def fail_plan_1(call) -> None:
        if call.request["params"]["query"] == "plan 1 picture":
            raise RuntimeError("no image")

    tools = fake_tools(search=FakeTool("search", ("query",), behaviour=fail_plan_1))
    _, manifest = run(context, candidates=4, keep=2, tools=tools)
    assert manifest["winner"] == "c3"


def test_the_text_is_polished_around_images_that_stay_in_place(context: Context) -> None:
    out, manifest = run(context, candidates=2, keep=1)
    texts = [s["text"] for s in out["segments"] if s["kind"] == "text"]
    assert texts == ["# Plan 1\n\nPolished intro of plan 1.", "Outro of plan 1."]
    assert [s["kind"] for s in out["segments"]] == ["text", "slot", "text"]
    assert manifest["text"].count("<image>") == 1


def test_a_polish_that_moves_an_image_is_not_used(context: Context) -> None:
    def mover(messages, kwargs) -> str:
        if messages[0].text == POLISH_SYSTEM:
            return "All new text with no image marker."
        return plan(kwargs["seed"])

    out, _ = run(context, candidates=1, keep=1, model=ScriptedModel(script=mover))
    assert out["segments"][0]["text"] == "# Plan 0\n\nIntro of plan 0."
    assert any("polish skipped" in f["problem"] for f in out["findings"])


def test_without_judge_models_the_rules_rank_and_ties_go_to_the_first(context: Context) -> None:
    search = FakeTool("search", ("query",))
    _, manifest = run(context, candidates=3, keep=2, judge=Judge(), tools=fake_tools(search=search))
    assert [c["pruned"] for c in manifest["candidates"]] == [False, False, True]
    assert manifest["winner"] == "c0"
    assert all("llm.text" in c["screen"]["unknown"] for c in manifest["candidates"])


def test_weights_change_the_winner(context: Context) -> None:
    # c0's plan scores low with the text judge but asks for the one image requested;
    # c1 scores high but asks for two.
    def two_images(messages, kwargs) -> str:
        if messages[0].text == POLISH_SYSTEM:
            return messages[-1].text.split("DOCUMENT:\n", 1)[1].split("\n\nIMAGES:", 1)[0]
        extra = tag("search", query="second") if kwargs["seed"] == 1 else ""
        return plan(kwargs["seed"]) + extra

    def judge_by(weights: RewardWeights) -> Judge:
        return Judge(llm=ScriptedModel(script=text_judge), weights=weights)

    graph_inputs = {"prompt": "A guide", "image_num": 1}
    winners = []
    for weights in (RewardWeights(num=0.0, mllm=0.0, llm=1.0), RewardWeights(num=1.0, mllm=0.0, llm=0.0)):
        context.candidates, context.keep, context.seed = 2, 2, 0
        graph = build_tts_graph(model=ScriptedModel(script=two_images), judge=judge_by(weights),
                                tools=fake_tools()).compile()
        winners.append(graph.invoke(graph_inputs, context=context)["outputs"])
        winners[-1] = json.loads(Path(winners[-1]["manifest"]).read_text())["winner"]
    assert winners == ["c1", "c0"]


def test_every_candidate_failing_to_plan_fails_the_run(context: Context) -> None:
    def down(messages, kwargs) -> str:
        raise ConnectionError("server down")

    with pytest.raises(NoCandidate, match="server down"):
        run(context, candidates=2, keep=1, model=ScriptedModel(script=down))


def test_sampling_differs_per_candidate_and_repeats(context: Context) -> None:
    first = [sampling(i, context) for i in range(8)]
    assert first == [sampling(i, context) for i in range(8)]
    assert len({s["temperature"] for s in first}) == 8
    assert len({s["seed"] for s in first}) == 8


def test_any_planner_function_plans_each_candidate(context: Context) -> None:
    calls = []

    def planner(state: DocumentState, runtime: Runtime[Context]) -> dict:
        """A planner of its own, with no chat model; it reads the candidate's seed."""
        calls.append((state["candidate"], state["sampling"], state["prompt"]))
        seed = state["sampling"]["seed"]
        return {
            "draft": f"Plan {seed}",
            "segments": [{"kind": "text", "text": f"Plan {seed}"}, {"kind": "slot", "slot": 0}],
            "requests": [{"slot": 0, "source": "search", "description": f"picture {seed}",
                          "params": {"query": f"plan {seed} picture"}, "depends_on": None,
                          "attempt": 0}],
            "results": [],
            "round": 0,
        }

    search = FakeTool("search", ("query",))
    context.candidates, context.keep, context.seed = 3, 2, 0
    graph = build_tts_graph(planner=planner, model=ScriptedModel(script=writer), judge=Judge(),
                            tools=fake_tools(search=search)).compile()
    out = graph.invoke({"prompt": "A guide"}, context=context)

    assert sorted((c, s["seed"], p) for c, s, p in calls) == [
        ("c0", 0, "A guide"), ("c1", 1, "A guide"), ("c2", 2, "A guide")]
    manifest = json.loads(Path(out["outputs"]["manifest"]).read_text())
    assert [c["sampling"] for c in manifest["candidates"]] == [s for _, s, _ in sorted(calls)]
    assert manifest["winner"] == "c0"
    assert sorted(call.request["params"]["query"] for call in search.calls) == [
        "plan 0 picture", "plan 1 picture"]
    assert out["segments"][0]["text"] == "Plan 0"


def test_candidates_hold_only_what_differs(context: Context) -> None:
    context.candidates, context.keep, context.seed = 3, 2, 0
    graph = build_tts_graph(model=ScriptedModel(script=writer), judge=Judge(),
                            tools=fake_tools()).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "differs"}}
    graph.invoke({"prompt": "A guide"}, config, context=context)
    candidates = graph.get_state(config).values["candidates"]
    assert len(candidates) == 3
    for candidate in candidates:
        assert set(candidate["document"]).isdisjoint({"prompt", "inputs", "image_num",
                                                      "candidate", "sampling"})
        assert candidate["document"]["draft"].startswith(f"# Plan {candidate['sampling']['seed']}")
