"""Stand-ins shared by the tests: images, tools and chat models."""

from __future__ import annotations

import io
import threading
from html.parser import HTMLParser
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image
from pydantic import Field

from llmi.tools.base import ToolCall, ToolOutput
from llmi.tools.registry import ToolRegistry


def gradient_png(seed: int = 0, size: tuple[int, int] = (96, 80)) -> bytes:
    img = Image.new("RGB", size)
    img.putdata([((x * 3 + seed) % 256, (y * 5) % 256, (seed * 40) % 256)
                 for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def flat_png(size: tuple[int, int] = (96, 80)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


class FakeTool:
    """An ImageTool that runs ``behaviour`` and returns a gradient unique to its slot."""

    def __init__(self, source: str, required: tuple[str, ...],
                 behaviour: Callable[[ToolCall], None] = lambda call: None,
                 make: Callable[[ToolCall], bytes] | None = None,
                 takes_references: bool = False) -> None:
        self.source = source
        self.takes_references = takes_references
        self.required_params = required
        self.guidance = f"{source} stand-in"
        self.behaviour = behaviour
        self.make = make or (lambda call: gradient_png(call.request["slot"]))
        self.calls: list[ToolCall] = []
        self._lock = threading.Lock()

    def __call__(self, call: ToolCall) -> ToolOutput:
        with self._lock:
            self.calls.append(call)
        self.behaviour(call)
        return ToolOutput(data=self.make(call), backend="fake", provenance={"fake": True})


def fake_tools(**overrides: FakeTool) -> ToolRegistry:
    tools = {
        "search": FakeTool("search", ("query",)),
        "diffusion": FakeTool("diffusion", ("prompt",)),
        "code": FakeTool("code", ("code",)),
        "edit": FakeTool("edit", ("img_index", "prompt")),
    }
    tools.update(overrides)
    return ToolRegistry(tools.values())


def model(*replies: str) -> FakeListChatModel:
    return FakeListChatModel(responses=list(replies))


def tag(source: str, description: str = "an image", **params: object) -> str:
    return f"<imgen>{{'source': {source!r}, 'description': {description!r}, 'params': {params!r}}}</imgen>"


class ScriptedModel(BaseChatModel):
    """A chat model whose reply is ``script(messages, kwargs)``: it can answer by prompt or seed."""

    script: Callable[[list[BaseMessage], dict[str, Any]], str]
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.calls.append({"messages": messages, **kwargs})
        message = AIMessage(self.script(messages, kwargs))
        return ChatResult(generations=[ChatGeneration(message=message)])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def html_tags(html: str) -> list[tuple[str, dict[str, str]]]:
    """The start tags of ``html`` with their attributes, in order."""
    parser = _Tags()
    parser.feed(html)
    return parser.tags
