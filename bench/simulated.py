"""A chat model and image tools with set latencies, for benchmarks of llmi's own work,
and documents run as ``llmi generate`` runs them.

The model answers after ``latency`` seconds, streamed at ``tokens_per_s`` when that is
set; the tools sleep for the latency their request names and return the image of their
source and slot, made once per process, so neither costs more than the wait it is given.
"""

from __future__ import annotations

import functools
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from PIL import Image, ImageDraw

from llmi.checkpoints import open_checkpointer, thread_config
from llmi.cli.commands import stream_run
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
CHARS_PER_TOKEN = 4


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
        parts.append(f"Paragraph {index} of {title}, about its picture.\n\n"
                     f"{image_tag(slot, index, title)}")
    return "\n\n".join(parts)


def image_tag(slot: Slot, index: int, title: str) -> str:
    """The tag of image ``index`` of the draft ``title``; its params carry the latency."""
    params: dict[str, Any] = {"latency": slot.seconds}
    key = REQUIRED[slot.source][-1]
    params[key] = f"{title} image {index}"
    if slot.edits is not None:
        params["img_index"] = slot.edits
    tag = {"source": slot.source, "description": f"image {index} of {title}", "params": params}
    return f"<imgen>{tag!r}</imgen>"


class SimulatedModel(BaseChatModel):
    """Answers ``answer(messages, kwargs)`` after ``latency`` seconds; counts its calls.

    Streamed, the answer comes ``CHARS_PER_TOKEN`` characters a chunk at ``tokens_per_s``
    (0: in one chunk), each chunk on a schedule kept from the stream's start, so that
    ``sent_at`` says when each character is sent.
    """

    answer: Callable[[list[BaseMessage], dict[str, Any]], str]
    latency: float = 0.0
    tokens_per_s: float = 0.0
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

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        self.calls += 1
        started = time.monotonic()
        text = self.answer(messages, kwargs)
        size = CHARS_PER_TOKEN if self.tokens_per_s else max(1, len(text))
        for offset in range(0, len(text), size):
            time.sleep(max(0.0, started + self.sent_at(offset) - time.monotonic()))
            yield ChatGenerationChunk(message=AIMessageChunk(text[offset:offset + size]))

    def sent_at(self, offset: int) -> float:
        """Seconds from the call to the chunk that holds character ``offset`` of the answer."""
        if not self.tokens_per_s:
            return self.latency
        return self.latency + (offset // CHARS_PER_TOKEN + 1) / self.tokens_per_s


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
    """An image tool that sleeps for its request's ``params['latency']`` seconds; with
    ``takes_references`` its tags may carry ``refs``, as diffusion's and edit's may.

    ``calls`` counts calls; ``spans`` records each call's (slot, start, end) on the
    monotonic clock, for the scheduling benchmark.
    """

    def __init__(self, source: str, size: Size, *, takes_references: bool = False) -> None:
        self.source = source
        self.size = size
        self.takes_references = takes_references
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
    """A run context with its artifacts and output under ``root``, the seed fixed and the
    tool cache on (``settings`` may say otherwise), whatever the environment sets."""
    return Context(**{"artifact_dir": f"{root}/artifacts", "out_dir": f"{root}/out", "seed": 0,
                      "tool_cache": True} | settings)


@contextmanager
def cli_graph(graph: StateGraph, database: str | Path) -> Iterator[CompiledStateGraph]:
    """``graph`` compiled as ``llmi generate`` compiles it, under the SQLite checkpointer it
    opens (on the file ``database``), for the block."""
    with open_checkpointer(str(database)) as saver:
        yield graph.compile(checkpointer=saver, name="llmi")


def run_document(compiled: CompiledStateGraph, ctx: Context,
                 prompt: str = "A document") -> dict[str, Any]:
    """Runs one document on a graph from ``cli_graph`` as ``llmi generate`` runs it
    (``stream_run``: streamed, each checkpoint written before the next step), the terminal
    display aside, as a LangGraph thread of its own; returns its final state."""
    config = thread_config(uuid.uuid4().hex)
    for _ in stream_run(compiled, {"prompt": prompt}, config, ctx):
        pass
    return compiled.get_state(config).values


def registry(tools: dict[str, SimulatedTool]) -> ToolRegistry:
    return ToolRegistry(tools.values())
