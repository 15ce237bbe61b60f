"""Chart executor: a fresh interpreter per chart against children of a warm zygote.

Draws the same simple chart (``plt.plot([1, 2, 3])``) with ``llmi.tools.code.run_chart``
both ways, in one process: one at a time (all cold, then all warm), then rounds of 8
at once from threads, as dispatch runs its slots (cold and warm rounds alternate). Reports p50 and p95 of the seconds per chart, the
wall time per round, the ratios, and what starting the zygote cost the first warm
chart. Target: a warm p50 one at a time under 0.15 s.

The jail (``LLMI_CODE_SANDBOX=strict``, the default, which the rows above use) is
measured against no jail (``off``) on warm charts one at a time, in alternating blocks
(a switch starts another zygote, whose first chart is left out). Target: the jailed p50
within 1.25x of the unjailed one.

For scale it also times the draw alone: the chart drawn and rendered as the runner
renders it, in this process, without a process or limits, caches warm. Warm minus
that is what isolation costs; the draw itself varies with the machine's load.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bench.report import Report, p50, p95, ratio, seconds
from llmi.tools import chart_pool
from llmi.tools.chart_runner import prepare, render
from llmi.tools.code import run_chart

NAME = "chart_executor"
SIMPLE = "plt.plot([1, 2, 3])"
AT_ONCE = 8
TARGET_WARM_P50_S = 0.15
TARGET_JAIL_RATIO = 1.25
JAIL_BLOCKS = 4
Seconds = dict[str, list[float]]
"""Seconds measured, cold and warm."""


def timed_chart(code: str, pool: bool, sandbox: str = "strict") -> float:
    started = time.perf_counter()
    run_chart(code, timeout_s=60, memory_mb=2048, pool=pool, sandbox=sandbox)
    return time.perf_counter() - started


def jailed_and_not(code: str, charts: int) -> dict[str, list[float]]:
    """Warm seconds per chart with the jail and without, in alternating blocks."""
    seconds: dict[str, list[float]] = {"strict": [], "off": []}
    for block in range(JAIL_BLOCKS):
        sandbox = ("strict", "off")[block % 2]
        timed_chart(code, pool=True, sandbox=sandbox)  # starts this sandbox's zygote
        seconds[sandbox] += [timed_chart(code, pool=True, sandbox=sandbox)
                             for _ in range(charts)]
    return seconds


def draws_alone(code: str, charts: int) -> list[float]:
    """Seconds to draw and render the chart in this process, caches warm."""
    plt, names = prepare()  # what the runner gives the code
    compiled = compile(code, "<chart>", "exec")
    seconds = []
    for _ in range(charts + 1):
        started = time.perf_counter()
        exec(compiled, dict(names))
        render(plt.gcf())
        seconds.append(time.perf_counter() - started)
        plt.close("all")
    return seconds[1:]  # the first warms the caches


def one_at_a_time(code: str, charts: int) -> Seconds:
    """All the cold charts, then all the warm ones.

    Not interleaved: a warm chart right after a cold one is about 30 ms slower, since the
    fresh interpreter before it left the CPU's caches cold, and a document's charts
    follow one another on one path, not on both.
    """
    return {"cold": [timed_chart(code, pool=False) for _ in range(charts)],
            "warm": [timed_chart(code, pool=True) for _ in range(charts)]}


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


def run(quick: bool) -> Report:
    charts, rounds = (5, 1) if quick else (20, 3)
    report = Report(
        NAME, "Chart executor",
        f"Chart: `{SIMPLE}`; {charts} one at a time, {rounds} rounds of {AT_ONCE} at once "
        "(threads). Seconds per chart, as `run_chart` returns.",
        ("", "cold (fresh interpreter)", "warm (zygote child)", "cold / warm"),
    )
    if not chart_pool.SUPPORTED:
        report.notes.append("The warm pool needs Linux: not measured.")
        return report
    chart_pool.close_shared_pool()
    zygote_start = timed_chart(SIMPLE, pool=True)
    timed_chart(SIMPLE, pool=False)  # the OS file cache, for the cold runs too
    one = one_at_a_time(SIMPLE, charts)
    many, walls = at_once(SIMPLE, rounds, AT_ONCE)
    alone = p50(draws_alone(SIMPLE, charts))
    for label, measured in (("one at a time, p50", {k: p50(v) for k, v in one.items()}),
                            ("one at a time, p95", {k: p95(v) for k, v in one.items()}),
                            (f"{AT_ONCE} at once, p50 per chart", {k: p50(v) for k, v in many.items()}),
                            (f"{AT_ONCE} at once, p95 per chart", {k: p95(v) for k, v in many.items()}),
                            (f"{AT_ONCE} at once, wall per round (median)",
                             {k: p50(v) for k, v in walls.items()})):
        report.row(label, seconds(measured["cold"]), seconds(measured["warm"]),
                   ratio(measured["cold"] / measured["warm"]))
    jail = {k: p50(v) for k, v in jailed_and_not(SIMPLE, charts).items()}
    warm = p50(one["warm"])
    report.notes += [
        f"Warm, one at a time, p50 in the jail {seconds(jail['strict'])}, without it "
        f"{seconds(jail['off'])}: {ratio(jail['strict'] / jail['off'])}.",
        f"First warm chart, starting the zygote: {seconds(zygote_start)}.",
        f"The draw alone (this process, no isolation, caches warm): p50 {seconds(alone)}, so "
        f"isolation costs the warm chart {seconds(warm - alone)} at p50.",
    ]
    report.target(f"warm p50 one at a time under {TARGET_WARM_P50_S} s", warm < TARGET_WARM_P50_S)
    report.target(f"jailed warm p50 within {TARGET_JAIL_RATIO}x of the unjailed",
                  jail["strict"] <= TARGET_JAIL_RATIO * jail["off"])
    return report
