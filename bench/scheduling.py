"""Scheduling: wall time against the critical path, and against wave scheduling.

Random 12-slot plans (seeded) mix search, diffusion and code with chains of edits,
each tool sleeping a random latency. Each plan runs through the document graph
twice in the same process, as ``llmi generate`` runs it (``bench.simulated.run_document``:
SQLite checkpointer, streamed, durability "sync"): with llmi's dispatch, where an edit
starts the moment its source is done, and with the dispatch node swapped for wave
scheduling as LLM-I's reference code does it (start every request that is ready, wait
for all of them, then the next wave). The floor is the critical path (the longest chain of
dependent tool calls) plus the planner's time. A last plan puts a slow search
beside an unrelated chain of edits and times when the chain finishes.
Targets: wall time within 10% of the critical path plus model time; the chain
finishes within 10% of its own length, whatever the search does.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.report import Report, ratio, seconds
from bench.simulated import (
    FULL,
    SimulatedTool,
    Slot,
    cli_graph,
    context,
    document_graph,
    prepare,
    registry,
    run_document,
    simulated_tools,
)
from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.nodes.dispatch import Dispatch
from llmi.nodes.dispatch.schedule import failed_request
from llmi.state import DocumentState, ImageRef, ImageResult, pending_requests

NAME = "scheduling"
SLOTS = 12
EDIT_SHARE = 0.4
LATENCY_S = {"search": (0.2, 1.6), "diffusion": (0.4, 1.2), "code": (0.1, 0.5), "edit": (0.2, 0.8)}
MODEL_S = 0.2
TARGET = 1.10


class WaveDispatch(Dispatch):
    """Wave scheduling: every ready request starts, all of them finish, then the next wave."""

    def run(self, state: DocumentState, ctx: Context,
            notify: Callable[[dict[str, Any]], None] = lambda event: None) -> list[ImageResult]:
        store = ArtifactStore(ctx.artifact_dir)
        known: dict[int, ImageRef] = dict(enumerate(state.get("inputs", [])))
        waiting, results = pending_requests(state), []
        with ThreadPoolExecutor(max(1, len(waiting))) as pool:
            while waiting:
                wave = [r for r in waiting if r["depends_on"] is None or r["depends_on"] in known]
                if not wave:
                    results += [failed_request(r, "its source failed", failure="source_failed")
                                for r in waiting]
                    break
                made = pool.map(lambda r: self.run_one(r, known.get(r["depends_on"]), ctx, store),
                                wave)
                for result in made:
                    results.append(result)
                    if result["ok"] and result["image"]:
                        known[result["slot"]] = result["image"]
                waiting = [r for r in waiting if r not in wave]
        return results


def random_plan(rng: random.Random, scale: float) -> list[Slot]:
    slots: list[Slot] = []
    for index in range(SLOTS):
        source = "edit" if index and rng.random() < EDIT_SHARE else rng.choice(
            ("search", "diffusion", "code"))
        low, high = LATENCY_S[source]
        edits = rng.randrange(index) if source == "edit" else None
        slots.append(Slot(source, round(rng.uniform(low, high) * scale, 3), edits))
    return slots


def critical_path(slots: list[Slot]) -> float:
    """The longest chain of dependent tool calls, in seconds."""
    ends: list[float] = []
    for slot in slots:
        ends.append(slot.seconds + (ends[slot.edits] if slot.edits is not None else 0.0))
    return max(ends)


def waves(slots: list[Slot]) -> float:
    """What wave scheduling should take: the slowest call of each wave, summed."""
    depth: list[int] = []
    for slot in slots:
        depth.append(depth[slot.edits] + 1 if slot.edits is not None else 0)
    return sum(max(s.seconds for s, d in zip(slots, depth) if d == wave)
               for wave in range(max(depth) + 1))


def run_plan(slots: list[Slot], dispatch: type[Dispatch] = Dispatch
             ) -> tuple[float, dict[str, SimulatedTool]]:
    """Wall seconds of the document, and its tools (whose spans say when each call ran)."""
    tools = simulated_tools(FULL)
    graph = document_graph(slots, tools, latency=MODEL_S, dispatch=dispatch(registry(tools)))
    with (tempfile.TemporaryDirectory() as folder,
          cli_graph(graph, f"{folder}/checkpoints.sqlite") as compiled):
        started = time.perf_counter()
        output = run_document(compiled, context(folder))
        wall = time.perf_counter() - started
    if not all(result["ok"] for result in output["results"]):
        raise RuntimeError("a simulated tool call failed")
    return wall, tools


def chain_finish(tools: dict[str, SimulatedTool], chain: set[int]) -> float:
    """Seconds from the first tool call to the end of the chain's last call."""
    spans = [span for tool in tools.values() for span in tool.spans]
    first = min(start for _, start, _ in spans)
    return max(end for slot, _, end in spans if slot in chain) - first


def slow_search_plan(scale: float) -> tuple[list[Slot], set[int]]:
    """A slow search beside a diffusion image edited twice."""
    slots = [Slot("search", 3.0 * scale), Slot("diffusion", 0.4 * scale),
             Slot("edit", 0.4 * scale, edits=1), Slot("edit", 0.4 * scale, edits=2)]
    return slots, {1, 2, 3}


def run(quick: bool) -> Report:
    plans, scale = (2, 0.5) if quick else (6, 1.0)
    rng = random.Random(7)
    run_plan([Slot("search")])  # warm imports outside the measurement
    report = Report(
        NAME, "Scheduling",
        f"{plans} random {SLOTS}-slot plans (seed 7): a slot is an edit of a random earlier "
        f"slot with probability {EDIT_SHARE}, else search, diffusion or code; tool latencies "
        f"uniform in {_ranges(scale)}, each answering an image of full size; the "
        f"planner takes {MODEL_S} s. Floor: critical path plus model time. Each plan runs "
        "once with each scheduler, as `llmi generate` runs it (SQLite checkpointer, streamed, "
        "durability \"sync\").",
        ("plan", "floor (critical path + model)", "llmi", "wave floor", "wave scheduling",
         "llmi / floor", "wave / llmi"),
    )
    worst = 0.0
    for index in range(plans):
        slots = random_plan(rng, scale)
        prepare(slots, FULL)
        floor = critical_path(slots) + MODEL_S
        ours, _ = run_plan(slots)
        wave, _ = run_plan(slots, WaveDispatch)
        worst = max(worst, ours / floor)
        report.row(f"{index + 1} ({_shape(slots)})", seconds(floor), seconds(ours),
                   seconds(waves(slots) + MODEL_S), seconds(wave),
                   ratio(ours / floor), ratio(wave / ours))
    slots, chain = slow_search_plan(scale)
    prepare(slots, FULL)
    length = sum(slots[slot].seconds for slot in chain)
    ours_chain = chain_finish(run_plan(slots)[1], chain)
    wave_chain = chain_finish(run_plan(slots, WaveDispatch)[1], chain)
    report.row(f"slow search ({slots[0].seconds:g} s) beside a 3-call edit chain: chain done",
               seconds(length), seconds(ours_chain), seconds(waves(slots)), seconds(wave_chain),
               ratio(ours_chain / length), ratio(wave_chain / ours_chain))
    report.notes.append(
        "Wave floor: the slowest call of each wave, summed, plus model time. In the last row "
        "the floors are when the chain can be done, timed from the first tool call: its own "
        "length, and for waves the waves up to its last call.")
    report.target(f"wall time at most {TARGET:g}x critical path plus model time (worst plan "
                  f"{worst:.2f})", worst <= TARGET)
    report.target("the edit chain finishes within 10% of its own length beside the slow search",
                  ours_chain <= TARGET * length)
    return report


def _shape(slots: list[Slot]) -> str:
    edits = sum(slot.source == "edit" for slot in slots)
    return f"{edits} edits, critical path {critical_path(slots):.2f} s"


def _ranges(scale: float) -> str:
    return ", ".join(f"{source} {low * scale:g}–{high * scale:g} s"
                     for source, (low, high) in LATENCY_S.items())
