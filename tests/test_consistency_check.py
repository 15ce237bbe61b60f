"""The verifier's consistency check: an image made from references must show their subject."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, SystemMessage
from langgraph.runtime import Runtime

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.judge import Judge
from llmi.judge.prompts import CONSISTENCY_SYSTEM, RELEVANCE_SYSTEM
from llmi.judge.scoring import image_part
from llmi.prompts import RETAG_SYSTEM
from llmi.nodes.verifier import Verifier
from llmi.state import ImageRequest, ImageResult
from llmi.tools.base import ToolCall, ToolError

from helpers import FakeTool, ScriptedModel, fake_tools, gradient_png, tag

DRAFT = ("Mira sets out.\n\n" + tag("diffusion", "Mira at the gate", prompt="a girl, red scarf")
         + "\n\nShe reaches the sea.\n\n"
         + tag("diffusion", "Mira by the sea", prompt="the girl by the sea", refs=[0]))
DIFFERENT = '{"match": "no", "reason": "her scarf is blue and her face is another"}'
SAME = '{"match": "yes", "reason": "the same girl and scarf"}'


def eyes(*verdicts: str) -> tuple[Judge, ScriptedModel]:
    """A vision judge for which every image fits its text, and whose consistency answers are
    ``verdicts`` in turn (the last one from then on)."""
    answers: Iterator[str] = iter(verdicts)
    last = [verdicts[-1]]

    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        system = next(m.text for m in messages if isinstance(m, SystemMessage))
        if system == RELEVANCE_SYSTEM:
            return '{"match": "yes", "reason": "it fits"}'
        assert system == CONSISTENCY_SYSTEM
        last[0] = next(answers, last[0])
        return last[0]

    vlm = ScriptedModel(script=script)
    return Judge(vlm=vlm), vlm


def consistency_calls(vlm: ScriptedModel) -> list[list[Any]]:
    """The user message's parts of each consistency question."""
    return [call["messages"][-1].content for call in vlm.calls
            if call["messages"][0].text == CONSISTENCY_SYSTEM]


def image_urls(parts: list[Any]) -> list[str]:
    return [part["image_url"]["url"] for part in parts if part.get("type") == "image_url"]


def drawing(**behaviour: Any) -> FakeTool:
    return FakeTool("diffusion", ("prompt",), takes_references=True, **behaviour)


def run(context: Context, judge: Judge, diffusion: FakeTool, draft: str = DRAFT,
        **replies: str) -> dict[str, Any]:
    context.consistency = "tags"
    tools = fake_tools(diffusion=diffusion)
    retagging = RETAG_SYSTEM.split("\n", 1)[0]
    model = ScriptedModel(script=lambda messages, kwargs: replies.get("retag", draft)
                          if messages[0].text.startswith(retagging) else draft)
    graph = build_graph(model=model, tools=tools,
                        verifier=Verifier(model=model, tools=tools, judge=judge)).compile()
    return graph.invoke({"prompt": "Mira's journey"}, context=context)


def slots(context: Context) -> dict[int, dict[str, Any]]:
    manifest = json.loads((Path(context.out_dir) / "manifest.json").read_text())
    return {slot["index"]: slot for slot in manifest["slots"]}


def calls_of(tool: FakeTool, slot: int) -> list[ToolCall]:
    return [call for call in tool.calls if call.request["slot"] == slot]


def test_an_image_of_the_same_subject_is_kept(context: Context) -> None:
    judge, vlm = eyes(SAME)
    diffusion = drawing()
    run(context, judge, diffusion)
    first, second = slots(context)[0], slots(context)[1]
    assert "consistency" not in first and "refs" not in first
    assert second["refs"] == [0] and second["ok"] and second["attempts"] == 1
    assert second["consistency"] == {"verdict": "same", "reason": "the same girl and scarf"}
    assert second["repairs"] == [] and len(diffusion.calls) == 2
    # The judge sees the reference first, then the new image.
    [parts] = consistency_calls(vlm)
    assert image_urls(parts) == [url_of(context, 0), url_of(context, 1)]


def test_a_different_subject_is_made_again_from_the_same_references(context: Context) -> None:
    context.seed = 11
    judge, vlm = eyes(DIFFERENT, SAME)
    diffusion = drawing()
    out = run(context, judge, diffusion)
    second = slots(context)[1]
    made, again = calls_of(diffusion, 1)
    assert "seed" not in made.request["params"] and isinstance(again.request["params"]["seed"], int)
    assert made.request["refs"] == again.request["refs"] == [0]
    assert again.references == made.references == (calls_of_image(context, 0),)
    assert url_of(context, 0) in image_urls(consistency_calls(vlm)[-1])
    assert second["ok"] and second["attempts"] == 2
    assert second["consistency"]["verdict"] == "same"
    seed = again.request["params"]["seed"]
    assert second["repairs"] == [{
        "attempt": 1,
        "failed": "diffusion: verifier: the image shows a different subject from its "
                  "references (her scarf is blue and her face is another)",
        "tried": f"diffusion again with a new seed ({seed}), from the same references (images 0)",
        "worked": True,
    }]
    assert [r["kind"] for r in out["repairs"]] == ["consistency"]
    assert any("different subject" in f["problem"] for f in out["findings"])
    assert len(consistency_calls(vlm)) == 2 and len(calls_of(diffusion, 0)) == 1


def calls_of_image(context: Context, slot: int) -> bytes:
    """The bytes of a slot's image as the document holds it."""
    return (Path(context.out_dir) / slots(context)[slot]["image"]["path"]).read_bytes()


def url_of(context: Context, slot: int) -> str:
    """A slot's image as the judge is shown it."""
    return image_part(calls_of_image(context, slot), "image/png")["image_url"]["url"]


@pytest.mark.parametrize(("answer", "why"), [
    ("I cannot tell from these pictures.", "says neither yes nor no"),
    (None, "the vision judge failed: ConnectionError"),
])
def test_a_verdict_the_judge_cannot_give_is_unchecked_and_costs_nothing(
    context: Context, answer: str | None, why: str
) -> None:
    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        if messages[0].text == RELEVANCE_SYSTEM:
            return '{"match": "yes"}'
        if answer is None:
            raise ConnectionError("vision server went away")
        return answer

    diffusion = drawing()
    out = run(context, Judge(vlm=ScriptedModel(script=script)), diffusion)
    second = slots(context)[1]
    assert second["ok"] and second["consistency"]["verdict"] == "unchecked"
    assert why in second["consistency"]["reason"]
    assert second["repairs"] == [] and len(diffusion.calls) == 2 and out["repairs"] == []


def test_repair_rounds_cap_the_consistency_repairs(context: Context) -> None:
    context.repair_rounds = 2
    judge, vlm = eyes(DIFFERENT)
    diffusion = drawing()
    out = run(context, judge, diffusion)
    second = slots(context)[1]
    assert len(calls_of(diffusion, 1)) == 3 and len(consistency_calls(vlm)) == 3
    # The image stays: a different likeness is better than none.
    assert second["ok"] and second["attempts"] == 3
    assert second["consistency"]["verdict"] == "different"
    assert [(r["attempt"], r["worked"]) for r in second["repairs"]] == [(1, False), (2, False)]
    assert sum("different subject" in f["problem"] for f in out["findings"]
               if not f.get("repaired")) == 3


def test_repair_rounds_zero_checks_without_repairing(context: Context) -> None:
    context.repair_rounds = 0
    judge, _ = eyes(DIFFERENT)
    diffusion = drawing()
    run(context, judge, diffusion)
    second = slots(context)[1]
    assert second["consistency"]["verdict"] == "different" and second["repairs"] == []
    assert len(diffusion.calls) == 2


def test_an_image_made_from_a_repaired_reference_is_made_again(context: Context) -> None:
    def first_attempt_of_slot_0_fails(call: ToolCall) -> None:
        if call.request["slot"] == 0 and call.request["attempt"] == 0:
            raise ToolError("server error", kind="http")

    judge, _ = eyes(SAME)
    diffusion = drawing(behaviour=first_attempt_of_slot_0_fails)
    run(context, judge, diffusion)
    second = slots(context)[1]
    assert second["ok"] and second["refs"] == [0] and second["repairs"] == []
    last = calls_of(diffusion, 1)[-1]
    assert last.request["attempt"] == 1 and last.references == (calls_of_image(context, 0),)


def test_a_re_emitted_tag_keeps_its_refs(context: Context) -> None:
    bad = "<imgen>{'source': 'diffusion' 'params': {'prompt': 'the girl', 'refs': [0]}}</imgen>"
    draft = DRAFT.split("\n\nShe reaches")[0] + "\n\nShe reaches the sea.\n\n" + bad
    judge, _ = eyes(SAME)
    diffusion = drawing()
    retag = tag("diffusion", "Mira by the sea", prompt="the girl by the sea", refs=[0])
    run(context, judge, diffusion, draft=draft, retag=retag)
    second = slots(context)[1]
    assert second["ok"] and second["refs"] == [0]
    assert second["consistency"]["verdict"] == "same"
    assert [r["tried"] for r in second["repairs"]] == [
        "the tag re-emitted by the model, as a diffusion request"]
    [made] = calls_of(diffusion, 1)
    assert made.references == (calls_of_image(context, 0),)


def test_the_judge_is_told_the_subject_and_sees_an_input_image_as_reference(
    context: Context,
) -> None:
    judge, vlm = eyes(SAME)
    store = ArtifactStore(context.artifact_dir)
    photo, made = store.put(gradient_png(7)), store.put(gradient_png(8))
    request = ImageRequest(slot=1, source="edit", description="Mira by the sea",
                           params={"img_index": 0, "prompt": "by the sea"}, depends_on=0,
                           attempt=0, refs=[0], subject="Mira")
    result = ImageResult(slot=1, source="edit", description="Mira by the sea", ok=True,
                         image=made, error=None, tool="edit", backend="fake", provenance={},
                         seconds=0.1, attempt=0, refs=[0], subject="Mira")
    state = {"inputs": [photo], "requests": [request], "results": [result],
             "segments": [{"kind": "slot", "slot": 1}],
             "subjects": [{"name": "Mira", "description": "a girl in a red scarf",
                           "slots": [0, 1]}]}
    update = Verifier(model=ScriptedModel(script=lambda m, k: ""), tools=fake_tools(),
                      judge=judge)(state, Runtime(context=context))
    [checked] = update["results"]
    assert checked["consistency"]["verdict"] == "same" and update["requests"] == []
    [parts] = consistency_calls(vlm)
    text = " ".join(part["text"] for part in parts if part["type"] == "text")
    assert "Mira: a girl in a red scarf" in text
    assert len(image_urls(parts)) == 2
