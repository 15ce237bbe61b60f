"""Chart executor: a fresh interpreter per chart against children of a warm zygote.

    python bench/chart_executor.py [--charts 20] [--rounds 3] [--at-once 8]
                                   [--results bench/RESULTS.md] [--json FILE]

Draws the same simple chart (``plt.plot([1, 2, 3])``) with ``llmi.tools.code.run_chart``
both ways, in one process: one at a time (cold and warm alternate, so both see the
same machine), then rounds of several at once from threads, as dispatch runs its
slots (cold and warm rounds alternate). Reports p50 and p95 of the seconds per
chart, the wall time per round, the ratios, and what starting the zygote cost the
first warm chart; appends a dated section to ``bench/RESULTS.md``. The target is a
warm p50 one at a time under 0.15 s.

For scale it also times the draw alone: the chart drawn and rendered as the runner
renders it, in this process, without a process or limits, caches warm. Warm minus
that is what isolation costs; the draw itself varies with the machine's load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

from llmi.tools import chart_pool
from llmi.tools.chart_runner import render
from llmi.tools.code import run_chart

SIMPLE = "plt.plot([1, 2, 3])"
TARGET_WARM_P50_S = 0.15
RESULTS = Path(__file__).with_name("RESULTS.md")
Seconds = dict[str, list[float]]
"""Seconds measured, cold and warm."""
RESULTS_HEADER = (
    "# Benchmark results\n\nDated runs of the benchmarks in this folder, newest last. "
    "What each one measures is in its docstring and in README.md.\n"
)


def timed_chart(code: str, pool: bool) -> float:
    started = time.perf_counter()
    run_chart(code, timeout_s=60, memory_mb=2048, pool=pool)
    return time.perf_counter() - started


def p50(seconds: list[float]) -> float:
    return statistics.median(seconds)


def p95(seconds: list[float]) -> float:
    """Nearest rank."""
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def draws_alone(code: str, charts: int) -> list[float]:
    """Seconds to draw and render the chart in this process, caches warm."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns

    compiled = compile(code, "<chart>", "exec")
    seconds = []
    for _ in range(charts + 1):
        started = time.perf_counter()
        exec(compiled, {"plt": plt, "np": np, "pd": pd, "sns": sns})
        render(plt.gcf())
        seconds.append(time.perf_counter() - started)
        plt.close("all")
    return seconds[1:]  # the first warms the caches


def one_at_a_time(code: str, charts: int) -> Seconds:
    seconds: dict[str, list[float]] = {"cold": [], "warm": []}
    for _ in range(charts):
        seconds["cold"].append(timed_chart(code, pool=False))
        seconds["warm"].append(timed_chart(code, pool=True))
    return seconds


def at_once(code: str, rounds: int, width: int) -> tuple[Seconds, Seconds]:
    """Per-chart seconds and per-round wall seconds, cold and warm."""
    seconds: dict[str, list[float]] = {"cold": [], "warm": []}
    walls: dict[str, list[float]] = {"cold": [], "warm": []}
    with ThreadPoolExecutor(width) as threads:
        for _ in range(rounds):
            for mode in ("cold", "warm"):
                charts = [(code, mode == "warm")] * width
                started = time.perf_counter()
                seconds[mode] += threads.map(lambda chart: timed_chart(*chart), charts)
                walls[mode].append(time.perf_counter() - started)
    return seconds, walls


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, matplotlib {matplotlib.__version__}"
    )


def section(figures: dict[str, float], args: argparse.Namespace) -> str:
    def row(label: str, key: str) -> str:
        cold, warm = figures[f"cold_{key}"], figures[f"warm_{key}"]
        return f"| {label} | {cold:.3f} s | {warm:.3f} s | {cold / warm:.1f} |"

    met = figures["warm_one_p50"] < TARGET_WARM_P50_S
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return "\n".join([
        f"## {when}: chart executor (`bench/chart_executor.py`)",
        "",
        f"Machine: {machine()}.",
        f"Chart: `{args.code}`; {args.charts} one at a time, {args.rounds} rounds of "
        f"{args.at_once} at once (threads). Seconds per chart, as `run_chart` returns.",
        "",
        "| | cold (fresh interpreter) | warm (zygote child) | cold / warm |",
        "|---|---|---|---|",
        row("one at a time, p50", "one_p50"),
        row("one at a time, p95", "one_p95"),
        row(f"{args.at_once} at once, p50 per chart", "many_p50"),
        row(f"{args.at_once} at once, p95 per chart", "many_p95"),
        row(f"{args.at_once} at once, wall per round (median)", "round_wall"),
        "",
        f"First warm chart, starting the zygote: {figures['zygote_start']:.2f} s.",
        f"The draw alone (this process, no isolation, caches warm): p50 "
        f"{figures['alone_p50']:.3f} s, so isolation costs the warm chart "
        f"{figures['warm_one_p50'] - figures['alone_p50']:.3f} s at p50.",
        f"Target, warm p50 one at a time under {TARGET_WARM_P50_S} s: "
        f"{'met' if met else 'NOT met'}.",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charts", type=int, default=20, help="charts one at a time, each way")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of charts at once, each way")
    parser.add_argument("--at-once", type=int, default=8, help="charts in one round")
    parser.add_argument("--code", default=SIMPLE, help="the chart code")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="append a dated section to this Markdown file")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not chart_pool.SUPPORTED:
        print("the warm pool needs Linux", file=sys.stderr)
        return 2

    chart_pool.close_shared_pool()
    zygote_start = timed_chart(args.code, pool=True)
    timed_chart(args.code, pool=False)  # the OS file cache, for the cold runs too
    one = one_at_a_time(args.code, args.charts)
    many, walls = at_once(args.code, args.rounds, args.at_once)
    alone = draws_alone(args.code, args.charts)
    figures = {"zygote_start": zygote_start, "alone_p50": p50(alone)}
    for mode in ("cold", "warm"):
        figures |= {
            f"{mode}_one_p50": p50(one[mode]), f"{mode}_one_p95": p95(one[mode]),
            f"{mode}_many_p50": p50(many[mode]), f"{mode}_many_p95": p95(many[mode]),
            f"{mode}_round_wall": p50(walls[mode]),
        }
    for key in ("one_p50", "one_p95", "many_p50", "many_p95", "round_wall"):
        figures[f"ratio_{key}"] = figures[f"cold_{key}"] / figures[f"warm_{key}"]
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    text = section(figures, args)
    print(text)
    if args.results:
        exists = args.results.exists()
        previous = args.results.read_text(encoding="utf-8") if exists else RESULTS_HEADER
        args.results.write_text(previous.rstrip("\n") + "\n\n" + text, encoding="utf-8")
    ok = figures["warm_one_p50"] < TARGET_WARM_P50_S
    print("target met" if ok else "target NOT met", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
