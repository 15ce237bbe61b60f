"""Durable runs: a killed ``llmi generate`` resumes with ``llmi resume`` and makes no finished
tool call again; SQLite by default, PostgreSQL when ``LLMI_TEST_POSTGRES_URL`` names a database.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from llmi.checkpoints import describe, is_postgres, latest, open_checkpointer, sqlite_path
from llmi.cli.runs import RunSettings
from llmi.cli import main
from llmi.context import Context

from helpers import tag
from openai_standin import chat_server, closed_port_url

POSTGRES_URL = os.environ.get("LLMI_TEST_POSTGRES_URL", "")
FAST = ("fast1", "fast2")
WAIT_S = 90
"""Longest the test waits for the fast charts to finish before it kills the run."""


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMI_CHECKPOINT_URL", raising=False)
    monkeypatch.delenv("LLMI_TOOL_CACHE", raising=False)


def chart(name: str, *, slow: bool = False) -> str:
    """Chart code that counts its runs in $LLMI_TEST_RUNS/<name>, a line each: its process
    id and working folder. A slow one waits for the file ``go`` there (at most two minutes)."""
    lines = [
        "import os, time",
        "runs = os.environ['LLMI_TEST_RUNS']",
        f"with open(os.path.join(runs, {name!r}), 'a') as f:",
        "    f.write(f'{os.getpid()} {os.getcwd()}\\n')",
    ]
    if slow:
        lines += [
            "deadline = time.monotonic() + 120",
            "while not os.path.exists(os.path.join(runs, 'go')) and time.monotonic() < deadline:",
            "    time.sleep(0.05)",
        ]
    lines += [f"plt.bar(['a', 'b'], [1, {len(name)}])", f"plt.title({name!r})"]
    return "\n".join(lines)


DRAFT = (
    "# Three charts\n\n"
    + tag("code", "The first fast chart", code=chart("fast1"))
    + "\n\nSome text.\n\n"
    + tag("code", "The slow chart", code=chart("slow", slow=True))
    + "\n\nMore text.\n\n"
    + tag("code", "The second fast chart", code=chart("fast2"))
    + "\n\nThe end."
)


def runs_of(folder: Path, name: str) -> list[str]:
    path = folder / name
    return path.read_text().splitlines() if path.exists() else []


def planner_calls(seen: list[dict]) -> int:
    return sum("<imgen>" in r["body"]["messages"][0]["content"] for r in seen)


def store_url(kind: str) -> str:
    if kind == "postgres":
        if not POSTGRES_URL:
            pytest.skip("set LLMI_TEST_POSTGRES_URL to a PostgreSQL database to run this")
        return POSTGRES_URL
    return ""


def kill_chart(run: str) -> None:
    """End the chart process a killed run left behind (it runs in its own session), and
    remove its temporary folder, which its killed parent would have removed."""
    pid, _, cwd = run.partition(" ")
    with suppress(ValueError, psutil.Error, ProcessLookupError, PermissionError):
        process = psutil.Process(int(pid))
        if any("chart_runner" in part for part in process.cmdline()):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    job = Path(cwd).parent
    if job.name.startswith("llmi-chart-") and (job / "job" / "job.json").is_file():
        shutil.rmtree(job, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
@pytest.mark.parametrize("graph", ["document", "tts"])
def test_a_killed_run_resumes_without_rerunning_finished_tools(
    store: str, graph: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = store_url(store)
    runs = tmp_path / "runs"
    runs.mkdir()
    first_cwd, second_cwd = tmp_path / "first", tmp_path / "second"
    first_cwd.mkdir()
    second_cwd.mkdir()
    thread = f"test-{uuid.uuid4()}"
    flags = ["--candidates", "2", "--keep", "1"] if graph == "tts" else []
    cache_dir = Path(os.environ["LLMI_ARTIFACTS"]) / "cache"
    with chat_server(DRAFT) as (server, seen):
        env = dict(os.environ, LLMI_MODEL="llmi-test-model", OPENAI_BASE_URL=server,
                   LLMI_TEST_RUNS=str(runs), LLMI_CODE_TIMEOUT="150", LLMI_SLOT_TIMEOUT="200",
                   LLMI_CHECKPOINT_URL=url,
                   # The charts tell this test they ran through a folder outside any jail.
                   LLMI_CODE_SANDBOX="off")
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(
            [sys.executable, "-m", "llmi.cli", "generate", "Three charts", "--out", "out",
             "--thread", thread, *flags],
            cwd=first_cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and first.poll() is None:
                finished = len(list(cache_dir.glob("*.json"))) if cache_dir.is_dir() else 0
                if finished == len(FAST) and runs_of(runs, "slow"):
                    break
                time.sleep(0.1)
            assert first.poll() is None, f"the run ended early:\n{(tmp_path / 'first.log').read_text()}"
            assert len(list(cache_dir.glob("*.json"))) == len(FAST), "the fast charts never finished"
        finally:
            with suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            log.close()
            for pid in runs_of(runs, "slow"):
                kill_chart(pid)
        assert first.returncode == -signal.SIGKILL
        printed = (tmp_path / "first.log").read_text()
        assert f"llmi resume {thread}" in printed
        assert not (first_cwd / "out" / "manifest.json").exists()
        planned = planner_calls(seen)
        assert [len(runs_of(runs, name)) for name in (*FAST, "slow")] == [1, 1, 1]

        # The slow chart is quick now; resume from another folder.
        (runs / "go").touch()
        resume = ["resume", thread]
        out = first_cwd / "out"
        if graph == "tts":
            out = tmp_path / "elsewhere"
            resume += ["--out", str(out)]
        second = subprocess.run([sys.executable, "-m", "llmi.cli", *resume], cwd=second_cwd,
                                env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == [str(out / n) for n in ("document.md", "document.html",
                                                             "manifest.json")]
    assert f"resuming run {thread}" in second.stderr
    # The finished charts did not run again; the slow one ran once more; no new plan.
    assert [len(runs_of(runs, name)) for name in (*FAST, "slow")] == [1, 1, 2]
    assert planner_calls(seen) == planned
    manifest = json.loads((out / "manifest.json").read_text())
    slots = {slot["description"]: slot for slot in manifest["slots"]}
    assert all(slot["ok"] for slot in slots.values()), manifest["slots"]
    assert slots["The first fast chart"]["cached"] and slots["The second fast chart"]["cached"]
    assert not slots["The slow chart"]["cached"]
    assert ("winner" in manifest) == (graph == "tts")
    assert manifest["text"].count("<image>") == 3

    # Resuming again says the run is done and prints its document.
    again = subprocess.run([sys.executable, "-m", "llmi.cli", "resume", thread], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stderr
    assert again.stdout.split() == second.stdout.split()


# --- the resume command in-process ----------------------------------------------------


TEXT_ONLY = "# A note\n\nNo pictures needed."


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoint_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    url = store_url(request.param)
    if url:
        monkeypatch.setenv("LLMI_CHECKPOINT_URL", url)
    return url


def test_an_unknown_run(checkpoint_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resume", "no-such-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("llmi: no run no-such-run in the checkpoints")
    assert lines[1].startswith("hint: use the ID `llmi generate` printed")
    assert "Traceback" not in "\n".join(lines)


def test_a_run_that_failed_resumes_where_it_stopped(
    checkpoint_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    thread = f"test-{uuid.uuid4()}"
    out = tmp_path / "out"
    monkeypatch.setenv("LLMI_MODEL", "m")
    monkeypatch.setenv("OPENAI_BASE_URL", closed_port_url())
    monkeypatch.setenv("LLMI_MODEL_TIMEOUT", "2")
    assert main(["generate", "A note", "--thread", thread, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"llmi resume {thread}" in err and "did not answer" in err
    # The same ID again is refused: it names a run that exists.
    assert main(["generate", "A note", "--thread", thread]) == 2
    assert f"run {thread} already exists" in capsys.readouterr().err
    with chat_server(TEXT_ONLY) as (url, seen):
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.chdir(tmp_path)
        assert main(["resume", thread]) == 0
    captured = capsys.readouterr()
    assert captured.out.split()[0] == str(out / "document.md")
    assert "No pictures needed." in (out / "document.md").read_text()
    # The prompt came from the checkpoint.
    assert "A note" in json.dumps(seen[0]["body"]["messages"][1]["content"])
    assert main(["resume", thread]) == 0
    captured = capsys.readouterr()
    assert "already finished" in captured.err and captured.out.split()[0] == str(out / "document.md")


def test_the_demo_remembers_its_recorded_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = RunSettings.of(Context(out_dir="demo"), model="recorded", formats=("md", "pdf"))
    again = RunSettings.from_metadata(settings.metadata())
    assert again == settings and again.out_dir == str(tmp_path / "demo")
    assert again.context().out_dir == str(tmp_path / "demo")
    assert RunSettings.from_metadata({}) is None
    assert RunSettings.from_metadata({"llmi_run": "{not json"}) is None


def test_checkpoint_urls(tmp_path: Path) -> None:
    assert sqlite_path("") == tmp_path / "cache" / "llmi" / "checkpoints.sqlite"
    assert sqlite_path("sqlite:///var/lib/llmi/runs.sqlite") == Path("/var/lib/llmi/runs.sqlite")
    assert sqlite_path(str(tmp_path / "x.sqlite")) == tmp_path / "x.sqlite"
    assert is_postgres("postgresql://u:p@db:5432/llmi") and is_postgres("postgres://db/llmi")
    assert not is_postgres("sqlite:///x") and not is_postgres("/tmp/x")
    shown = describe("postgresql://me:hunter2@db.internal:5432/llmi")
    assert shown == "PostgreSQL at db.internal:5432/llmi" and "hunter2" not in shown


def test_sqlite_commits_ahead_of_the_disk(tmp_path: Path) -> None:
    # A killed run keeps its checkpoints all the same (the test above); the file is never
    # flushed in the middle of a commit without a journal that makes the commit whole.
    with open_checkpointer(str(tmp_path / "runs.sqlite")) as saver:
        latest(saver, "none")  # makes its tables
        assert saver.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert saver.conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_a_sqlite_url_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "elsewhere" / "runs.sqlite"
    monkeypatch.setenv("LLMI_CHECKPOINT_URL", f"sqlite://{db}")
    monkeypatch.setenv("LLMI_MODEL", "m")
    with chat_server(TEXT_ONLY) as (url, _):
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        assert main(["generate", "A note", "--thread", "t1", "--out", str(tmp_path / "o")]) == 0
    assert db.is_file()
    assert not (tmp_path / "cache" / "llmi" / "checkpoints.sqlite").exists()
    assert main(["resume", "t1"]) == 0
    assert "already finished" in capsys.readouterr().err


def test_an_unreachable_postgres_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("langgraph.checkpoint.postgres")
    port = closed_port_url().split(":")[2].split("/")[0]
    monkeypatch.setenv("LLMI_CHECKPOINT_URL", f"postgresql://me:hunter2@127.0.0.1:{port}/llmi")
    assert main(["resume", "x"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to the checkpoint database (PostgreSQL at 127.0.0.1" in err
    assert "hunter2" not in err and "Traceback" not in err
