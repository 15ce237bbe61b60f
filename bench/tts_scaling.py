"""Test-time scaling: wall time and tool calls for N = 1, 2, 4 and 8 candidates, K = 2.

Every chat-model call (planner, text judge, vision judge, polish) sleeps a set
latency, every image tool call another; each plan asks for four searches. For each
N the test-time-scaling graph runs twice in the same process, as ``llmi generate
--candidates N`` runs it (``bench.simulated.run_document``: SQLite checkpointer, streamed,
durability "sync"): keeping K = 2 (K = 1 for N = 1), and running all N candidates to the
end (K = N), the cost that pruning saves. Median of the repeats. Targets: N = 4, K = 2
takes at most 1.3x the wall time of one candidate, and at most K/N of the tool calls of
running all N.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from langchain_core.messages import BaseMessage

from bench.report import Report, ratio, seconds
from bench.simulated import (
    SimulatedModel,
    Slot,
    cli_graph,
    context,
    plan_text,
    registry,
    run_document,
    simulated_tools,
)
from llmi.graphs.tts import build_tts_graph
from llmi.judge import Judge
from llmi.prompts import POLISH_SYSTEM

NAME = "tts_scaling"
SLOTS = 4
CANDIDATES = (1, 2, 4, 8)
KEEP = 2
SCORES = '{"text": 4, "image": 4, "quality": 4, "task_relevance": 4, "text_image_relevance": 4}'


def answer(messages: list[BaseMessage], kwargs: dict[str, Any], tool_s: float) -> str:
    """A plan for a planner call (each seed its own), the draft for polish, else scores."""
    system = messages[0].text if messages else ""
    if system == POLISH_SYSTEM:
        return messages[-1].text.split("DOCUMENT:\n", 1)[-1].split("\n\nIMAGES:", 1)[0]
    if "seed" in kwargs:
        return plan_text([Slot("search", tool_s)] * SLOTS, title=f"Plan {kwargs['seed']}")
    return SCORES


def run_once(candidates: int, keep: int, model_s: float, tool_s: float) -> tuple[float, int]:
    """Wall seconds and tool calls of one document."""
    def model() -> SimulatedModel:
        return SimulatedModel(answer=lambda m, k: answer(m, k, tool_s), latency=model_s)

    tools = simulated_tools()
    graph = build_tts_graph(model=model(), judge=Judge(llm=model(), vlm=model()),
                            tools=registry(tools))
    with (tempfile.TemporaryDirectory() as folder,
          cli_graph(graph, f"{folder}/checkpoints.sqlite") as compiled):
        ctx = context(folder, candidates=candidates, keep=keep)
        started = time.perf_counter()
        run_document(compiled, ctx, prompt="A guide in four pictures")
        wall = time.perf_counter() - started
    return wall, sum(tool.calls for tool in tools.values())


def measure(candidates: int, keep: int, repeats: int, model_s: float,
            tool_s: float) -> tuple[float, int]:
    runs = [run_once(candidates, keep, model_s, tool_s) for _ in range(repeats)]
    return statistics.median(wall for wall, _ in runs), runs[0][1]


def run(quick: bool) -> Report:
    repeats, model_s, tool_s = (1, 0.1, 0.2) if quick else (3, 0.3, 0.5)
    run_once(1, 1, 0.0, 0.0)  # warm imports and caches outside the measurement
    report = Report(
        NAME, "Test-time scaling",
        f"Each chat-model call sleeps {model_s} s, each tool call {tool_s} s; {SLOTS} searches "
        f"per plan; median of {repeats}, each run as `llmi generate` runs it (SQLite "
        f"checkpointer, streamed, durability \"sync\"). Pruned: K = {KEEP} (K = 1 for N = 1); "
        "all: K = N.",
        ("N", "wall, pruned", "wall, N = 1", "pruned / N = 1", "tool calls, pruned",
         "tool calls, all N", "pruned / all"),
    )
    single, _ = measure(1, 1, repeats, model_s, tool_s)
    for n in CANDIDATES:
        keep = min(KEEP, n)
        wall, calls = measure(n, keep, repeats, model_s, tool_s)
        _, every = measure(n, n, 1, model_s, tool_s) if keep < n else (wall, calls)
        report.row(str(n), seconds(wall), seconds(single), ratio(wall / single), str(calls),
                   str(every), ratio(calls / every))
        if n == 4:
            report.target("N = 4, K = 2 wall time at most 1.3x one candidate's",
                          wall / single <= 1.3)
            report.target("N = 4, K = 2 tool calls at most K/N of running all four",
                          calls / every <= keep / n)
    return report
