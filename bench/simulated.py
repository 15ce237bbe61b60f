"""A chat model and image tools with set latencies, for benchmarks of llmi's own work.

The model answers after ``latency`` seconds; the tools sleep for the latency their
request names and return the PNG of their slot, made once per process, so neither
costs more than the wait it is given.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image

from llmi.tools.base import ToolCall, ToolOutput
from llmi.tools.registry import ToolRegistry

REQUIRED = {"search": ("query",), "diffusion": ("prompt",), "code": ("code",),
            "edit": ("img_index", "prompt")}


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


@functools.lru_cache(maxsize=64)
def png(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A noisy gradient PNG unique to ``seed``; noise makes it as large as a photograph's."""
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 40)
    image = Image.merge("RGB", (gradient, noise, Image.new("L", size, (seed * 37) % 256)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class SimulatedTool:
    """An image tool that sleeps for its request's ``params['latency']`` seconds.

    ``calls`` counts calls; ``spans`` records each call's (slot, start, end) on the
    monotonic clock, for the scheduling benchmark.
    """

    def __init__(self, source: str, size: tuple[int, int] = (320, 240)) -> None:
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
        data = png(call.request["slot"], self.size)
        with self._lock:
            self.calls += 1
            self.spans.append((call.request["slot"], started, time.monotonic()))
        return ToolOutput(data=data, backend="simulated")


def simulated_tools(size: tuple[int, int] = (320, 240)) -> dict[str, SimulatedTool]:
    return {source: SimulatedTool(source, size) for source in REQUIRED}


def registry(tools: dict[str, SimulatedTool]) -> ToolRegistry:
    return ToolRegistry(tools.values())
