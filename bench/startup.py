"""Start and exit: how soon the ``llmi`` command answers when it runs no graph, and how soon
it ends once it has written what it was asked for.

Start: ``llmi --help``, and ``llmi generate`` refused before its first model call (no model
configured), each a fresh process as a user runs it, against a bare interpreter
(``python -c pass``). The three alternate; the first round warms the OS's file cache and
is not counted. Target: ``llmi --help`` in at most 6x the bare interpreter's time.

Exit: ``llmi graph``, which imports every graph, node and tool as a run does, timed from its
last line of output to the end of its process, against the same command ended by the
interpreter's own exit (``sys.exit(main())``), which joins every worker thread and tears
down each of the modules a run imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.report import Report, medians, ratio, seconds

NAME = "startup"
TARGET_RATIO = 6.0
BARE = ["-c", "pass"]
HELP = ["-m", "llmi.cli", "--help"]
REFUSED = ["-m", "llmi.cli", "generate", "a guide"]
GRAPH = ["-m", "llmi.cli", "graph"]
GRAPH_BY_INTERPRETER = ["-c", "import sys; from llmi.cli import main; sys.exit(main(['graph']))"]


def wall(args: list[str]) -> float:
    """Seconds of ``python ARGS`` in a fresh process, with no model configured."""
    env = {name: value for name, value in os.environ.items() if name != "LLMI_MODEL"}
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=120)
    return time.perf_counter() - started


def exit_after_output(args: list[str]) -> float:
    """Seconds from the last line ``python ARGS`` writes to the end of its process."""
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    last = None
    for _ in process.stdout:
        last = time.perf_counter()
    if process.wait(timeout=300) != 0 or last is None:
        raise RuntimeError(f"{args} failed or wrote nothing")
    return time.perf_counter() - last


def run(quick: bool) -> Report:
    starts, exits = (5, 1) if quick else (20, 3)
    # The first round of each fills the OS's file cache and is not counted.
    start = medians({"bare": lambda _: wall(BARE), "help": lambda _: wall(HELP),
                     "refused": lambda _: wall(REFUSED)}, starts)
    end = medians({"llmi": lambda _: exit_after_output(GRAPH),
                   "interpreter": lambda _: exit_after_output(GRAPH_BY_INTERPRETER)}, exits)
    report = Report(
        NAME, "Start and exit",
        f"Fresh processes, as a user runs the command. Start: median of {starts} rounds of "
        "each, alternating, after one not counted. Exit: `llmi graph`, from its last line of "
        f"output to the end of its process; median of {exits} rounds of each, alternating, "
        "after one not counted.",
        ("", "measured", "comparison", "measured / comparison"),
    )
    report.row("`llmi --help`", seconds(start["help"]),
               f"`python -c pass`: {seconds(start['bare'])}", ratio(start["help"] / start["bare"]))
    report.row("`llmi generate` refused before the model call (no model configured)",
               seconds(start["refused"]), f"`python -c pass`: {seconds(start['bare'])}",
               ratio(start["refused"] / start["bare"]))
    report.row("`llmi graph`: from its last output to its exit", seconds(end["llmi"]),
               f"the interpreter's own exit: {seconds(end['interpreter'])}",
               ratio(end["llmi"] / end["interpreter"]))
    report.target(f"`llmi --help` within {TARGET_RATIO:g}x of a bare interpreter",
                  start["help"] <= TARGET_RATIO * start["bare"])
    return report
