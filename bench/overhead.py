"""Orchestration overhead: what a document costs beyond its model and tools.

A 12-slot document (search, diffusion, code and chained edits) runs through the
document graph with a model and tools that answer at once, so its wall time is
llmi's own work and LangGraph's: parsing, scheduling, storing and checking images,
assembling Markdown, HTML and the manifest, checkpointing. It runs as ``llmi generate``
runs it (``bench.simulated.run_document``, through ``llmi.cli.commands.stream_run``): under
the SQLite checkpointer, streamed, each checkpoint committed before the next step starts
(durability "sync"); the terminal display aside. Compared in the same run with a 1-slot
document (the marginal cost of a slot), with the same graph invoked under LangGraph's
default durability ("async") and without a checkpointer (a graph inside an app), and with
a bare LangGraph graph of the same five nodes doing nothing (LangGraph's own floor). Each document gets a fresh artifact folder,
so every image goes through the tool path, not the cache. Target: under 5 ms per slot.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from langgraph.graph import END, START, StateGraph

from bench.report import Report, medians, ratio, seconds
from bench.simulated import (
    FULL,
    SMALL,
    Size,
    Slot,
    cli_graph,
    context,
    document_graph,
    prepare,
    run_document,
    simulated_tools,
)
from llmi.checkpoints import thread_config
from llmi.state import DocumentState

NAME = "overhead"
TARGET_PER_SLOT_S = 0.005
NODES = ("intake", "planner", "dispatch", "verifier", "assembler")


def twelve_slots() -> list[Slot]:
    """Three rounds of search, diffusion, code and an edit of the diffusion image."""
    slots: list[Slot] = []
    for _ in range(3):
        first = len(slots)
        slots += [Slot("search"), Slot("diffusion"), Slot("code"), Slot("edit", edits=first + 1)]
    return slots


Run = Callable[[int], float]
"""Makes document ``index`` and returns its wall seconds."""


Mode = Literal["cli", "async", "memory"]
"""As ``llmi generate`` runs a graph; invoked under SQLite with LangGraph's default
durability; invoked without a checkpointer."""


@dataclass(frozen=True)
class Variant:
    slots: list[Slot]
    mode: Mode = "cli"
    sizes: dict[str, Size] = field(default_factory=lambda: SMALL)


def document_medians(variants: dict[str, Variant | None], documents: int) -> dict[str, float]:
    """Median wall seconds of one document of each variant (None: the bare graph), the
    variants interleaved; the first of each warms imports and caches and is not counted."""
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        runs: dict[str, Run] = {
            name: stack.enter_context(_documents(variant, Path(folder, name)))
            if variant else _bare()
            for name, variant in variants.items()
        }
        return medians(runs, documents)


@contextmanager
def _documents(variant: Variant, folder: Path) -> Iterator[Run]:
    prepare(variant.slots, variant.sizes)
    graph = document_graph(variant.slots, simulated_tools(variant.sizes))
    compiling = (nullcontext(graph.compile(name="llmi")) if variant.mode == "memory"
                 else cli_graph(graph, f"{folder}.sqlite"))
    with compiling as compiled:

        def run(index: int) -> float:
            ctx = context(folder / str(index))
            started = time.perf_counter()
            if variant.mode == "cli":
                output = run_document(compiled, ctx)
            else:
                output = compiled.invoke({"prompt": "A document"}, thread_config(str(index)),
                                         context=ctx)
            seconds = time.perf_counter() - started
            _check(output, len(variant.slots), Path(ctx.out_dir))
            return seconds

        yield run


def _check(output: dict, slots: int, out_dir: Path) -> None:
    made = sum(result["ok"] for result in output["results"])
    if made != slots or not (out_dir / "document.html").exists():
        raise RuntimeError(f"the benchmark document made {made} of {slots} images")


def _bare() -> Run:
    """A LangGraph graph of the same five nodes doing nothing."""
    builder = StateGraph(DocumentState)
    previous = START
    for name in NODES:
        builder.add_node(name, _no_op)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    compiled = builder.compile()

    def run(index: int) -> float:
        started = time.perf_counter()
        compiled.invoke({"prompt": "A document"})
        return time.perf_counter() - started

    return run


def _no_op(state: DocumentState) -> dict:
    return {}


def run(quick: bool) -> Report:
    documents = 5 if quick else 30
    slots = twelve_slots()
    figures = document_medians({"twelve": Variant(slots), "one": Variant(slots[:1]),
                       "async": Variant(slots, mode="async"),
                       "memory": Variant(slots, mode="memory"), "bare": None,
                       "full": Variant(slots, sizes=FULL)}, documents)
    twelve, one, durable_async, memory, bare, full = (
        figures[name] for name in ("twelve", "one", "async", "memory", "bare", "full"))
    per_slot = twelve / len(slots)
    marginal = (twelve - one) / (len(slots) - 1)
    report = Report(
        NAME, "Orchestration overhead",
        f"A {len(slots)}-slot document (3 each of search, diffusion, code, and an edit of the "
        f"diffusion image) with a model and tools that answer at once, run as `llmi generate` "
        f"runs it (SQLite checkpointer, streamed, durability \"sync\") unless a row says "
        f"otherwise; median of {documents} documents of each kind after one warm-up, the kinds "
        "interleaved, each document in a fresh artifact folder.",
        ("", "measured", "comparison", "measured / comparison"),
    )
    report.row(f"{len(slots)}-slot document, per document", seconds(twelve),
               f"bare LangGraph, same five nodes: {seconds(bare)}", ratio(twelve / bare))
    report.row("per slot (document / 12)", seconds(per_slot),
               f"target: {seconds(TARGET_PER_SLOT_S)}", ratio(per_slot / TARGET_PER_SLOT_S))
    report.row("marginal slot ((12-slot − 1-slot) / 11)", seconds(marginal),
               f"1-slot document: {seconds(one)}", ratio(marginal / one))
    report.row(f"{len(slots)}-slot document", seconds(twelve),
               f"invoked, LangGraph's default durability (\"async\"): {seconds(durable_async)}",
               ratio(twelve / durable_async))
    report.row(f"{len(slots)}-slot document", seconds(twelve),
               f"invoked without a checkpointer: {seconds(memory)}", ratio(twelve / memory))
    report.row("per slot with full-size images", seconds(full / len(slots)),
               f"320x240: {seconds(per_slot)}", ratio(full / twelve))
    report.notes.append(
        "Images are 320x240 unless a row says otherwise: a JPEG photograph from search, a "
        "PNG chart from code, a noisy PNG from diffusion and edit; full size is "
        f"{_sizes(FULL)}. Larger "
        "images cost more in the work every image gets (hash, decode for the verifier's "
        "checks, base64 for the self-contained HTML): that is image handling, which grows "
        "with pixels, not orchestration.")
    report.target(f"per slot under {seconds(TARGET_PER_SLOT_S)}, as `llmi generate` runs it",
                  per_slot < TARGET_PER_SLOT_S)
    return report


def _sizes(sizes: dict[str, Size]) -> str:
    return ", ".join(f"{source} {width}x{height}" for source, (width, height) in sizes.items())
