"""Ctrl-C (SIGINT) and SIGTERM at many moments of ``llmi generate`` and ``llmi eval``.

Every interrupted run stops at once with one ``llmi:`` line and the command that goes
on, exits 128 + the signal, and resumes to the document an uninterrupted run gives,
without making a finished tool call again. An interrupted evaluation leaves only whole
result lines, records no stopped item, never crashes, and finishes when run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from llmi import stopping
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.tools.base import ToolCall

from helpers import FakeTool, fake_tools, tag
from helpers import model as fake_model
from openai_standin import routed_chat_server

SIGNALS = [signal.SIGINT, signal.SIGTERM]
EXIT_WITHIN_S = 60
"""Generous: the run stops in moments; this only keeps a broken stop from hanging CI."""
WAIT_S = 120


def chart(name: str, *, gate: str = "", fails: bool = False) -> str:
    """Chart code that counts its runs in $LLMI_TEST_RUNS/<name> (a line each: its pid),
    waits for the file ``gate`` there when it has one, and fails after counting when
    ``fails``."""
    lines = [
        "import os, time",
        "runs = os.environ['LLMI_TEST_RUNS']",
        f"with open(os.path.join(runs, {name!r}), 'a') as f:",
        "    f.write(f'{os.getpid()}\\n')",
    ]
    if gate:
        lines += [
            "deadline = time.monotonic() + 120",
            f"while not os.path.exists(os.path.join(runs, {gate!r})) and time.monotonic() < deadline:",
            "    time.sleep(0.05)",
        ]
    lines += [f"plt.bar(['a', 'b'], [1, {len(name)}])", f"plt.title({name!r})"]
    if fails:
        lines.append("plt.xlabel(no_such_name)")
    return "\n".join(lines)


DRAFT = (
    "# Four charts\n\n"
    + tag("code", "The first fast chart", code=chart("fast1"))
    + "\n\nSome text.\n\n"
    + tag("code", "The slow chart", code=chart("slow", gate="go"))
    + "\n\nMore text.\n\n"
    + tag("code", "The broken chart", code=chart("broken", fails=True))
    + "\n\nEven more text.\n\n"
    + tag("code", "The second fast chart", code=chart("fast2"))
    + "\n\nThe end."
)
FIXED = f"```python\n{chart('fixed', gate='go2')}\n```"
CHARTS = ("fast1", "fast2", "slow", "broken", "fixed")


@dataclass
class Model:
    """Answers the planner with ``DRAFT`` and the repair of the broken chart with
    ``FIXED``, each once its gate is open, so a test can interrupt a run while it waits."""

    plan: threading.Event = field(default_factory=threading.Event)
    repair: threading.Event = field(default_factory=threading.Event)

    def __call__(self, body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        if system.startswith("You fix chart code"):
            self.repair.wait(WAIT_S)
            return FIXED
        self.plan.wait(WAIT_S)
        return DRAFT

    def open(self) -> None:
        self.plan.set()
        self.repair.set()


def calls(seen: list[dict], kind: str) -> int:
    system = {"plan": "You write documents", "repair": "You fix chart code"}[kind]
    return sum(r["body"]["messages"][0]["content"].startswith(system) for r in seen)


def runs_of(folder: Path, name: str) -> list[int]:
    path = folder / name
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@dataclass(frozen=True)
class Moment:
    """A moment to interrupt a run at: ``reached`` says it came, given the runs folder,
    the requests the model saw and the tool cache folder; ``opened`` are the gates open
    before the run starts; ``runs`` is how many times each chart has run by the end."""

    reached: Callable[[Path, list[dict], Path], bool]
    opened: tuple[str, ...]
    runs: dict[str, int]
    plans: int = 1
    repairs: int = 1


def _cached(cache: Path) -> int:
    return len(list(cache.glob("*.json"))) if cache.is_dir() else 0


MOMENTS = {
    # The planner's model call is under way: nothing has run; the plan is asked again.
    "planning": Moment(
        reached=lambda runs, seen, cache: calls(seen, "plan") == 1,
        opened=("go", "go2", "repair"), runs=dict.fromkeys(CHARTS, 1), plans=2,
    ),
    # Dispatch: the fast charts are done and cached, the broken one failed, the slow one
    # runs. Only the slow one runs again.
    "dispatch": Moment(
        reached=lambda runs, seen, cache: _cached(cache) == 2 and all(
            runs_of(runs, name) for name in ("slow", "broken")),
        opened=("plan", "go2", "repair"), runs=dict.fromkeys(CHARTS, 1) | {"slow": 2},
    ),
    # The verifier asks the model to fix the broken chart: no chart runs again.
    "repair": Moment(
        reached=lambda runs, seen, cache: calls(seen, "repair") == 1,
        opened=("plan", "go", "go2"), runs=dict.fromkeys(CHARTS, 1), repairs=2,
    ),
    # The second round: the fixed chart runs. Only it runs again.
    "second round": Moment(
        reached=lambda runs, seen, cache: bool(runs_of(runs, "fixed")),
        opened=("plan", "go", "repair"), runs=dict.fromkeys(CHARTS, 1) | {"fixed": 2},
    ),
}


@dataclass
class Setup:
    runs: Path
    out: Path
    env: dict[str, str]
    model: Model
    seen: list[dict]

    def open(self, *gates: str) -> None:
        for gate in gates:
            if gate == "plan":
                self.model.plan.set()
            elif gate == "repair":
                self.model.repair.set()
            else:
                (self.runs / gate).touch()

    def llmi(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "llmi.cli", *args]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    runs = tmp_path / "runs"
    runs.mkdir()
    model = Model()
    with routed_chat_server(model) as (server, seen):
        env = dict(os.environ, LLMI_MODEL="llmi-test-model", OPENAI_BASE_URL=server,
                   LLMI_TEST_RUNS=str(runs), LLMI_CODE_TIMEOUT="150", LLMI_SLOT_TIMEOUT="200",
                   LLMI_CHECKPOINT_URL=str(tmp_path / "checkpoints.sqlite"),
                   # The charts count their runs in a folder outside any jail.
                   LLMI_CODE_SANDBOX="off")
        yield Setup(runs=runs, out=tmp_path / "out", env=env, model=model, seen=seen)
        model.open()


def document(out: Path) -> tuple[str, list[tuple[str, bool, str]]]:
    """The Markdown, and each slot's description, success and image digest; each image
    in the document folder is the one the manifest names."""
    manifest = json.loads((out / "manifest.json").read_text())
    images = [slot["image"] for slot in manifest["slots"] if slot["image"]]
    assert all(hashlib.sha256((out / image["path"]).read_bytes()).hexdigest() == image["sha256"]
               for image in images)
    slots = [(slot["description"], slot["ok"], (slot["image"] or {}).get("sha256", ""))
             for slot in manifest["slots"]]
    return (out / "document.md").read_text(), slots


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list]:
    """The document of a run nobody interrupts."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    runs = folder / "runs"
    runs.mkdir()
    for gate in ("go", "go2"):
        (runs / gate).touch()
    model = Model()
    model.open()
    with routed_chat_server(model) as (server, _):
        env = dict(os.environ, LLMI_MODEL="llmi-test-model", OPENAI_BASE_URL=server,
                   LLMI_TEST_RUNS=str(runs), LLMI_CODE_SANDBOX="off",
                   XDG_CACHE_HOME=str(folder / "cache"), LLMI_ARTIFACTS=str(folder / "artifacts"))
        done = subprocess.run([sys.executable, "-m", "llmi.cli", "generate", "Four charts",
                               "--out", str(folder / "out")], env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    found = document(folder / "out")
    assert [ok for _, ok, _ in found[1]] == [True] * 4, found
    return found


def wait_for(check: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_an_interrupted_run_resumes_to_the_same_document(
    moment: str, signum: int, setup: Setup, uninterrupted: tuple[str, list]
) -> None:
    at = MOMENTS[moment]
    setup.open(*at.opened)
    thread = f"test-{uuid.uuid4()}"
    cache = Path(setup.env["LLMI_ARTIFACTS"]) / "cache"
    first = subprocess.Popen(setup.llmi("generate", "Four charts", "--out", str(setup.out),
                                        "--thread", thread),
                             env=setup.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: at.reached(setup.runs, setup.seen, cache), moment, first)
        first.send_signal(signum)
        stdout, stderr = first.communicate(timeout=EXIT_WITHIN_S)
    finally:
        first.kill()
    assert first.returncode == 128 + signum, stderr
    said = [line for line in stderr.splitlines() if line.startswith(("llmi:", "hint:"))]
    assert said == ["llmi: interrupted" if signum == signal.SIGINT else "llmi: stopped by SIGTERM",
                    f"hint: continue it with `llmi resume {thread}`"], stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    # No chart process outlives the interrupted run.
    assert gone([pid for name in CHARTS for pid in runs_of(setup.runs, name)])

    setup.model.open()
    for gate in ("go", "go2"):
        setup.open(gate)
    second = subprocess.run(setup.llmi("resume", thread), env=setup.env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert second.returncode == 0, second.stderr
    assert document(setup.out) == uninterrupted
    assert {name: len(runs_of(setup.runs, name)) for name in CHARTS} == at.runs
    assert (calls(setup.seen, "plan"), calls(setup.seen, "repair")) == (at.plans, at.repairs)


# --- llmi eval ---------------------------------------------------------------------------


def eval_model(gate: threading.Event) -> Callable[[dict[str, Any]], str]:
    """Plans a one-chart document per item; the plan of an item named ``stall`` waits for
    ``gate``."""

    def answer(body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        if "stall" in user:
            gate.wait(WAIT_S)
        word = user.split()[1]
        return f"# {word}\n\n" + tag("code", f"The {word} chart", code=chart(word)) + "\n\nEnd."

    return answer


ITEMS = ("first", "second", "stall", "third", "fourth")


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("finished", [1, 3])
def test_an_interrupted_evaluation_stops_cleanly_and_resumes(
    finished: int, signum: int, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": word, "prompt": f"The {word} item.",
                                        "image_num": 1}) + "\n" for word in ITEMS))
    out = tmp_path / "eval"
    results = out / "results.jsonl"
    gate = threading.Event()
    with routed_chat_server(eval_model(gate)) as (server, seen):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMI_", "OPENAI_"))}
        env |= {"LLMI_MODEL": "planner", "OPENAI_BASE_URL": server, "LLMI_CODE_SANDBOX": "off",
                "LLMI_TEST_RUNS": str(runs), "LLMI_ARTIFACTS": str(tmp_path / "artifacts")}
        command = [sys.executable, "-m", "llmi.cli", "eval", str(data), "--out", str(out),
                   "--concurrency", "2", "--scorer", "tool-use"]
        first = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = lambda: results.read_text().count("\n") if results.exists() else 0  # noqa: E731
            wait_for(lambda: lines() >= finished and any("stall" in str(r["body"]) for r in seen),
                     f"{finished} finished items and the stalled one", first)
            first.send_signal(signum)
            _, stderr = first.communicate(timeout=EXIT_WITHIN_S)
        finally:
            first.kill()
            gate.set()
        assert first.returncode == 128 + signum, stderr
        assert "Traceback" not in stderr and "Fatal Python error" not in stderr
        assert [line for line in stderr.splitlines() if line.startswith("llmi:")] == [
            "llmi: interrupted" if signum == signal.SIGINT else "llmi: stopped by SIGTERM"]
        assert "hint: run the same command again to resume" in stderr
        recorded = [json.loads(text) for text in results.read_text().splitlines()]
        assert results.read_text().endswith("\n")
        assert all(line["status"] == "ok" for line in recorded)
        assert "stall" not in [line["id"] for line in recorded]
        before = {line["id"] for line in recorded}

        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                                stdin=subprocess.DEVNULL)
    assert second.returncode == 0, second.stderr
    lines_by_id = {json.loads(t)["id"]: json.loads(t) for t in results.read_text().splitlines()}
    assert sorted(lines_by_id) == sorted(ITEMS)
    assert all(line["status"] == "ok" for line in lines_by_id.values())
    # Items recorded before the interrupt ran their chart once, and were not run again.
    assert all(len(runs_of(runs, word)) == 1 for word in before)
    assert all(len(runs_of(runs, word)) >= 1 for word in ITEMS)


# --- in a program: the graph's own behaviour on a stop ------------------------------------


@pytest.fixture
def stop() -> Iterator[Callable[[], None]]:
    yield stopping.request
    stopping.clear()


def test_a_stop_ends_the_round_with_what_finished_and_the_run_resumes_at_the_verifier(
    context: Context, stop: Callable[[], None]
) -> None:
    fast_done, release = threading.Event(), threading.Event()

    def behaviour(call: ToolCall) -> None:
        if call.request["params"]["query"] == "slow":
            release.wait(30)

    search = FakeTool("search", ("query",), behaviour=behaviour)
    graph = build_graph(model=fake_model(tag("search", query="fast") + tag("search", query="slow")),
                        tools=fake_tools(search=search)).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "stopped"}}
    failed: list[BaseException] = []

    def invoke() -> None:
        try:
            for event in graph.stream({"prompt": "p"}, config, context=context,
                                      stream_mode="custom", durability="sync"):
                if event.get("status") == "finished" and event["slot"] == 0:
                    fast_done.set()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failed.append(exc)

    runner = threading.Thread(target=invoke)
    runner.start()
    assert fast_done.wait(30)
    stop()
    runner.join(30)
    assert not runner.is_alive()
    assert [type(exc) for exc in failed] == [stopping.Stopped]
    state = graph.get_state(config)
    assert state.next == ("verifier",)
    assert [(r["slot"], r["ok"]) for r in state.values["results"]] == [(0, True)]

    stopping.clear()
    release.set()
    out = graph.invoke(None, config, context=context)
    manifest = json.loads(Path(out["outputs"]["manifest"]).read_text())
    assert [slot["ok"] for slot in manifest["slots"]] == [True, True]
    # The fast search is not made again; the abandoned slow one may have finished into
    # the tool cache before the resume, else it is made again.
    queries = [call.request["params"]["query"] for call in search.calls]
    assert queries.count("fast") == 1 and queries.count("slow") in (1, 2)


CLOSE_WHILE_WRITING = """
import sys, threading, time
from langgraph.checkpoint.base import empty_checkpoint
from llmi.checkpoints import open_checkpointer

errors = set()
for round_ in range(30):
    with open_checkpointer(f"{sys.argv[1]}/{round_}.sqlite") as saver:
        saver.setup()
        config = saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                           empty_checkpoint(), {}, {})
        def write():
            for task in range(10_000):
                try:
                    saver.put_writes(config, [("results", "x" * 5000)] * 20, f"task-{task}")
                except Exception as exc:
                    errors.add(type(exc).__name__)
                    return
        writers = [threading.Thread(target=write) for _ in range(4)]
        for writer in writers:
            writer.start()
        time.sleep(0.02)
    for writer in writers:
        writer.join()
print(sorted(errors))
"""


def test_closing_the_checkpointer_while_a_run_writes_never_crashes(tmp_path: Path) -> None:
    """An interrupted evaluation closes its checkpointer while items it left behind may
    still write: closing a sqlite3 connection in use crashed Python (SIGSEGV)."""
    done = subprocess.run([sys.executable, "-c", CLOSE_WHILE_WRITING, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['ProgrammingError']"]
