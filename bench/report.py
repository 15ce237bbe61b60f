"""What every benchmark reports: a table of figures beside their comparisons, and targets.

Each benchmark's ``run(quick)`` returns a ``Report``; ``python -m bench`` prints it and
appends it to ``bench/RESULTS.md`` under a heading that names the run and the machine.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = (
    "# Benchmark results\n\nDated runs of `python -m bench`, newest last. What each "
    "benchmark measures is in its module's docstring and in README.md.\n"
)
LIBRARIES = ("langgraph", "langchain-core", "matplotlib", "torch", "diffusers")


@dataclass(frozen=True)
class Target:
    text: str
    met: bool


@dataclass
class Report:
    """One benchmark's figures: ``rows`` under ``columns``, each figure beside its comparison."""

    name: str
    title: str
    setup: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def row(self, *cells: str) -> None:
        self.rows.append(cells)

    def target(self, text: str, met: bool) -> None:
        self.targets.append(Target(text, met))

    def markdown(self) -> str:
        lines = [f"### {self.title} (`bench/{self.name}.py`)", "", self.setup, ""]
        lines += [_cells(self.columns), _cells(["---"] * len(self.columns))]
        lines += [_cells(row) for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        lines += [f"- Target, {t.text}: {'met' if t.met else 'NOT met'}." for t in self.targets]
        return "\n".join(lines).rstrip() + "\n"


def _cells(cells: tuple[str, ...] | list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def machine() -> str:
    """The processor, cores, system and the versions that shape the figures."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = []
    for library in LIBRARIES:
        try:
            versions.append(f"{library} {metadata.version(library)}")
        except metadata.PackageNotFoundError:
            continue
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, " + ", ".join(versions))


def run_heading(names: list[str], quick: bool) -> str:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    mode = " (quick)" if quick else ""
    return f"## {when}: {', '.join(names)}{mode}\n\nMachine: {machine()}.\n"


def append(path: Path, text: str) -> None:
    previous = path.read_text(encoding="utf-8") if path.exists() else RESULTS_HEADER
    path.write_text(previous.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n", encoding="utf-8")


def p50(values: list[float]) -> float:
    return statistics.median(values)


def medians(runs: Mapping[str, Callable[[int], float]], rounds: int,
            warm_ups: int = 1) -> dict[str, float]:
    """Median seconds of each run over ``rounds``, after ``warm_ups`` rounds not counted.

    A round calls every run once, in turn, with the round's index, so the machine's bursts
    of load fall on all of them alike; the warm-ups fill caches (imports, the OS's files).
    """
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(warm_ups + rounds):
        for name, measure in runs.items():
            timings[name].append(measure(index))
    return {name: p50(values[warm_ups:]) for name, values in timings.items()}


def p95(values: list[float]) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.1 else f"{value * 1000:.2f} ms"


def ratio(value: float) -> str:
    return f"{value:.2f}"
