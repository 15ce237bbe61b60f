"""The verifier's repairs: each path fires, is bounded, and is recorded in the manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, SystemMessage
from langgraph.runtime import Runtime

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.judge import Judge
from llmi.nodes.planner import Planner
from llmi.nodes.verifier import Verifier
from llmi.prompts import QUERY_SYSTEM, REPAIR_SYSTEM, RETAG_SYSTEM
from llmi.state import ImageRequest, ImageResult, failed_result
from llmi.tools.base import ToolCall, ToolError
from llmi.tools.images_api import openai_generate
from llmi.tools.registry import ToolRegistry
from llmi.tools.search import search as unconfigured_search

from helpers import FakeTool, ScriptedModel, fake_tools, gradient_png, tag
from images_standin import images_server

RETAG_OPENING = RETAG_SYSTEM.split("\n", 1)[0]
FIXED_CODE = "```python\nplt.plot([1, 3, 2])\n```"


def routed(draft: str, *, query: str = "better query", code: str = FIXED_CODE,
           retag: str = "", fail: tuple[str, ...] = ()) -> ScriptedModel:
    """A chat model that answers the planner with ``draft`` and each repair by its prompt."""

    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        system = next((m.text for m in messages if isinstance(m, SystemMessage)), "")
        kind = ("query" if system == QUERY_SYSTEM else "code" if system == REPAIR_SYSTEM
                else "retag" if system.startswith(RETAG_OPENING) else "plan")
        if kind in fail:
            raise ConnectionError("model server went away")
        return {"query": query, "code": code, "retag": retag, "plan": draft}[kind]

    return ScriptedModel(script=script)


def asked(model: ScriptedModel, system: str) -> list[str]:
    """The user messages of the model's calls under one system prompt (by its opening)."""
    return [call["messages"][-1].text for call in model.calls
            if call["messages"][0].text.startswith(system.split("\n", 1)[0])]


def failing(
    error: str, *, until_attempt: int = 99, kind: str = "no_result"
) -> Callable[[ToolCall], None]:
    """A tool behaviour that fails every attempt below ``until_attempt``."""

    def behaviour(call: ToolCall) -> None:
        if call.request["attempt"] < until_attempt:
            raise ToolError(error, kind=kind)

    return behaviour


def run(context: Context, model: ScriptedModel, tools: ToolRegistry,
        judge: Judge | None = None) -> dict[str, Any]:
    verifier = Verifier(model=model, tools=tools, judge=judge)
    graph = build_graph(model=model, tools=tools, verifier=verifier).compile()
    return graph.invoke({"prompt": "p"}, context=context)


def slots(context: Context) -> dict[int, dict]:
    manifest = json.loads((Path(context.out_dir) / "manifest.json").read_text())
    return {slot["index"]: slot for slot in manifest["slots"]}


def test_failed_code_is_fixed_by_the_model(context: Context) -> None:
    code = FakeTool("code", ("code",), behaviour=lambda call: None if "[1, 3, 2]" in
                    call.request["params"]["code"] else failing("NameError: nope")(call))
    model = routed(tag("code", "a line", code="plt.plot(nope)"))
    run(context, model, fake_tools(code=code))
    slot = slots(context)[0]
    assert slot["ok"] and slot["attempts"] == 2
    assert code.calls[-1].request["params"]["code"] == "plt.plot([1, 3, 2])"
    assert "plt.plot(nope)" in asked(model, REPAIR_SYSTEM)[0]
    assert slot["repairs"] == [{"attempt": 1, "failed": "code: NameError: nope",
                                "tried": "code fixed by the model from the error", "worked": True}]


def test_code_repairs_stop_at_the_repair_rounds(context: Context) -> None:
    context.repair_rounds = 3
    code = FakeTool("code", ("code",), behaviour=failing("SyntaxError"))
    model = routed(tag("code", code="plt.plot(("))
    out = run(context, model, fake_tools(code=code))
    slot = slots(context)[0]
    assert not slot["ok"] and slot["attempts"] == 4 and len(code.calls) == 4
    assert [r["attempt"] for r in slot["repairs"]] == [1, 2, 3]
    assert not any(r["worked"] for r in slot["repairs"])
    assert len(asked(model, REPAIR_SYSTEM)) == 3
    assert [f["slot"] for f in out["findings"] if f.get("repaired")] == [0, 0, 0]


def test_search_tries_a_new_query_then_diffusion(context: Context) -> None:
    context.diffusion_backend = "fake"
    search = FakeTool("search", ("query",), behaviour=failing("no image results for 'kyoto'"))
    diffusion = FakeTool("diffusion", ("prompt",))
    model = routed(tag("search", "Kyoto in the rain", query="kyoto"), query="Kyoto street rain")
    run(context, model, fake_tools(search=search, diffusion=diffusion))
    slot = slots(context)[0]
    assert [c.request["params"]["query"] for c in search.calls] == ["kyoto", "Kyoto street rain"]
    [question] = asked(model, QUERY_SYSTEM)
    assert "Kyoto in the rain" in question and "'kyoto'" in question
    assert "no image results" in question
    assert diffusion.calls[0].request["params"] == {"prompt": "Kyoto in the rain"}
    assert slot["ok"] and slot["source"] == "diffusion" and slot["attempts"] == 3
    assert slot["repairs"] == [
        {"attempt": 1, "failed": "search: no image results for 'kyoto'",
         "tried": "a reformulated search query: 'Kyoto street rain'", "worked": False},
        {"attempt": 2, "failed": "search: no image results for 'kyoto'",
         "tried": "a diffusion image instead of search: 'Kyoto in the rain'", "worked": True},
    ]


def test_search_has_no_diffusion_fallback_without_a_diffusion_backend(context: Context) -> None:
    context.diffusion_backend = ""
    search = FakeTool("search", ("query",), behaviour=failing("download failed", kind="http"))
    diffusion = FakeTool("diffusion", ("prompt",))
    run(context, routed(tag("search", query="q")), fake_tools(search=search, diffusion=diffusion))
    slot = slots(context)[0]
    assert not slot["ok"] and slot["source"] == "search" and "download failed" in slot["error"]
    assert len(search.calls) == 2 and not diffusion.calls
    assert [r["tried"] for r in slot["repairs"]] == ["a reformulated search query: 'better query'"]
    assert slot["repairs"][0]["worked"] is False


def test_a_query_the_model_cannot_give_goes_straight_to_diffusion(context: Context) -> None:
    context.diffusion_backend = "fake"
    search = FakeTool("search", ("query",), behaviour=failing("nothing found"))
    out = run(context, routed(tag("search", "a heron", query="q"), fail=("query",)),
              fake_tools(search=search))
    slot = slots(context)[0]
    assert slot["ok"] and slot["source"] == "diffusion" and len(search.calls) == 1
    assert [r["worked"] for r in slot["repairs"]] == [True]
    problems = [f["problem"] for f in out["findings"]]
    assert "repair failed (ConnectionError: model server went away): nothing found" in problems


def test_diffusion_retries_once_with_a_new_seed(context: Context) -> None:
    context.seed = 5
    diffusion = FakeTool("diffusion", ("prompt",),
                         behaviour=failing("NSFW filter", until_attempt=1))
    run(context, routed("Text.\n" + tag("diffusion", "a fox", prompt="fox")),
        fake_tools(diffusion=diffusion))
    slot = slots(context)[0]
    first, retry = (call.request["params"] for call in diffusion.calls)
    assert "seed" not in first and isinstance(retry["seed"], int) and retry["seed"] != 5
    assert slot["ok"] and slot["attempts"] == 2
    assert slot["repairs"] == [{"attempt": 1, "failed": "diffusion: NSFW filter",
                                "tried": f"diffusion again with a new seed ({retry['seed']})",
                                "worked": True}]


def test_a_failing_diffusion_gets_one_retry_only(context: Context) -> None:
    context.repair_rounds = 5
    context.diffusion_backend = "fake"
    diffusion = FakeTool("diffusion", ("prompt",), behaviour=failing("server error", kind="http"))
    run(context, routed(tag("diffusion", prompt="fox")), fake_tools(diffusion=diffusion))
    slot = slots(context)[0]
    assert not slot["ok"] and len(diffusion.calls) == 2
    [repair] = slot["repairs"]
    assert repair["tried"].startswith("diffusion again with a new seed")


def test_an_edit_whose_source_failed_becomes_diffusion(context: Context) -> None:
    context.diffusion_backend = "fake"
    edit = FakeTool("edit", ("img_index", "prompt"))
    diffusion = FakeTool("diffusion", ("prompt",))
    # The real search tool without a backend: a config error, never retried.
    tools = fake_tools(search=unconfigured_search, edit=edit, diffusion=diffusion)
    draft = tag("search", "a fox", query="fox") + tag(
        "edit", "the fox in a scarf", img_index=0, prompt="scarf")
    model = routed(draft)
    run(context, model, tools)
    source, edited = slots(context)[0], slots(context)[1]
    assert not source["ok"] and "LLMI_IMAGE_LIBRARY" in source["error"] and source["repairs"] == []
    assert not asked(model, QUERY_SYSTEM)
    assert not edit.calls
    assert diffusion.calls[0].request["params"] == {"prompt": "the fox in a scarf"}
    assert edited["ok"] and edited["source"] == "diffusion"
    [repair] = edited["repairs"]
    assert repair["failed"].startswith("edit: the image it edits (index 0) failed")
    assert repair["tried"] == "a diffusion image instead of edit: 'the fox in a scarf'"
    assert repair["worked"]


def test_an_edit_whose_source_is_repaired_runs_again_as_an_edit(context: Context) -> None:
    context.diffusion_backend = "fake"
    search = FakeTool("search", ("query",), behaviour=failing("nothing", until_attempt=1))
    edit = FakeTool("edit", ("img_index", "prompt"))
    diffusion = FakeTool("diffusion", ("prompt",))
    draft = tag("search", query="fox") + tag("edit", img_index=0, prompt="scarf")
    run(context, routed(draft), fake_tools(search=search, edit=edit, diffusion=diffusion))
    result = slots(context)
    assert result[0]["ok"] and result[1]["ok"] and result[1]["source"] == "edit"
    assert result[1]["repairs"] == [] and not diffusion.calls
    assert edit.calls[0].source_image is not None


def test_an_edit_that_fails_itself_retries_with_a_new_seed(context: Context) -> None:
    edit = FakeTool("edit", ("img_index", "prompt"), behaviour=failing("CUDA OOM", until_attempt=1))
    run(context, routed(tag("diffusion", prompt="fox") + tag("edit", img_index=0, prompt="hat")),
        fake_tools(edit=edit))
    edited = slots(context)[1]
    assert edited["ok"] and edited["source"] == "edit"
    assert "seed" in edit.calls[-1].request["params"]
    assert edited["repairs"][0]["failed"] == "edit: CUDA OOM"


# A comma is missing after the description.
BAD = "<imgen>{'source': 'diffusion', 'description': 'a red fox' 'params': {'prompt': 'fox'}}</imgen>"


def test_a_malformed_tag_is_re_emitted_in_place(context: Context) -> None:
    draft = ("Intro.\n\n" + tag("search", "a den", query="den") + "\n\nMiddle.\n\n" + BAD
             + "\n\nAfter.\n\n" + tag("code", "a chart", code="plt.plot([1])") + "\n\nEnd.")
    fixed = tag("diffusion", "a red fox", prompt="fox")
    diffusion = FakeTool("diffusion", ("prompt",))
    model = routed(draft, retag=f"Here it is:\n{fixed}")
    out = run(context, model, fake_tools(diffusion=diffusion))
    result = slots(context)
    assert [s["kind"] if s["kind"] == "slot" else s["text"] for s in out["segments"]] == [
        "Intro.", "slot", "Middle.", "slot", "After.", "slot", "End."]
    assert [s["slot"] for s in out["segments"] if s["kind"] == "slot"] == [0, 1, 2]
    assert all(s["ok"] for s in result.values())
    assert result[1]["source"] == "diffusion" and result[1]["description"] == "a red fox"
    assert diffusion.calls[0].request["slot"] == 1
    [question] = asked(model, RETAG_SYSTEM)
    assert BAD in question and "not a readable dict" in question and "Middle." in question
    [repair] = result[1]["repairs"]
    assert repair["failed"].startswith("diffusion: bad tag: the tag is not a readable dict")
    assert repair["worked"] and repair["attempt"] == 1
    markdown = (Path(context.out_dir) / "document.md").read_text()
    order = ["Intro.", "image-00", "Middle.", "image-01", "After.", "image-02", "End."]
    assert [markdown.index(piece) for piece in order] == sorted(markdown.index(p) for p in order)


def test_a_tag_still_bad_after_re_emitting_stays_failed_with_both_errors(context: Context) -> None:
    context.repair_rounds = 4
    model = routed("Text.\n" + BAD, retag="<imgen>{'source': 'map', 'params': {}}</imgen>")
    run(context, model, fake_tools())
    slot = slots(context)[0]
    assert not slot["ok"]
    assert "not a readable dict" in slot["error"] and "unknown source 'map'" in slot["error"]
    assert len(asked(model, RETAG_SYSTEM)) == 1
    assert [r["worked"] for r in slot["repairs"]] == [False]


def test_a_tag_past_the_image_limit_is_not_re_emitted(context: Context) -> None:
    context.max_images = 1
    model = routed(tag("code", code="plt.plot([1])") + tag("code", code="plt.plot([2])"))
    run(context, model, fake_tools())
    assert "more than 1 images" in slots(context)[1]["error"]
    assert not asked(model, RETAG_SYSTEM)


def vision_judge(*answers: str) -> tuple[Judge, ScriptedModel]:
    """A judge whose vision model gives ``answers`` in turn (the last one from then on)."""
    vlm = ScriptedModel(
        script=lambda messages, kwargs: answers[min(len(vlm.calls), len(answers)) - 1])
    return Judge(vlm=vlm), vlm


def test_an_image_that_does_not_fit_its_text_is_repaired(context: Context) -> None:
    judge, vlm = vision_judge('{"match": "no", "reason": "it shows a cat"}', '{"match": "yes"}')
    search = FakeTool("search", ("query",))
    draft = ("Herons wait in the shallows.\n\n" + tag("search", "a grey heron", query="heron")
             + "\n\nThey fish.")
    model = routed(draft, query="grey heron standing in water")
    out = run(context, model, fake_tools(search=search), judge=judge)
    slot = slots(context)[0]
    queries = [c.request["params"]["query"] for c in search.calls]
    assert queries == ["heron", "grey heron standing in water"]
    assert slot["ok"] and len(vlm.calls) == 2
    shown = vlm.calls[0]["messages"][-1].content[-1]["text"]
    assert all(part in shown for part in ("a grey heron", "Herons wait in", "They fish."))
    [repair] = slot["repairs"]
    assert repair["failed"] == "search: verifier: the image does not fit its text (it shows a cat)"
    assert repair["worked"]
    assert any("does not fit its text" in f["problem"] for f in out["findings"])


def test_an_unknown_relevance_verdict_passes(context: Context) -> None:
    judge, vlm = vision_judge("I cannot tell.")
    search = FakeTool("search", ("query",))
    run(context, routed(tag("search", query="q")), fake_tools(search=search), judge=judge)
    assert slots(context)[0]["ok"] and len(search.calls) == 1 and len(vlm.calls) == 1


def test_a_vision_judge_that_cannot_start_skips_the_check(context: Context) -> None:
    context.vision_judge_model, context.api_key, context.base_url = "vlm", "", ""
    out = run(context, routed(tag("search", query="q")), fake_tools())
    assert slots(context)[0]["ok"]
    [finding] = out["findings"]
    assert finding["slot"] == -1 and finding["problem"].startswith("relevance check skipped")


def test_the_verifier_looks_at_the_results_of_its_own_round_only(context: Context) -> None:
    """Slot 1 was still running when a stop ended round 0, and was made in round 1 at its
    first attempt: it is judged and repaired. Slot 0 failed in round 0 and was left as it
    was: it is not repaired again."""
    judge, vlm = vision_judge('{"match": "no", "reason": "it shows a cat"}')
    image = ArtifactStore(context.artifact_dir).put(gradient_png(1))
    requests = [ImageRequest(slot=slot, source="search", description="a heron",
                             params={"query": "heron"}, depends_on=None, attempt=0)
                for slot in (0, 1)]
    earlier = failed_result(0, "search", "a heron", "no images found", tool="search")
    made = ImageResult(slot=1, source="search", description="a heron", ok=True, image=image,
                       error=None, tool="search", backend="fake", provenance={}, seconds=0.1,
                       attempt=0, round=1)
    state = {"round": 1, "requests": requests, "results": [earlier, made],
             "segments": [{"kind": "slot", "slot": 0}, {"kind": "slot", "slot": 1}]}
    update = Verifier(model=routed(""), tools=fake_tools(), judge=judge)(
        state, Runtime(context=context))
    assert len(vlm.calls) == 1
    [misfit] = update["results"]
    assert (misfit["slot"], misfit["failure"]) == (1, "check")
    assert [(r["slot"], r["attempt"]) for r in update["requests"]] == [(1, 1)]
    assert update["round"] == 2


def test_repair_rounds_zero_disables_repairs(context: Context) -> None:
    context.repair_rounds = 0
    context.diffusion_backend = "fake"
    search = FakeTool("search", ("query",), behaviour=failing("nothing"))
    code = FakeTool("code", ("code",), behaviour=failing("NameError"))
    diffusion = FakeTool("diffusion", ("prompt",), behaviour=failing("blank"))
    draft = tag("search", query="q") + tag("code", code="x") + tag("diffusion", prompt="p") + BAD
    model = routed(draft)
    out = run(context, model, fake_tools(search=search, code=code, diffusion=diffusion))
    assert not any(s["ok"] for s in slots(context).values())
    assert all(s["repairs"] == [] and s["attempts"] == 1 for s in slots(context).values())
    assert len(model.calls) == 1 and not any(f.get("repaired") for f in out["findings"])
    assert (len(search.calls), len(code.calls), len(diffusion.calls)) == (1, 1, 1)


def test_a_config_error_is_not_retried(context: Context) -> None:
    context.diffusion_backend = "fake"
    diffusion = FakeTool("diffusion", ("prompt",))
    model = routed(tag("search", query="q"))
    out = run(context, model, fake_tools(search=unconfigured_search, diffusion=diffusion))
    slot = slots(context)[0]
    assert not slot["ok"] and slot["repairs"] == [] and slot["attempts"] == 1
    assert not diffusion.calls and len(model.calls) == 1 and out["findings"] == []


def test_an_unknown_source_is_not_retried(context: Context) -> None:
    # The planner knows a 'map' source that dispatch and the verifier do not.
    mapping = FakeTool("map", ("place",))
    tools = fake_tools()
    model = routed(tag("map", place="Kyoto"))
    planner = Planner(model=model, tools=ToolRegistry([*tools.values(), mapping]))
    graph = build_graph(model=model, tools=tools, planner=planner,
                        verifier=Verifier(model=model, tools=tools)).compile()
    graph.invoke({"prompt": "p"}, context=context)
    slot = slots(context)[0]
    assert not slot["ok"] and "no tool is registered" in slot["error"]
    assert slot["repairs"] == [] and len(model.calls) == 1


def seeded_call(context: Context, seed: int) -> ToolCall:
    request = ImageRequest(slot=2, source="diffusion", description="a lighthouse",
                           params={"prompt": "a lighthouse", "seed": seed}, depends_on=None,
                           attempt=1)
    return ToolCall(request=request, context=context, deadline_s=60.0)


def test_a_retry_seed_reaches_the_images_api() -> None:
    with images_server() as server:
        context = Context(images_base_url=server.base_url, base_url="", api_key="", seed=40,
                          image_size="64x48")
        out = openai_generate("m")(seeded_call(context, 1234))
    assert server.requests[0].fields["seed"] == 1234
    assert out.provenance["seed_requested"] == 1234


def test_a_retry_seed_reaches_the_diffusers_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_text_to_image

    from llmi.tools.pipelines import release_pipelines, text_to_image

    context = Context(image_size="64x64", diffusion_steps=2, seed=7, device="cpu")
    try:
        out = text_to_image(str(save_text_to_image(tmp_path)))(seeded_call(context, 1234))
    finally:
        release_pipelines()
    assert out.provenance["seed"] == 1234
