"""Tool cache: the same document made twice, with the cache on and off.

A 12-slot document (the overhead benchmark's plan) whose tools take their time:
search 0.8 s, diffusion 1.0 s, code 0.4 s, edit 0.6 s. It is made once into a fresh
artifact folder, then again into the same folder with the tool cache on (every
image a hit) and with it off (every tool called again), in the same process, each
run as ``llmi generate`` runs it (``bench.simulated.run_document``: SQLite
checkpointer, streamed, durability "sync"). With tools that answer at once, documents
with the cache on and off show what a miss costs: the key, the lookup and the entry
written.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace

from bench.overhead import twelve_slots
from bench.report import Report, medians, ratio, seconds
from bench.simulated import Slot, cli_graph, context, document_graph, run_document, simulated_tools

NAME = "cache"
LATENCY_S = {"search": 0.8, "diffusion": 1.0, "code": 0.4, "edit": 0.6}


def document(slots: list[Slot], root: str, cached: bool = True) -> tuple[float, int, int]:
    """Wall seconds, tool calls, and images the cache answered, of a document made into the
    artifact folder under ``root``."""
    tools = simulated_tools()
    with cli_graph(document_graph(slots, tools), f"{root}/checkpoints.sqlite") as compiled:
        started = time.perf_counter()
        output = run_document(compiled, context(root, tool_cache=cached))
        wall = time.perf_counter() - started
    hits = sum(bool(result["provenance"].get("cached")) for result in output["results"])
    return wall, sum(tool.calls for tool in tools.values()), hits


def miss_cost(slots: list[Slot], documents: int) -> tuple[float, float]:
    """Median seconds of a document with instant tools, cache on and off, fresh folders,
    after one of each not counted."""
    with tempfile.TemporaryDirectory() as folder:
        figures = medians({
            "on": lambda index: document(slots, f"{folder}/{index}-on")[0],
            "off": lambda index: document(slots, f"{folder}/{index}-off", cached=False)[0],
        }, documents)
    return figures["on"], figures["off"]


def run(quick: bool) -> Report:
    scale = 0.25 if quick else 1.0
    slots = [replace(slot, seconds=LATENCY_S[slot.source] * scale) for slot in twelve_slots()]
    with tempfile.TemporaryDirectory() as folder:
        first = document(slots, folder)
        hit = document(slots, folder)
        missed = document(slots, folder, cached=False)
    on, off = miss_cost(twelve_slots(), 3 if quick else 15)
    report = Report(
        NAME, "Tool cache",
        f"The {len(slots)}-slot document; tools take search {LATENCY_S['search'] * scale:g} s, "
        f"diffusion {LATENCY_S['diffusion'] * scale:g} s, code {LATENCY_S['code'] * scale:g} s, "
        f"edit {LATENCY_S['edit'] * scale:g} s. Seed fixed, so diffusion and edits are cached too. "
        "Each run as `llmi generate` runs it (SQLite checkpointer, streamed, durability "
        "\"sync\").",
        ("", "wall", "tool calls", "images from the cache", "wall / first"),
    )
    for label, (wall, calls, hits) in (("first run", first), ("repeated, cache on", hit),
                                       ("repeated, cache off", missed)):
        report.row(label, seconds(wall), str(calls), str(hits), ratio(wall / first[0]))
    report.notes.append(
        f"With tools that answer at once, every call a miss: {seconds(on)} per document with "
        f"the cache on against {seconds(off)} with it off ({ratio(on / off)}); a miss costs "
        f"{seconds(max(0.0, on - off) / len(slots))} per slot.")
    report.target("the repeated document calls no tool with the cache on", hit[1] == 0)
    return report
