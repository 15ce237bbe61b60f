"""A chat model and image tools with set latencies, for benchmarks of llmi's own work.

The model answers after ``latency`` seconds; the tools sleep for the latency their
request names and return the image of their source and slot, made once per process,
so neither costs more than the wait it is given.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import StateGraph
from PIL import Image, ImageDraw

from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.tools.base import ToolCall, ToolOutput
from llmi.tools.registry import ToolRegistry

REQUIRED = {"search": ("query",), "diffusion": ("prompt",), "code": ("code",),
            "edit": ("img_index", "prompt")}
Size = tuple[int, int]
SMALL: dict[str, Size] = dict.fromkeys(REQUIRED, (320, 240))
FULL: dict[str, Size] = {"search": (800, 600), "code": (832, 624), "diffusion": (1024, 1024),
                         "edit": (1024, 1024)}
"""Sizes as the tools make them: a web photograph, a chart at the code tool's 130 dpi,
a diffusion model's square."""


@dataclass(frozen=True)
class Slot:
    """One image of a simulated plan: its tool, what it edits, how long its tool takes."""

    source: str
    seconds: float = 0.0
    edits: int | None = None


def plan_text(slots: list[Slot], title: str = "Plan") -> str:
    """A planner's draft with one paragraph and one tag per slot."""
    parts = [f"# {title}"]
    for index, slot in enumerate(slots):
        params: dict[str, Any] = {"latency": slot.seconds}
        key = REQUIRED[slot.source][-1]
        params[key] = f"{title} image {index}"
        if slot.edits is not None:
            params["img_index"] = slot.edits
        tag = {"source": slot.source, "description": f"image {index} of {title}", "params": params}
        parts.append(f"Paragraph {index} of {title}, about its picture.\n\n<imgen>{tag!r}</imgen>")
    return "\n\n".join(parts)


class SimulatedModel(BaseChatModel):
    """Answers ``answer(messages, kwargs)`` after ``latency`` seconds; counts its calls."""

    answer: Callable[[list[BaseMessage], dict[str, Any]], str]
    latency: float = 0.0
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "simulated"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.calls += 1
        if self.latency:
            time.sleep(self.latency)
        message = AIMessage(self.answer(messages, kwargs))
        return ChatResult(generations=[ChatGeneration(message=message)])


def planner(text: str, latency: float = 0.0) -> SimulatedModel:
    """A model that answers every call with the draft ``text``."""
    return SimulatedModel(answer=lambda messages, kwargs: text, latency=latency)


@functools.lru_cache(maxsize=128)
def image(source: str, seed: int, size: Size) -> bytes:
    """An image as ``source`` would return it, unique to ``seed``: a search a JPEG photograph,
    code a PNG chart (flat colours, a few lines), diffusion and edit a PNG with noise as
    fine as a photograph's."""
    if source == "code":
        chart = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(chart)
        width, height = size
        for line in range(3):
            points = [(x, height // 2 + ((x * (line + 1) + seed * 17) % (height // 3)) - height // 6)
                      for x in range(0, width, max(1, width // 12))]
            draw.line(points, fill=("#1f77b4", "#ff7f0e", "#2ca02c")[line], width=3)
        return _encoded(chart, "PNG")
    gradient = Image.linear_gradient("L").resize(size)
    photo = Image.merge("RGB", (gradient, Image.effect_noise(size, 40),
                                Image.new("L", size, (seed * 37) % 256)))
    return _encoded(photo, "JPEG" if source == "search" else "PNG")


def _encoded(picture: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format, **({"quality": 85} if format == "JPEG" else {}))
    return buffer.getvalue()


def prepare(slots: list[Slot], sizes: dict[str, Size]) -> None:
    """Make the images of a plan's tool calls now, before anything is timed."""
    for index, slot in enumerate(slots):
        image(slot.source, index, sizes[slot.source])


class SimulatedTool:
    """An image tool that sleeps for its request's ``params['latency']`` seconds.

    ``calls`` counts calls; ``spans`` records each call's (slot, start, end) on the
    monotonic clock, for the scheduling benchmark.
    """

    def __init__(self, source: str, size: Size) -> None:
        self.source = source
        self.size = size
        self.required_params = REQUIRED[source]
        self.guidance = f"simulated {source}"
        self.calls = 0
        self.spans: list[tuple[int, float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, call: ToolCall) -> ToolOutput:
        started = time.monotonic()
        latency = float(call.request["params"].get("latency", 0.0))
        if latency:
            time.sleep(latency)
        data = image(self.source, call.request["slot"], self.size)
        with self._lock:
            self.calls += 1
            self.spans.append((call.request["slot"], started, time.monotonic()))
        return ToolOutput(data=data, backend="simulated")


def simulated_tools(sizes: dict[str, Size] = SMALL) -> dict[str, SimulatedTool]:
    return {source: SimulatedTool(source, sizes[source]) for source in REQUIRED}


def document_graph(slots: list[Slot], tools: dict[str, SimulatedTool], *, latency: float = 0.0,
                   **nodes: Any) -> StateGraph:
    """The document graph whose planner drafts ``slots`` after ``latency`` seconds, over
    ``tools``; ``nodes`` swap nodes as ``build_graph`` does."""
    return build_graph(model=planner(plan_text(slots), latency), tools=registry(tools), **nodes)


def context(root: str | Path, **settings: Any) -> Context:
    """A run context with its artifacts and output under ``root`` and the seed fixed."""
    return Context(artifact_dir=f"{root}/artifacts", out_dir=f"{root}/out", seed=0, **settings)


def registry(tools: dict[str, SimulatedTool]) -> ToolRegistry:
    return ToolRegistry(tools.values())
