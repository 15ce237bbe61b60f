"""One chart, start to end: ``llmi generate`` of a one-chart document against LLM-I's way.

``llmi generate`` runs as a user runs it, a fresh process from the command line to its exit,
against a chat stand-in (``tests/openai_standin.py``) that answers at once with a document
of one paragraph, one chart and another paragraph; its wall time is llmi's own start-up,
planning, chart, checks, assembly and exit. The comparison is LLM-I's way of drawing the
same chart: one fresh interpreter that imports the libraries the chart code may assume,
runs the code and saves the figure. The kinds alternate, a round of each at a time; the
first round warms the OS's file cache and is not counted.

For scale, the same command on a document without a chart (llmi's start and exit alone,
with the zygote it starts unused, and with the warm pool off, ``LLMI_CODE_POOL=0``, so
that none starts), and on the one-chart document with the warm pool off (its chart in a
fresh interpreter); and a fresh interpreter that only imports the libraries llmi cannot
start without (``LIBRARIES``), the floor for any process built on them.

With ``LLMI_SERVER=on`` (``llmi.cli.server``), the same commands, each still a fresh
``llmi`` process, run in a child of a resident server that imported those libraries once:
the server starts before the rounds, and must serve every command (one that found it
stale would have stopped it). After each command the benchmark waits until the server
has readied the next command's child and chart zygote and uses no processor, as it would
between a user's commands, so that this work is not timed with what runs next. Target:
the one-chart document through the server in at most 1.5x the fresh interpreter's time.
Without it, the libraries' imports alone come to more than that on this project's
machines.

Charts run as llmi runs them by default: jailed where a jail can be had, else with
process limits alone. The user's matplotlib font cache and llmi's are used as they are,
so that no run builds one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.report import Report, medians, ratio, seconds
from llmi.cli import resident
from llmi.tools import chart_jail
from tests.openai_standin import routed_chat_server

NAME = "one_chart"
TARGET_RATIO = 1.5
CHART = ("plt.bar(['Jan', 'Feb', 'Mar', 'Apr'], [49, 62, 105, 121])\n"
         "plt.title('Rainfall in Kyoto (mm)')")
CHART_DOCUMENT = (
    "# Rain in Kyoto\n\nKyoto's spring grows wetter month by month.\n\n"
    f"<imgen>{{'source': 'code', 'description': 'Monthly rainfall in Kyoto', "
    f"'params': {{'code': {CHART!r}}}}}</imgen>\n\nThe rainy season follows in June.\n"
)
CHART_PROMPT, TEXT_PROMPT = "Rain in Kyoto, with a chart", "Rain in Kyoto, in words"
TEXT_DOCUMENT = "# Rain in Kyoto\n\nKyoto's spring grows wetter month by month.\n"
LLMI_WAY = (
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
    "import numpy as np\nimport pandas as pd\nimport seaborn as sns\n"
    "{code}\nplt.savefig({path!r})\n"
)
"""LLM-I's way: the imports its chart code assumes, the code, the figure saved."""
LIBRARIES = ("langgraph.graph", "langgraph.checkpoint.sqlite", "langchain_openai", "PIL.Image",
             "rich.console")
"""The libraries ``llmi generate`` cannot start without: its graph, checkpointer, chat model,
images and terminal."""
SETTLE_S, IDLE_CPU_S = 0.25, 0.01
"""A server idle this long, using less processor time than this, has settled."""


def llmi_generate(url: str, prompt: str, folder: Path, extra_env: dict[str, str]) -> float:
    """Seconds of one ``llmi generate`` in a fresh process; checks its document."""
    out = folder / "out"
    env = os.environ | {
        "LLMI_MODEL": "standin", "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-bench",
        "LLMI_ARTIFACTS": str(folder / "artifacts"),
        "LLMI_CHECKPOINT_URL": str(folder / "checkpoints.sqlite"),
    } | extra_env
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llmi.cli", "generate", prompt, "--out",
                           str(out), "--no-cache"], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"llmi generate failed:\n{done.stderr[-3000:]}")
    made = [slot for slot in json.loads((out / "manifest.json").read_text())["slots"] if slot["ok"]]
    if len(made) != (CHART_PROMPT == prompt):
        raise RuntimeError(f"the document has {len(made)} images:\n{done.stderr[-3000:]}")
    return elapsed


def llmi_i_way(folder: Path) -> float:
    """Seconds of LLM-I's way: one fresh interpreter draws and saves the chart."""
    path = folder / "chart.png"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", LLMI_WAY.format(code=CHART, path=str(path))],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    elapsed = time.perf_counter() - started
    if not path.stat().st_size:
        raise RuntimeError("the fresh interpreter drew nothing")
    return elapsed


def libraries_alone() -> float:
    """Seconds of a fresh interpreter that imports ``LIBRARIES`` and does nothing else."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {', '.join(LIBRARIES)}"], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Served:
    """A resident server: the environment that sends a command to it, and its process."""

    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def settle(self) -> None:
        """Wait, up to a minute, until the server and its children use no processor: what
        it readies after a command (the next one's child, its chart zygote) is done, as
        between a user's commands, and takes no core from what is timed next."""
        deadline = time.monotonic() + 60
        used = self._seconds()
        while time.monotonic() < deadline:
            time.sleep(SETTLE_S)
            previous, used = used, self._seconds()
            if used - previous < IDLE_CPU_S:
                return

    def _seconds(self) -> float:
        """Processor seconds the server and its children have used."""
        total = 0.0
        server = psutil.Process(self.process.pid)
        for process in [server, *server.children(recursive=True)]:
            with suppress(psutil.Error):  # ended this moment
                times = process.cpu_times()
                total += times.user + times.system
        return total


@contextmanager
def resident_server(runtime: Path) -> Iterator[Served]:
    """A resident server for the block, its sockets in ``runtime``, ready for its first
    command. Raises RuntimeError when it does not answer in a minute or has stopped by the
    end of the block."""
    env = {"LLMI_SERVER": "on", "XDG_RUNTIME_DIR": str(runtime)}
    (runtime / "llmi").mkdir(mode=0o700, parents=True)
    process = subprocess.Popen([sys.executable, "-P", "-m", "llmi.cli.server",
                                str(_socket(runtime))], env=os.environ | env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd="/")
    try:
        deadline = time.monotonic() + 60
        while not _socket(runtime).exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the resident server did not start")
            time.sleep(0.05)
        served = Served(env, process)
        served.settle()
        yield served
        if process.poll() is not None:
            raise RuntimeError("the resident server stopped before the end: "
                               f"{_socket(runtime).with_suffix('.log').read_text()}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _socket(runtime: Path) -> Path:
    """The socket a command of this interpreter looks for."""
    return resident.socket_in(runtime / "llmi")


def sandbox() -> str:
    return "process" if chart_jail.jail_problem() else "strict"


def run(quick: bool) -> Report:
    rounds, warm_ups = (1, 0) if quick else (6, 1)
    mode = sandbox()
    answer = (lambda body: CHART_DOCUMENT if CHART_PROMPT in json.dumps(body["messages"][-1])
              else TEXT_DOCUMENT)
    with (routed_chat_server(answer) as (url, _), tempfile.TemporaryDirectory() as tmp,
          resident_server(Path(tmp, "run")) as served):
        def generate(prompt: str, kind: str, **env: str) -> Callable[[int], float]:
            return lambda index: llmi_generate(url, prompt, Path(tmp, str(index), kind),
                                               {"LLMI_CODE_SANDBOX": mode} | env)

        def through_server(prompt: str, kind: str) -> Callable[[int], float]:
            def timed(index: int) -> float:
                seconds = generate(prompt, kind, **served.env)(index)
                served.settle()
                return seconds

            return timed

        # A warm-up round fills the OS's file cache.
        figures = medians({
            "document": generate(CHART_PROMPT, "document"),
            "llm-i": lambda index: llmi_i_way(Path(tmp, str(index))),
            "text": generate(TEXT_PROMPT, "text"),
            "text, no pool": generate(TEXT_PROMPT, "text-no-pool", LLMI_CODE_POOL="0"),
            "cold": generate(CHART_PROMPT, "cold", LLMI_CODE_POOL="0"),
            "libraries": lambda index: libraries_alone(),
            "served": through_server(CHART_PROMPT, "served"),
            "served text": through_server(TEXT_PROMPT, "served-text"),
        }, rounds, warm_ups)
    document, llm_i, text, text_alone, cold, libraries, served, served_text = figures.values()
    report = Report(
        NAME, "One chart, start to end",
        f"`llmi generate` of a one-chart document against a chat stand-in that answers at "
        f"once, a fresh process each time (charts: `LLMI_CODE_SANDBOX={mode}`), against "
        f"LLM-I's way: one fresh interpreter that imports matplotlib, numpy, pandas and "
        f"seaborn, draws the chart and saves it. Median of {rounds} rounds, the kinds "
        f"alternating, after {warm_ups} not counted (they fill the OS's file cache).",
        ("", "wall", "LLM-I's fresh interpreter", "wall / LLM-I's"),
    )
    report.row("one-chart document", seconds(document), seconds(llm_i), ratio(document / llm_i))
    report.row("document without a chart", seconds(text), seconds(llm_i), ratio(text / llm_i))
    report.row("document without a chart, warm pool off (no zygote)", seconds(text_alone),
               seconds(llm_i), ratio(text_alone / llm_i))
    report.row("one-chart document, warm pool off", seconds(cold), seconds(llm_i),
               ratio(cold / llm_i))
    report.row("its libraries' imports alone, no llmi code", seconds(libraries), seconds(llm_i),
               ratio(libraries / llm_i))
    report.row("one-chart document, resident server (`LLMI_SERVER=on`)", seconds(served),
               seconds(llm_i), ratio(served / llm_i))
    report.row("document without a chart, resident server", seconds(served_text),
               seconds(llm_i), ratio(served_text / llm_i))
    report.notes += [
        f"The chart's share of the one-chart document, beyond llmi's start and exit: "
        f"{seconds(document - text)}; with the pool off, {seconds(cold - text_alone)}.",
        f"A zygote started with the command that no chart uses costs the document "
        f"{seconds(text - text_alone)} ({ratio(text / text_alone)}x the run without one): "
        "its imports share the machine's cores with llmi's.",
        f"Libraries alone: a fresh interpreter that imports {', '.join(LIBRARIES)} and "
        "nothing of llmi; what is left of the document is llmi's own work.",
        "Resident server: each command is a fresh `llmi` process that hands its work to a "
        "child of a server started before the rounds (`llmi.cli.server`), which imported "
        "the libraries once; the chart's zygote still starts with each command. Without "
        f"it the document takes {ratio(document / llm_i)}x, of which the libraries' imports "
        f"alone are {ratio(libraries / llm_i)}x.",
    ]
    report.target(f"the one-chart document through the resident server within {TARGET_RATIO}x "
                  "of LLM-I's fresh interpreter", served <= TARGET_RATIO * llm_i)
    return report
