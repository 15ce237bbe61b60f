"""The image tools as LangChain tools, called the way an agent calls them."""

from __future__ import annotations

import json

from langchain_core.messages import ToolMessage

from llmi.context import Context
from llmi.tools.langchain_tools import langchain_tools
from llmi.tools.registry import ToolRegistry

from helpers import FakeTool, fake_tools, gradient_png


def _call(tool, **args) -> ToolMessage:
    return tool.invoke({"type": "tool_call", "id": "call-1", "name": tool.name, "args": args})


def test_every_source_is_a_typed_langchain_tool(context: Context) -> None:
    tools = {t.name: t for t in langchain_tools(context, fake_tools())}
    assert set(tools) == {"search_image", "generate_image", "draw_chart", "edit_image"}
    assert set(tools["edit_image"].args) == {"image", "prompt"}
    assert set(tools["search_image"].args) == {"query"}


def test_a_call_returns_the_image_reference_and_provenance(context: Context) -> None:
    tools = {t.name: t for t in langchain_tools(context, fake_tools())}
    message = _call(tools["search_image"], query="Kiyomizu-dera")
    summary = json.loads(message.content)
    assert message.artifact["image"]["sha256"] == summary["sha256"]
    assert message.artifact["provenance"] == {"fake": True}
    assert message.artifact["image"]["width"] == 96


def test_edit_finds_an_earlier_image_by_hash_or_a_file(context: Context, tmp_path) -> None:
    edit = FakeTool("edit", ("img_index", "prompt"))
    tools = {t.name: t for t in langchain_tools(context, fake_tools(edit=edit))}
    made = _call(tools["generate_image"], prompt="a fox").artifact["image"]
    _call(tools["edit_image"], image=made["sha256"], prompt="add a scarf")
    assert edit.calls[-1].source_image == gradient_png(0)
    photo = tmp_path / "photo.png"
    photo.write_bytes(gradient_png(9))
    _call(tools["edit_image"], image=str(photo), prompt="warmer")
    assert edit.calls[-1].source_image == photo.read_bytes()


def test_failures_reach_the_agent_as_text(context: Context) -> None:
    def explode(call) -> None:
        raise RuntimeError("backend exploded")

    broken = langchain_tools(context, ToolRegistry([FakeTool("search", ("query",), explode)]))[0]
    message = _call(broken, query="anything")
    assert message.status == "error" and "backend exploded" in message.content

    tools = {t.name: t for t in langchain_tools(context)}
    unconfigured = _call(tools["search_image"], query="anything")
    assert unconfigured.status == "error" and "LLMI_IMAGE_LIBRARY" in unconfigured.content
    missing = _call(tools["edit_image"], image="/no/such/file.png", prompt="x")
    assert missing.status == "error" and "no image" in missing.content
