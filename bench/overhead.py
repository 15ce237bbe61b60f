"""Orchestration overhead: what a document costs beyond its model and tools.

A 12-slot document (search, diffusion, code and chained edits) runs through the
document graph with a model and tools that answer at once, so its wall time is
llmi's own work and LangGraph's: parsing, scheduling, storing and checking images,
assembling Markdown, HTML and the manifest. Compared in the same run with a 1-slot
document (the marginal cost of a slot), with the same graph under the SQLite
checkpointer ``llmi generate`` uses, and with a bare LangGraph graph of the same
five nodes doing nothing (LangGraph's own floor). Each document gets a fresh
artifact folder, so every image goes through the tool path, not the cache.
Target: under 5 ms per slot.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from bench.report import Report, p50, ratio, seconds
from bench.simulated import Slot, plan_text, planner, registry, simulated_tools
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.state import DocumentState

NAME = "overhead"
TARGET_PER_SLOT_S = 0.005
NODES = ("intake", "planner", "dispatch", "verifier", "assembler")
SMALL, LARGE = (320, 240), (1024, 1024)


def twelve_slots() -> list[Slot]:
    """Three rounds of search, diffusion, code and an edit of the diffusion image."""
    slots: list[Slot] = []
    for _ in range(3):
        first = len(slots)
        slots += [Slot("search"), Slot("diffusion"), Slot("code"), Slot("edit", edits=first + 1)]
    return slots


def document_seconds(slots: list[Slot], documents: int, checkpointed: bool = False,
                     size: tuple[int, int] = SMALL) -> float:
    """Median wall seconds of one document whose tools answer with ``size`` images."""
    tools = registry(simulated_tools(size))
    graph = build_graph(model=planner(plan_text(slots)), tools=tools)
    with tempfile.TemporaryDirectory() as folder:
        saver = SqliteSaver.from_conn_string(f"{folder}/checkpoints.sqlite") if checkpointed else None
        with saver or nullcontext() as checkpointer:
            compiled = graph.compile(checkpointer=checkpointer)
            timings = []
            for index in range(documents + 1):
                ctx = Context(artifact_dir=f"{folder}/{index}/artifacts",
                              out_dir=f"{folder}/{index}/out", seed=0)
                config = {"configurable": {"thread_id": str(index)}}
                started = time.perf_counter()
                output = compiled.invoke({"prompt": "A document"}, config, context=ctx)
                timings.append(time.perf_counter() - started)
                _check(output, len(slots), Path(ctx.out_dir))
    return p50(timings[1:])  # the first warms imports and caches


def _check(output: dict, slots: int, out_dir: Path) -> None:
    made = sum(result["ok"] for result in output["results"])
    if made != slots or not (out_dir / "document.html").exists():
        raise RuntimeError(f"the benchmark document made {made} of {slots} images")


def bare_seconds(documents: int) -> float:
    """Median wall seconds of a LangGraph graph of the same five nodes doing nothing."""
    builder = StateGraph(DocumentState)
    previous = START
    for name in NODES:
        builder.add_node(name, _no_op)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    compiled = builder.compile()
    timings = []
    for _ in range(documents + 1):
        started = time.perf_counter()
        compiled.invoke({"prompt": "A document"})
        timings.append(time.perf_counter() - started)
    return p50(timings[1:])


def _no_op(state: DocumentState) -> dict:
    return {}


def run(quick: bool) -> Report:
    documents = 5 if quick else 30
    slots = twelve_slots()
    twelve = document_seconds(slots, documents)
    one = document_seconds(slots[:1], documents)
    saved = document_seconds(slots, documents, checkpointed=True)
    bare = bare_seconds(documents)
    large = document_seconds(slots, max(3, documents // 3), size=LARGE)
    per_slot = twelve / len(slots)
    marginal = (twelve - one) / (len(slots) - 1)
    report = Report(
        NAME, "Orchestration overhead",
        f"A {len(slots)}-slot document (3 each of search, diffusion, code, and an edit of the "
        f"diffusion image) with a model and tools that answer at once; median of {documents} "
        "documents after one warm-up, each in a fresh artifact folder.",
        ("", "measured", "comparison", "measured / comparison"),
    )
    report.row(f"{len(slots)}-slot document, per document", seconds(twelve),
               f"bare LangGraph, same five nodes: {seconds(bare)}", ratio(twelve / bare))
    report.row("per slot (document / 12)", seconds(per_slot),
               f"target: {seconds(TARGET_PER_SLOT_S)}", ratio(per_slot / TARGET_PER_SLOT_S))
    report.row("marginal slot ((12-slot − 1-slot) / 11)", seconds(marginal),
               f"1-slot document: {seconds(one)}", ratio(marginal / one))
    report.row(f"{len(slots)}-slot document with the SQLite checkpointer", seconds(saved),
               f"without: {seconds(twelve)}", ratio(saved / twelve))
    report.row("per slot with the SQLite checkpointer", seconds(saved / len(slots)),
               f"target: {seconds(TARGET_PER_SLOT_S)}",
               ratio(saved / len(slots) / TARGET_PER_SLOT_S))
    report.row(f"per slot with {LARGE[0]}x{LARGE[1]} images", seconds(large / len(slots)),
               f"{SMALL[0]}x{SMALL[1]}: {seconds(per_slot)}", ratio(large / twelve))
    report.notes.append(
        f"Images are noisy {SMALL[0]}x{SMALL[1]} PNGs unless a row says otherwise. Larger "
        "images cost more in the work every image gets (hash, decode for the verifier's "
        "checks, base64 for the self-contained HTML): that is image handling, which grows "
        "with pixels, not orchestration.")
    report.target(f"per slot under {seconds(TARGET_PER_SLOT_S)}, checkpointed or not",
                  max(twelve, saved) / len(slots) < TARGET_PER_SLOT_S)
    return report

