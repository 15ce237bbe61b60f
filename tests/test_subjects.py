"""Subjects: the images that show the same subject are linked after planning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime

from llmi.context import Context, SettingError
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_production_graph, build_tts_graph
from llmi.nodes.subjects import Subjects
from llmi.prompts import SUBJECTS_SYSTEM
from llmi.state import DocumentState, ImageRequest
from llmi.tools.registry import ToolRegistry

from helpers import ScriptedModel, fake_tools, tag
from openai_standin import SERVER_ERROR, chat_server

# A story as a model trained by LLM-I writes it: the same fox three times, no refs.
FOX_STORY = "\n\n".join([
    "# The fox who kept the winter",
    "Far in the north lived a small red fox with a white-tipped tail.",
    tag("diffusion", "A small red fox with a white-tipped tail in a snowy forest",
        prompt="small red fox, white-tipped tail, snowy pine forest, storybook watercolour"),
    "Each night she climbed the hill to watch the northern lights.",
    tag("diffusion", "The fox on a hilltop under the northern lights",
        prompt="small red fox sitting on a hilltop, green aurora, storybook watercolour"),
    "The lights are real: this is how they look from Tromsø.",
    tag("search", "The aurora borealis over Tromsø", query="aurora borealis Tromsø photo"),
    "At dawn she curled up in her den and slept until spring.",
    tag("diffusion", "The fox asleep in her den at dawn",
        prompt="small red fox curled up asleep in a den, dawn light, storybook watercolour"),
])
FOX = {"name": "the fox", "description": "a small red fox with a white-tipped tail",
       "slots": [0, 1, 3]}


def reference_tools() -> ToolRegistry:
    """The stand-in tools, diffusion and edit taking references as the built-in ones do."""
    tools = fake_tools()
    for source in ("diffusion", "edit"):
        tools[source].takes_references = True
    return tools


def request(slot: int, source: str = "diffusion", *, depends_on: int | None = None,
            refs: list[int] | None = None) -> ImageRequest:
    params: dict[str, Any] = {"prompt": f"picture {slot}"}
    if depends_on is not None:
        params["img_index"] = depends_on
    made = ImageRequest(slot=slot, source=source, description=f"image {slot}", params=params,
                        depends_on=depends_on, attempt=0)
    if refs:
        made["refs"] = made["params"]["refs"] = refs
    return made


def replying(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(answer) for answer in answers]))


def link(context: Context, model: Any, *requests: ImageRequest, n_inputs: int = 0) -> dict:
    state = DocumentState(prompt="p", inputs=[{"sha256": "0" * 64}] * n_inputs,
                          requests=list(requests), segments=[])
    return Subjects(model=model, tools=reference_tools())(state, Runtime(context=context))


def planned(context: Context, model: Any, draft: str = FOX_STORY) -> dict:
    """The document graph's state once the subjects are linked, before any tool runs."""
    graph = build_graph(model=model, tools=reference_tools()).compile(
        checkpointer=InMemorySaver(), interrupt_before=["dispatch"])
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"prompt": "A bedtime story about a fox"}, config, context=context)
    return graph.get_state(config).values


def never_called(messages, kwargs) -> str:
    raise AssertionError("no model call was expected")


def test_an_llm_i_draft_without_refs_gets_its_subject_linked(context: Context) -> None:
    def writer(messages, kwargs) -> str:
        return json.dumps({"subjects": [FOX]}) if messages[0].text == SUBJECTS_SYSTEM else FOX_STORY

    model = ScriptedModel(script=writer)
    state = planned(context, model)

    by_slot = {r["slot"]: r for r in state["requests"]}
    assert [by_slot[slot].get("refs") for slot in range(4)] == [None, [0], None, [0]]
    assert by_slot[3]["params"]["refs"] == [0]
    assert [by_slot[slot].get("subject") for slot in range(4)] == [
        "the fox", "the fox", None, "the fox"]
    assert state["subjects"] == [FOX]
    asked = model.calls[-1]
    assert asked["response_format"] == {"type": "json_object"} and asked["temperature"] == 0.0
    images = asked["messages"][-1].text
    assert "Image 2, by search: The aurora borealis over Tromsø" in images
    assert "Text before it: Each night she climbed the hill" in images


def test_the_linking_call_is_json_mode_at_temperature_0_on_an_openai_server(
        context: Context) -> None:
    answer = json.dumps({"subjects": [{**FOX, "slots": [0, 1]}]})
    with chat_server(answer) as (url, seen):
        context.base_url, context.model = url, "gpt-4o"
        linked = link(context, None, request(0), request(1))
    body = seen[0]["body"]
    assert body["response_format"] == {"type": "json_object"} and body["temperature"] == 0
    assert linked["requests"][1]["refs"] == [0]


def test_a_model_that_takes_only_its_default_temperature_is_sent_none(context: Context) -> None:
    model = ScriptedModel(script=lambda messages, kwargs: '{"subjects": []}')
    context.model = "o3-mini"
    assert link(context, model, request(0), request(1)) == {"requests": [], "subjects": []}
    assert "temperature" not in model.calls[0]


@pytest.mark.parametrize(("answer", "why"), [
    ("The fox appears in images 0, 1 and 3.", "holds no JSON object with 'subjects'"),
    ('{"subjects": "the fox"}', "'subjects' is not a list"),
    ('{"subjects": [{"name": "the fox", "slots": ["0", "1"]}]}', "a subject is not a name"),
    ('{"subjects": [["the fox", 0, 1]]}', "a subject is not an object"),
])
def test_an_answer_that_is_not_the_json_asked_for_leaves_the_plan_unlinked(
        context: Context, answer: str, why: str) -> None:
    state = planned(context, ScriptedModel(script=lambda messages, kwargs: (
        answer if messages[0].text == SUBJECTS_SYSTEM else FOX_STORY)))

    assert not any("refs" in r or "subject" in r for r in state["requests"])
    assert state["subjects"] == []
    (finding,) = state["findings"]
    assert finding["slot"] == -1 and finding["problem"].startswith("subjects not linked: ")
    assert why in finding["problem"]


def test_a_failing_server_leaves_the_plan_unlinked(context: Context) -> None:
    with chat_server(SERVER_ERROR) as (url, _):
        context.base_url, context.model, context.model_retries = url, "gpt-4o", 0
        linked = link(context, None, request(0), request(1, refs=[0]), request(2))
    assert "requests" not in linked and linked["subjects"] == []
    assert "HTTP 500" in linked["findings"][0]["problem"]


def test_the_answer_is_checked_against_the_plan(context: Context) -> None:
    answer = json.dumps({"subjects": [
        {"name": "the fox", "description": "a red fox", "slots": [5, 3, 1, 9]},
        {"name": "the den", "description": "", "slots": [1, 4]},
        {"name": "the fox", "description": "another fox", "slots": [0, 4, 2]},
    ]})
    linked = link(context, replying(answer), request(1, "search"), request(2, "edit", depends_on=0),
                  request(3, refs=[2]), request(4), request(5, "code"), n_inputs=1)

    assert linked["subjects"] == [
        {"name": "the fox", "description": "a red fox", "slots": [1, 3, 5]},
        {"name": "the fox (2)", "description": "another fox", "slots": [0, 2, 4]},
    ]
    by_slot = {r["slot"]: r for r in linked["requests"]}
    # The tag's refs come first; a chart takes no references; an edit's source is no reference.
    assert by_slot[3]["refs"] == [2, 1] and "refs" not in by_slot[5]
    assert "refs" not in by_slot[2] and by_slot[4]["refs"] == [0]
    assert {slot: r["subject"] for slot, r in by_slot.items()} == {
        1: "the fox", 3: "the fox", 5: "the fox", 2: "the fox (2)", 4: "the fox (2)"}


def test_no_call_when_no_request_could_gain_a_reference(context: Context) -> None:
    model = ScriptedModel(script=never_called)
    # The edit's only earlier image is the one it changes; search and code take no references.
    assert link(context, model, request(0, "search"), request(1, "edit", depends_on=0),
                request(2, "code")) == {"subjects": []}
    assert link(context, model, request(0), request(1, "search")) == {"subjects": []}


def test_tags_keeps_the_tags_refs_without_a_call(context: Context) -> None:
    context.consistency = "tags"
    model = ScriptedModel(script=never_called)
    assert link(context, model, request(0), request(1, refs=[0]), request(2)) == {"subjects": []}


def test_off_makes_every_image_on_its_own(context: Context) -> None:
    context.consistency = "off"
    linked = link(context, ScriptedModel(script=never_called), request(0), request(1, refs=[0]),
                  request(2, "edit", depends_on=1, refs=[0]))
    assert linked["subjects"] == []
    assert [(r["slot"], "refs" in r, "refs" in r["params"]) for r in linked["requests"]] == [
        (1, False, False), (2, False, False)]
    assert linked["requests"][1]["params"]["img_index"] == 1


def test_an_unknown_consistency_names_its_setting_and_values(context: Context) -> None:
    context.consistency = "always"
    expected = r"LLMI_CONSISTENCY='always' is not one of auto, tags, off"
    with pytest.raises(SettingError, match=expected):
        link(context, ScriptedModel(script=never_called), request(0), request(1))


def test_subjects_runs_between_the_planner_and_dispatch() -> None:
    drawn = build_graph(model=replying(""), tools=fake_tools()).compile().get_graph()
    edges = {(edge.source, edge.target) for edge in drawn.edges}
    assert {("planner", "subjects"), ("subjects", "review"), ("review", "dispatch")} <= edges
    assert ("planner", "dispatch") not in edges
    assert "\tsubjects(subjects)" in drawn.draw_mermaid()
    production = build_production_graph(tools=fake_tools()).compile().get_graph()
    assert {("__start__", "subjects"), ("subjects", "review"), ("review", "dispatch")} <= {
        (edge.source, edge.target) for edge in production.edges}


@pytest.mark.parametrize("build", [build_graph, build_tts_graph])
def test_the_subjects_node_can_be_swapped(context: Context, build) -> None:
    seen: list[tuple[str | None, list[int]]] = []

    def subjects(state: DocumentState) -> dict:
        seen.append((state.get("candidate"), [r["slot"] for r in state["requests"]]))
        return {"subjects": []}

    model = ScriptedModel(script=lambda messages, kwargs: FOX_STORY)
    build(model=model, tools=reference_tools(), subjects=subjects).compile().invoke(
        {"prompt": "A fox"}, context=context)
    candidate = "c0" if build is build_tts_graph else None
    assert seen == [(candidate, [0, 1, 2, 3])]


def test_a_failed_linking_call_is_a_notice_and_a_note_of_the_manifest(context: Context) -> None:
    def answer(messages: list, kwargs: dict[str, Any]) -> str:
        return "I cannot tell which images match." if "response_format" in kwargs else FOX_STORY

    graph = build_graph(model=ScriptedModel(script=answer), tools=reference_tools()).compile()
    events = list(graph.stream({"prompt": "A fox story"}, context=context, stream_mode="custom"))
    notices = [event["text"] for event in events if event["llmi"] == "notice"]
    assert len(notices) == 1 and notices[0].startswith("subjects not linked: the answer holds no")
    manifest = json.loads(Path(context.out_dir, "manifest.json").read_text())
    assert manifest["notes"] == notices and "subjects" not in manifest
    assert all(slot["ok"] and "refs" not in slot for slot in manifest["slots"])
