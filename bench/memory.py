"""Checkpoint size per document, and peak memory of a 12-slot run.

The 12-slot document (the overhead benchmark's plan) with tools that answer at once
with full-size images (``bench.simulated.FULL``: photographs, charts, renders) runs
in a fresh interpreter as ``llmi generate`` runs it (``bench.simulated.run_document``:
the SQLite checkpointer, streamed, durability "sync").
Reported: the checkpoint database's size and the latest checkpoint's, beside the bytes of the images the document holds
(state holds references; the bytes live in the artifact store) and beside a 1-slot
document; the peak of Python's allocations during the run (tracemalloc) and the
process's peak resident memory (Linux), beside what the interpreter holds once
llmi and its libraries are imported.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from bench import simulated
from bench.overhead import twelve_slots
from bench.report import Report, ratio

NAME = "memory"


@dataclass(frozen=True)
class Run:
    database_bytes: int
    checkpoint_bytes: int
    checkpoints: int
    image_bytes: int
    imported_rss: int
    peak_rss: int
    peak_traced: int


def document(slots: int) -> Run:
    """Runs in a fresh interpreter: one checkpointed document of the first ``slots`` slots."""
    plan = twelve_slots()[:slots]
    simulated.prepare(plan, simulated.FULL)
    graph = simulated.document_graph(plan, simulated.simulated_tools(simulated.FULL))
    imported = _rss("VmRSS")
    _reset_peak_rss()
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "checkpoints.sqlite"
        with simulated.cli_graph(graph, database) as compiled:
            tracemalloc.start()
            simulated.run_document(compiled, simulated.context(folder))
            peak_traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            saver = compiled.checkpointer
            checkpoints = list(saver.list(None))  # the document's thread is the only one
            latest = saver.conn.execute(
                "SELECT length(checkpoint) FROM checkpoints ORDER BY checkpoint_id DESC LIMIT 1"
            ).fetchone()[0]
        store = Path(folder, "artifacts")
        images = sum(path.stat().st_size for path in store.glob("??/*") if path.is_file())
        return Run(database.stat().st_size, latest, len(checkpoints), images, imported,
                   _rss("VmHWM"), peak_traced)


def _rss(field: str) -> int:
    """Resident bytes from /proc/self/status: ``VmRSS`` now, ``VmHWM`` at the peak."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024


def _reset_peak_rss() -> None:
    # getrusage's peak would include the parent's: Linux carries it over fork and exec.
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")


def in_fresh_interpreter(slots: int) -> Run:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(document, (slots,))


def run(quick: bool) -> Report:
    slots = len(twelve_slots())
    twelve, one = in_fresh_interpreter(slots), in_fresh_interpreter(1)
    report = Report(
        NAME, "Checkpoints and memory",
        f"The {slots}-slot document with full-size images from tools that answer at once, "
        "run as `llmi generate` runs it (SQLite checkpointer, streamed, durability \"sync\"), "
        "each in a fresh interpreter.",
        ("", f"{slots}-slot document", "comparison", "ratio"),
    )
    report.row("checkpoint database", _mb(twelve.database_bytes),
               f"images the document holds: {_mb(twelve.image_bytes)}",
               ratio(twelve.database_bytes / twelve.image_bytes))
    report.row(f"latest checkpoint ({twelve.checkpoints} in the thread)",
               _kb(twelve.checkpoint_bytes), f"1-slot document: {_kb(one.checkpoint_bytes)}",
               ratio(twelve.checkpoint_bytes / one.checkpoint_bytes))
    report.row("peak Python allocations during the run", _mb(twelve.peak_traced),
               f"1-slot document: {_mb(one.peak_traced)}",
               ratio(twelve.peak_traced / one.peak_traced))
    report.row("peak resident memory", _mb(twelve.peak_rss),
               f"after imports, before the run: {_mb(twelve.imported_rss)}",
               ratio(twelve.peak_rss / twelve.imported_rss))
    report.notes.append(
        f"The run itself adds {_mb(twelve.peak_rss - twelve.imported_rss)} of resident memory "
        f"at its peak; the database holds every checkpoint of the thread.")
    return report


def _mb(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


def _kb(value: int) -> str:
    return f"{value / 2**10:.1f} KiB"
