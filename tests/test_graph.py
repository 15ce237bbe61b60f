"""Full runs of the document graph with stand-in models and tools."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import threading
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from PIL import Image

from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.nodes.dispatch import Dispatch
from llmi.nodes.dispatch.image_check import image_problem
from llmi.state import ImageRequest
from llmi.tools.base import ToolCall, ToolError

from conftest import CORPUS
from helpers import FakeTool, fake_tools, flat_png, gradient_png, model, tag


def run(draft: str, context: Context, tools=None, images=(), **parts):
    graph = build_graph(model=model(draft), tools=tools or fake_tools(), **parts).compile()
    return graph.invoke({"prompt": "p", "images": list(images)}, context=context)


def slots(context: Context) -> dict[int, dict]:
    manifest = json.loads((Path(context.out_dir) / "manifest.json").read_text())
    return {slot["index"]: slot for slot in manifest["slots"]}


def test_corpus_document_end_to_end(context: Context) -> None:
    out = run((CORPUS / "kyoto_travel.txt").read_text(), context)
    manifest = json.loads(Path(out["outputs"]["manifest"]).read_text())
    assert [s["ok"] for s in manifest["slots"]] == [True] * 4
    assert manifest["text"].count("<image>") == 4
    assert "Philosopher's Path" in Path(out["outputs"]["markdown"]).read_text()
    for slot in manifest["slots"]:
        assert (Path(context.out_dir) / slot["image"]["path"]).is_file()


def test_independent_slots_run_at_the_same_time(context: Context) -> None:
    n = 6
    barrier = threading.Barrier(n, timeout=10)
    search = FakeTool("search", ("query",), behaviour=lambda call: barrier.wait())
    draft = "\n".join(tag("search", query=f"q{i}") for i in range(n))
    run(draft, context, tools=fake_tools(search=search))
    # Every call passed the barrier, so all n were in flight together.
    assert all(s["ok"] for s in slots(context).values()), slots(context)
    assert not barrier.broken


def test_edit_waits_only_for_its_source(context: Context) -> None:
    edit_done = threading.Event()
    slow = FakeTool("search", ("query",), behaviour=lambda call: edit_done.wait(10) or (_ for _ in ()).throw(ToolError("edit waited for me")))
    edit = FakeTool("edit", ("img_index", "prompt"), behaviour=lambda call: None)
    edit.make = lambda call: (edit_done.set(), gradient_png(7))[1]
    draft = tag("diffusion", prompt="fox") + tag("search", query="slow") + tag("edit", img_index=0, prompt="scarf")
    run(draft, context, tools=fake_tools(search=slow, edit=edit))
    result = slots(context)
    assert all(s["ok"] for s in result.values()), result
    source = (Path(context.out_dir) / result[0]["image"]["path"]).read_bytes()
    assert edit.calls[0].source_image == source


def test_a_slow_search_never_delays_an_unrelated_chain_of_edits(context: Context) -> None:
    chain_done = threading.Event()

    def slow(call: ToolCall) -> None:
        if not chain_done.wait(10):
            raise ToolError("the edit chain waited for the search")

    def edit_made(call: ToolCall) -> bytes:
        if call.request["slot"] == 2:
            chain_done.set()
        return gradient_png(call.request["slot"])

    tools = fake_tools(search=FakeTool("search", ("query",), behaviour=slow),
                       edit=FakeTool("edit", ("img_index", "prompt"), make=edit_made))
    draft = (tag("diffusion", prompt="fox") + tag("edit", img_index=0, prompt="scarf")
             + tag("edit", img_index=1, prompt="snow") + tag("search", query="slow"))
    run(draft, context, tools=tools)
    assert [s["ok"] for s in slots(context).values()] == [True] * 4


def test_edit_chain_and_inputs(context: Context, tmp_path: Path) -> None:
    photo = tmp_path / "room.png"
    photo.write_bytes(gradient_png(3))
    edit = FakeTool("edit", ("img_index", "prompt"))
    run((CORPUS / "with_inputs.txt").read_text(), context, tools=fake_tools(edit=edit),
        images=[str(photo), str(photo)])
    result = slots(context)
    assert sorted(result) == [2, 3, 4] and all(s["ok"] for s in result.values())
    by_slot = {c.request["slot"]: c for c in edit.calls}
    assert by_slot[2].source_image == photo.read_bytes()
    made_2 = (Path(context.out_dir) / result[2]["image"]["path"]).read_bytes()
    assert by_slot[4].source_image == made_2


def test_failures_stay_in_their_slots(context: Context) -> None:
    def explode(call: ToolCall) -> None:
        raise RuntimeError("backend exploded")

    context.slot_timeout = 1.0
    hang = threading.Event()
    tools = fake_tools(
        search=FakeTool("search", ("query",), behaviour=explode),
        diffusion=FakeTool("diffusion", ("prompt",), behaviour=lambda call: hang.wait(30)),
    )
    draft = "Intro.\n" + tag("search", query="q") + tag("diffusion", prompt="p") + \
        tag("edit", img_index=1, prompt="e") + tag("code", code="x") + "\nOutro."
    try:
        run(draft, context, tools=tools)
    finally:
        hang.set()
    result = slots(context)
    assert "backend exploded" in result[0]["error"]
    assert "timed out after 1 s" in result[1]["error"]
    assert "the image it edits (index 1) failed" in result[2]["error"]
    assert result[3]["ok"]
    md = (Path(context.out_dir) / "document.md").read_text()
    assert "Intro." in md and "Outro." in md


def test_unconfigured_backends_say_how_to_configure(context: Context) -> None:
    draft = tag("search", query="q") + tag("diffusion", prompt="p") + tag("edit", img_index=1, prompt="e")
    graph = build_graph(model=model(draft)).compile()
    graph.invoke({"prompt": "p"}, context=context)
    result = slots(context)
    assert "LLMI_SEARCH" in result[0]["error"]
    assert "LLMI_DIFFUSION" in result[1]["error"]
    assert "failed" in result[2]["error"]


def test_verifier_rejects_flat_and_tiny_images(context: Context) -> None:
    tools = fake_tools(
        search=FakeTool("search", ("query",), make=lambda call: flat_png()),
        diffusion=FakeTool("diffusion", ("prompt",), make=lambda call: gradient_png(1, (40, 40))),
    )
    out = run(tag("search", query="q") + tag("diffusion", prompt="p"), context, tools=tools)
    result = slots(context)
    assert "one flat colour" in result[0]["error"]
    assert "too small" in result[1]["error"]
    assert {f["slot"] for f in out["findings"]} == {0, 1}


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_jpegs_are_checked_whole_at_a_reduced_size() -> None:
    photo = _jpeg(Image.open(io.BytesIO(gradient_png(3, (640, 480)))).convert("RGB"))
    assert image_problem(photo) is None
    assert image_problem(photo[: len(photo) // 2]).startswith("does not decode")
    assert image_problem(_jpeg(Image.new("RGB", (640, 480), (90, 20, 200)))) == "is one flat colour"
    assert image_problem(_jpeg(Image.new("RGB", (640, 40), (9, 9, 9)))).startswith("is too small")


def test_an_image_whose_middle_row_is_flat_is_checked_whole() -> None:
    banded = Image.new("RGB", (640, 480), "white")
    banded.paste((200, 30, 30), (0, 0, 640, 48))
    assert image_problem(_jpeg(banded)) is None
    assert image_problem(flat_png((200, 100))) == "is one flat colour"


def test_dispatch_checks_each_image_as_it_arrives(context: Context) -> None:
    tools = fake_tools(search=FakeTool("search", ("query",), make=lambda call: flat_png()))
    requests = [
        ImageRequest(slot=0, source="search", description="flat", params={"query": "q"},
                     depends_on=None, attempt=0),
        ImageRequest(slot=1, source="diffusion", description="fine", params={"prompt": "p"},
                     depends_on=None, attempt=0),
    ]
    flat, fine = Dispatch(tools).run({"prompt": "p", "requests": requests}, context)
    assert (flat["ok"], flat["failure"], flat["error"]) == (
        False, "check", "verifier: the image is one flat colour")
    assert flat["provenance"] == {"fake": True}
    assert fine["ok"] and "failure" not in fine


def test_an_edit_does_not_wait_for_its_source_to_be_checked(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_started = threading.Event()
    edit = FakeTool("edit", ("img_index", "prompt"), behaviour=lambda call: edit_started.set())

    def slow_check(data: bytes) -> str | None:
        return None if edit_started.wait(10) else "was checked before its edit could start"

    monkeypatch.setattr("llmi.nodes.dispatch.image_check.image_problem", slow_check)
    run(tag("diffusion", prompt="fox") + tag("edit", img_index=0, prompt="scarf"), context,
        tools=fake_tools(edit=edit))
    assert [s["ok"] for s in slots(context).values()] == [True, True]


def test_a_swapped_node_is_used(context: Context) -> None:
    def planner(state, runtime):
        return {"draft": "x", "segments": [{"kind": "text", "text": "custom planner"}],
                "requests": [], "results": []}

    run("unused", context, planner=planner)
    assert "custom planner" in (Path(context.out_dir) / "document.md").read_text()


def test_checkpoint_of_eight_images_is_small_and_plain(context: Context) -> None:
    if "allowed_msgpack_modules" not in inspect.signature(JsonPlusSerializer).parameters:
        pytest.skip("this langgraph-checkpoint has no strict msgpack loading to check against")
    serde = JsonPlusSerializer(pickle_fallback=False)
    saver = InMemorySaver(serde=serde)
    draft = "\n\nSome text between the images.\n\n".join(
        tag("search", f"picture {i}", query=f"query {i}") for i in range(8))
    graph = build_graph(model=model(draft), tools=fake_tools()).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"prompt": "eight images"}, config, context=context)
    checkpoint = saver.get_tuple(config).checkpoint
    kind, blob = serde.dumps_typed(checkpoint)
    assert kind == "msgpack"
    assert len(blob) < 64 * 1024
    strict = JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    values = strict.loads_typed((kind, blob))["channel_values"]
    assert len(values["results"]) == 8 and all(r["ok"] for r in values["results"])
    assert all(isinstance(r, dict) for r in values["results"])


def test_images_are_stored_by_content_hash(context: Context) -> None:
    run(tag("search", query="q"), context)
    image = slots(context)[0]["image"]
    data = (Path(context.out_dir) / image["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == image["sha256"]
    stored = list(Path(context.artifact_dir).rglob(f"{image['sha256']}.*"))
    assert len(stored) == 1


def test_bad_input_image_fails_the_run_clearly(context: Context, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="input image 'bad.png'"):
        run("text", context, images=[str(bad)])


@pytest.mark.slow
def test_chart_repairs_are_bounded_by_the_setting(context: Context) -> None:
    from llmi.tools.registry import ToolRegistry
    from llmi.tools.code import code
    from llmi.tools.search import search

    broken = tag("code", "squares", code="plt.plot(undefined_name)")
    still_broken = "```python\nplt.plot(other_undefined_name)\n```"
    context.repair_rounds = 1
    graph = build_graph(model=model(broken, still_broken, still_broken),
                        tools=ToolRegistry([code, search])).compile()
    out = graph.invoke({"prompt": "p"}, context=context)
    result = slots(context)[0]
    assert not result["ok"] and result["attempts"] == 2
    assert "other_undefined_name" in result["error"]
    assert [f["slot"] for f in out["findings"] if f.get("repaired")] == [0]


@pytest.mark.slow
def test_a_repaired_chart_reruns_its_edit(context: Context) -> None:
    from llmi.tools.code import code

    edit = FakeTool("edit", ("img_index", "prompt"))
    draft = tag("code", "line", code="plt.plot(nope)") + tag("edit", img_index=0, prompt="darker")
    fixed = "```python\nplt.plot([1, 3, 2])\n```"
    tools = fake_tools(code=code, edit=edit)
    build_graph(model=model(draft, fixed), tools=tools).compile().invoke({"prompt": "p"}, context=context)
    result = slots(context)
    assert result[0]["ok"] and result[0]["attempts"] == 2
    assert result[1]["ok"] and result[1]["attempts"] == 2
    chart = (Path(context.out_dir) / result[0]["image"]["path"]).read_bytes()
    assert edit.calls[-1].source_image == chart


def test_a_repair_the_model_cannot_give_is_recorded(context: Context) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    class PlansThenFails(FakeListChatModel):
        calls: int = 0

        def _call(self, *args, **kwargs):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionError("model server went away")
            return super()._call(*args, **kwargs)

        def _stream(self, *args, **kwargs):
            self.calls += 1  # the planner streams its reply
            yield from super()._stream(*args, **kwargs)

    code = FakeTool("code", ("code",), behaviour=lambda call: (_ for _ in ()).throw(
        ToolError("NameError: name 'x' is not defined")))
    planner_model = PlansThenFails(responses=[tag("code", code="plt.plot(x)") + "\n\nText."])
    graph = build_graph(model=planner_model, tools=fake_tools(code=code)).compile()
    out = graph.invoke({"prompt": "p"}, context=context)
    assert not slots(context)[0]["ok"]
    [finding] = [f for f in out["findings"] if f["slot"] == 0]
    assert "repair failed (ConnectionError: model server went away)" in finding["problem"]
    assert "Text." in (Path(context.out_dir) / "document.md").read_text()
