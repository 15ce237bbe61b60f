"""Test-time scaling against a single-candidate run, with simulated model and tool latency.

    python bench/tts_scaling.py [--model-latency 0.3] [--tool-latency 0.5] [--repeats 3]

Runs the test-time-scaling graph three ways in one process: one candidate (N=1, K=1),
the default scaling (N=4, K=2), and all four candidates run to the end (N=4, K=4).
Reports wall-time and tool-call ratios; the targets are N=4, K=2 at most 1.3x the wall
time of one candidate, and at most K/N of the tool calls of running all N.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image

from llmi.context import Context
from llmi.graphs.tts import build_tts_graph
from llmi.nodes.judge import Judge
from llmi.prompts import POLISH_SYSTEM
from llmi.tools.base import ToolCall, ToolOutput
from llmi.tools.registry import ToolRegistry

SLOTS = 4


class SimulatedModel(BaseChatModel):
    """Answers after ``latency`` seconds: a plan by seed, a score, or the polish."""

    latency: float

    @property
    def _llm_type(self) -> str:
        return "simulated"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        time.sleep(self.latency)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(_answer(messages, kwargs)))])


def _answer(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
    system = messages[0].text if messages else ""
    if system == POLISH_SYSTEM:
        return messages[-1].text.split("DOCUMENT:\n", 1)[-1].split("\n\nIMAGES:", 1)[0]
    if "seed" in kwargs:
        seed = kwargs["seed"]
        tags = "\n\n".join(
            f"Paragraph {i} of plan {seed}.\n\n<imgen>{{'source': 'search', 'description': "
            f"'picture {i}', 'params': {{'query': 'plan {seed} picture {i}'}}}}</imgen>"
            for i in range(SLOTS)
        )
        return f"# Plan {seed}\n\n{tags}"
    return '{"text": 4, "image": 4, "quality": 4, "task_relevance": 4, "text_image_relevance": 4}'


class SimulatedSearch:
    source = "search"
    required_params = ("query",)
    guidance = "simulated search"

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, call: ToolCall) -> ToolOutput:
        with self._lock:
            self.calls += 1
        time.sleep(self.latency)
        image = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return ToolOutput(data=buffer.getvalue(), backend="simulated")


def run_once(candidates: int, keep: int, model_latency: float, tool_latency: float) -> tuple[float, int]:
    search = SimulatedSearch(tool_latency)
    model = SimulatedModel(latency=model_latency)
    judge = Judge(llm=SimulatedModel(latency=model_latency), vlm=SimulatedModel(latency=model_latency))
    graph = build_tts_graph(model=model, judge=judge, tools=ToolRegistry([search])).compile()
    with tempfile.TemporaryDirectory() as folder:
        ctx = Context(candidates=candidates, keep=keep, artifact_dir=f"{folder}/artifacts",
                      out_dir=f"{folder}/out", seed=0)
        started = time.perf_counter()
        graph.invoke({"prompt": "A guide in four pictures"}, context=ctx)
        return time.perf_counter() - started, search.calls


def measure(candidates: int, keep: int, args: argparse.Namespace) -> dict[str, float]:
    runs = [run_once(candidates, keep, args.model_latency, args.tool_latency) for _ in range(args.repeats)]
    return {"seconds": statistics.median(r[0] for r in runs), "tool_calls": runs[0][1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-latency", type=float, default=0.3)
    parser.add_argument("--tool-latency", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    run_once(1, 1, 0.0, 0.0)  # warm imports and caches outside the measurement
    single, scaled, full = measure(1, 1, args), measure(4, 2, args), measure(4, 4, args)
    figures = {
        "single_seconds": single["seconds"],
        "n4_k2_seconds": scaled["seconds"],
        "wall_ratio": scaled["seconds"] / single["seconds"],
        "n4_k2_tool_calls": scaled["tool_calls"],
        "n4_k4_tool_calls": full["tool_calls"],
        "tool_call_ratio": scaled["tool_calls"] / full["tool_calls"],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["wall_ratio"] <= 1.3 and figures["tool_call_ratio"] <= 2 / 4
    print("targets met" if ok else "targets NOT met", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
