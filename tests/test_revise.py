"""``llmi revise``: one image of a finished document made again, with the images made from it;
every other image kept, the previous version kept, each revision recorded."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from llmi.checkpoints import latest, open_checkpointer, thread_config
from llmi.cli.revise import add_revise_parser, node_before, revise_command
from llmi.cli.runs import RunSettings
from llmi.context import Context
from llmi.errors import LlmiError
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_tts_graph
from llmi.tools.registry import ToolRegistry

from helpers import FakeTool, fake_tools, gradient_png, model, tag
from openai_standin import chat_server

RUN = "run-1"
DRAFT = (
    "# The bridge\n\nThe bridge at dawn.\n\n"
    + tag("search", "The bridge at dawn", query="golden gate bridge dawn")
    + "\n\nA painter saw it so.\n\n"
    + tag("diffusion", "A painting of the bridge", prompt="the bridge in oils")
    + "\n\nTraffic by the hour.\n\n"
    + tag("code", "Cars per hour", code="plt.plot([1, 2, 3])")
    + "\n\nThe painting at night.\n\n"
    + tag("edit", "The painting at night", img_index=1, prompt="at night")
    + "\n\nThe end."
)
NEW_PAINTING = "{'source': 'diffusion', 'description': 'A watercolour', 'params': {'prompt': 'the bridge in watercolour'}}"


def _seed(data: bytes | str) -> int:
    raw = data.encode() if isinstance(data, str) else data
    return int(hashlib.sha256(raw).hexdigest(), 16) % 251 + 1


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ToolRegistry:
    """Stand-in tools whose images follow what they are asked for (a diffusion image its
    prompt, an edit the image it edits), so that a revised slot has a new image; every run's
    graph (the CLI's too) runs them. Checkpoints go to a SQLite file of the test's own."""
    monkeypatch.setenv("LLMI_CHECKPOINT_URL", str(tmp_path / "runs.sqlite"))
    registry = fake_tools(
        diffusion=FakeTool("diffusion", ("prompt",),
                           make=lambda call: gradient_png(_seed(call.request["params"]["prompt"]))),
        edit=FakeTool("edit", ("img_index", "prompt"),
                      make=lambda call: gradient_png(_seed(call.source_image or b""))),
    )
    monkeypatch.setattr("llmi.graphs.document.default_tools", lambda: registry)
    return registry


@pytest.fixture
def out(tools: ToolRegistry, tmp_path: Path) -> Path:
    """The output folder of the finished run of DRAFT; the tool calls it made are forgotten."""
    folder = tmp_path / "out"
    finished_run(folder)
    slots_called(tools)
    return folder


def finished_run(out: Path, draft: str = DRAFT, images: list[str] | None = None,
                 graph_name: str = "document", **compiled: object) -> None:
    """Run ``draft`` as ``llmi generate`` would, as thread RUN, writing into ``out``; its
    settings name ``graph_name`` as the graph that made it."""
    settings = replace(RunSettings.of(Context(out_dir=str(out))), graph=graph_name)
    with open_checkpointer(os.environ["LLMI_CHECKPOINT_URL"]) as saver:
        graph = build_graph(model=model(draft)).compile(checkpointer=saver, **compiled)
        graph.invoke({"prompt": "A page about the bridge", "images": images or []},
                     thread_config(RUN, settings.metadata()), context=settings.context())


def revise(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="llmi")
    add_revise_parser(parser.add_subparsers(dest="command"))
    return revise_command(parser.parse_args(["revise", RUN, *argv]), Console(stderr=True))


def slots_called(tools: ToolRegistry) -> list[int]:
    """The slots the tools were called for since the last look, in order; then forgets them."""
    called = sorted(call.request["slot"] for tool in tools.values() for call in tool.calls)
    for tool in tools.values():
        tool.calls.clear()
    return called


def images(out: Path) -> dict[int, str | None]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {slot["index"]: (slot["image"] or {}).get("sha256") for slot in manifest["slots"]}


def run_state() -> dict:
    with open_checkpointer(os.environ["LLMI_CHECKPOINT_URL"]) as saver:
        return build_graph().compile(checkpointer=saver).get_state(thread_config(RUN)).values


def checkpoint_id() -> str:
    with open_checkpointer(os.environ["LLMI_CHECKPOINT_URL"]) as saver:
        return latest(saver, RUN).config["configurable"]["checkpoint_id"]


def test_a_new_tag_makes_only_its_image_and_its_edit_again(out: Path, tools: ToolRegistry) -> None:
    before = images(out)
    old_files = {name: (out / name).read_bytes()
                 for name in ("document.md", "document.html", "manifest.json")}
    old_assets = {p.name: p.read_bytes() for p in (out / "assets").iterdir()}

    assert revise("--slot", "1", "--tag", NEW_PAINTING) == 0

    assert slots_called(tools) == [1, 3]
    after = images(out)
    assert all(after.values())
    assert [after[slot] == before[slot] for slot in range(4)] == [True, False, True, False]
    version = out / "versions" / "1"
    assert {name: (version / name).read_bytes() for name in old_files} == old_files
    assert {p.name: p.read_bytes() for p in (version / "assets").iterdir()} == old_assets
    assert sorted(p.name for p in (out / "versions").iterdir()) == ["1"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["slots"][1]["description"] == "A watercolour"
    assert manifest["slots"][1]["provenance"] == {"fake": True}
    [revision] = run_state()["revisions"]
    assert revision["version"] == 1 and revision["slot"] == 1 and revision["rerun"] == [1, 3]
    assert revision["tag"] == NEW_PAINTING and "instruction" not in revision
    assert revision["at"].endswith("+00:00")
    assert manifest["revisions"] == [revision]


def test_an_instruction_is_one_model_call_whose_tag_makes_the_image(
    out: Path, tools: ToolRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = images(out)
    reply = tag("search", "A photograph of the real bridge", query="golden gate bridge photograph")
    with chat_server(f"Here it is:\n\n{reply}") as (url, seen):
        monkeypatch.setenv("LLMI_MODEL", "m")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        assert revise("--slot", "1", "--instruction", "make it a photograph of the real bridge") == 0

    assert len(seen) == 1
    asked = json.dumps(seen[0]["body"]["messages"])
    for shown in ("make it a photograph of the real bridge", "the bridge in oils",
                  "A painter saw it so.", "Traffic by the hour."):
        assert shown in asked
    assert [call.request["slot"] for call in tools["search"].calls] == [1]
    assert slots_called(tools) == [1, 3]
    after = images(out)
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["slots"][1]["source"] == "search"
    [revision] = run_state()["revisions"]
    assert revision["instruction"] == "make it a photograph of the real bridge"
    assert revision["tag"] == reply.removeprefix("<imgen>").removesuffix("</imgen>")


@pytest.mark.parametrize(("new", "why"), [
    ("{'source': 'paint', 'description': 'x', 'params': {'prompt': 'x'}}", "unknown source 'paint'"),
    ("{'source': 'edit', 'description': 'x', 'params': {'img_index': 3, 'prompt': 'x'}}",
     "img_index 3 does not point at an input image or an earlier image"),
    ("{'source': 'diffusion', 'description': 'x', 'params': {}}", "lack 'prompt'"),
    ("{'source': 'diffusion', 'description': 'x'", "the diffusion tag has no params"),
    ("a watercolour of the bridge", "not a readable dict"),
    (tag("diffusion", prompt="a") + tag("diffusion", prompt="b"), "holds 2 image tags"),
])
def test_a_bad_tag_is_a_clear_error_and_changes_nothing(
    out: Path, tools: ToolRegistry, new: str, why: str
) -> None:
    manifest, checkpoint = (out / "manifest.json").read_text(), checkpoint_id()
    with pytest.raises(LlmiError) as raised:
        revise("--slot", "1", "--tag", new)
    assert why in raised.value.reason and raised.value.hint
    assert slots_called(tools) == []
    assert not (out / "versions").exists()
    assert (out / "manifest.json").read_text() == manifest
    assert checkpoint_id() == checkpoint


def test_a_reply_that_is_no_tag_is_a_clear_error_and_changes_nothing(
    out: Path, tools: ToolRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = checkpoint_id()
    with chat_server("Sorry, I cannot draw bridges.") as (url, seen):
        monkeypatch.setenv("LLMI_MODEL", "m")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        with pytest.raises(LlmiError, match="the model's tag is not a tag llmi can run"):
            revise("--slot", "1", "--instruction", "a photograph")
    assert len(seen) == 1
    assert slots_called(tools) == [] and not (out / "versions").exists()
    assert checkpoint_id() == checkpoint


def test_an_instruction_without_a_model_is_a_clear_error(out: Path) -> None:
    with pytest.raises(LlmiError, match="needs a chat model") as raised:
        revise("--slot", "1", "--instruction", "a photograph")
    assert "--tag" in raised.value.hint


def test_a_revision_of_a_revision_keeps_both_versions_and_both_records(
    out: Path, tools: ToolRegistry
) -> None:
    assert revise("--slot", "1", "--tag", NEW_PAINTING) == 0
    first = (out / "manifest.json").read_text()
    slots_called(tools)

    snow = "{'source': 'edit', 'description': 'In the snow', 'params': {'img_index': 1, 'prompt': 'in snow'}}"
    assert revise("--slot", "3", "--tag", snow) == 0

    assert slots_called(tools) == [3]
    assert sorted(p.name for p in (out / "versions").iterdir()) == ["1", "2"]
    assert (out / "versions" / "2" / "manifest.json").read_text() == first
    revisions = run_state()["revisions"]
    assert [(r["version"], r["slot"], r["rerun"]) for r in revisions] == [(1, 1, [1, 3]), (2, 3, [3])]
    assert json.loads((out / "manifest.json").read_text())["slots"][3]["description"] == "In the snow"


def test_out_writes_the_revision_elsewhere_and_later_revisions_follow_it(
    tools: ToolRegistry, tmp_path: Path
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    finished_run(out)
    original = (out / "manifest.json").read_text()
    assert revise("--slot", "1", "--tag", NEW_PAINTING, "--out", str(elsewhere)) == 0
    assert (out / "manifest.json").read_text() == original and not (out / "versions").exists()
    assert (elsewhere / "versions" / "1" / "manifest.json").read_text() == original
    assert revise("--slot", "2", "--tag", "{'source': 'code', 'description': 'Bars', "
                  "'params': {'code': 'plt.bar([1], [2])'}}") == 0
    assert sorted(p.name for p in (elsewhere / "versions").iterdir()) == ["1", "2"]
    assert json.loads((elsewhere / "manifest.json").read_text())["slots"][2]["description"] == "Bars"


def test_no_cache_makes_the_same_tag_again(out: Path, tools: ToolRegistry) -> None:
    same = "{'source': 'code', 'description': 'Cars per hour', 'params': {'code': 'plt.plot([1, 2, 3])'}}"
    assert revise("--slot", "2", "--tag", same) == 0
    assert slots_called(tools) == []  # the tool cache answered
    assert revise("--slot", "2", "--tag", same, "--no-cache") == 0
    assert slots_called(tools) == [2]


def test_a_tag_the_planner_wrote_badly_can_be_given_anew(tools: ToolRegistry, tmp_path: Path) -> None:
    out = tmp_path / "out"
    finished_run(out, draft="A fox.\n\n<imgen>{'source': 'paint', 'params': {}}</imgen>\n\nThe end.")
    assert json.loads((out / "manifest.json").read_text())["slots"][0]["ok"] is False
    slots_called(tools)
    assert revise("--slot", "0", "--tag", "{'source': 'diffusion', 'description': 'A fox', "
                  "'params': {'prompt': 'a fox'}}") == 0
    assert slots_called(tools) == [0]
    assert json.loads((out / "manifest.json").read_text())["slots"][0]["ok"] is True


def test_a_document_no_longer_on_disk_keeps_no_version(out: Path, tools: ToolRegistry) -> None:
    for name in ("document.md", "document.html", "manifest.json", "assets"):
        path = out / name
        path.unlink() if path.is_file() else shutil.rmtree(path)
    assert revise("--slot", "1", "--tag", NEW_PAINTING) == 0
    assert (out / "manifest.json").is_file() and not (out / "versions").exists()
    [revision] = run_state()["revisions"]
    assert revision["version"] is None and revision["rerun"] == [1, 3]


def test_an_unknown_run_is_a_clear_error(tools: ToolRegistry) -> None:
    with pytest.raises(LlmiError, match=f"no run {RUN} in the checkpoints"):
        revise("--slot", "1", "--tag", NEW_PAINTING)


def test_a_run_that_has_not_finished_is_a_clear_error(tools: ToolRegistry, tmp_path: Path) -> None:
    finished_run(tmp_path / "out", interrupt_before=["dispatch"])
    slots_called(tools)
    with pytest.raises(LlmiError, match="has not finished") as raised:
        revise("--slot", "1", "--tag", NEW_PAINTING)
    assert f"llmi resume {RUN}" in raised.value.hint
    assert slots_called(tools) == []


def test_only_images_the_document_made_can_be_revised(tools: ToolRegistry, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(gradient_png(9))
    finished_run(tmp_path / "out", draft="A fox.\n\n" + tag("diffusion", prompt="a fox"),
                 images=[str(photo)])
    with pytest.raises(LlmiError, match="image 0 is an input image") as raised:
        revise("--slot", "0", "--tag", NEW_PAINTING)
    assert raised.value.hint.endswith("--slot: 1")
    with pytest.raises(LlmiError, match=f"run {RUN}'s document has no image 2"):
        revise("--slot", "2", "--tag", NEW_PAINTING)


def test_the_run_goes_on_from_the_node_that_leads_into_dispatch() -> None:
    graph = build_graph(tools=fake_tools()).compile()
    before = node_before(graph, "dispatch")
    assert (before, "dispatch") in graph.builder.edges
    assert node_before(graph, "intake") == "__start__"
    assert node_before(build_tts_graph(tools=fake_tools()).compile(), "dispatch") is None


def test_a_run_of_the_test_time_scaling_graph_is_a_clear_error(
    tools: ToolRegistry, tmp_path: Path
) -> None:
    finished_run(tmp_path / "out", graph_name="tts")
    with pytest.raises(LlmiError, match="test-time-scaling graph") as raised:
        revise("--slot", "1", "--tag", NEW_PAINTING)
    assert "without --candidates" in raised.value.hint
    assert not (tmp_path / "out" / "versions").exists()


def test_an_edit_made_from_a_revised_image_is_made_from_the_new_one(
    out: Path, tools: ToolRegistry
) -> None:
    revise("--slot", "1", "--tag", NEW_PAINTING)
    call = tools["edit"].calls[-1]
    assert call.request["slot"] == 3
    assert call.source_image == (out / "assets" / "image-01.png").read_bytes()
