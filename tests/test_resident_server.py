"""The resident server (``llmi.cli.server``) and the ``llmi`` command's way to it
(``llmi.cli.launch``), each test with a server of its own in a folder of its own.

A command sent to the server is a real ``python -m llmi.cli`` process; that it was served
shows in what it imported (``-X importtime``): the command module and LangGraph only in a
process that ran the command itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from llmi.cli import resident, server

from helpers import tag
from openai_standin import routed_chat_server

WAIT_S = 60
DRAFT = "# A note\n\nOne paragraph, no image.\n"


@dataclass
class Served:
    """A running server: the environment that sends a command to it, its process."""

    env: dict[str, str]
    process: subprocess.Popen[bytes]
    socket: Path

    def llmi(self, *args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-X", "importtime", "-m", "llmi.cli", *args],
                                env=env or self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                **popen)

    def run(self, *args: str, env: dict[str, str] | None = None, **popen) -> tuple[int, str, str]:
        process = self.llmi(*args, env=env, **popen)
        out, err = process.communicate(timeout=300)
        return process.returncode, out, err


def ran_here(importtime: str) -> bool:
    """Whether the process that wrote this ``-X importtime`` report ran its command."""
    return "llmi.cli.commands" in importtime


def lines(stderr: str) -> str:
    """Standard error without the ``-X importtime`` report."""
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A private runtime folder with a short path: a Unix socket's path is short."""
    folder = Path(tempfile.mkdtemp(prefix="llmi-rt-"))
    try:
        yield folder
    finally:
        for lock in folder.glob("llmi/*.lock"):  # servers the commands started
            if pid := lock.read_text().strip():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
        shutil.rmtree(folder, ignore_errors=True)


def start(runtime: Path, **env: str) -> Served:
    """A server started as ``llmi`` starts one, with ``env`` added to this test's
    environment; returns once it listens."""
    command_env = dict(os.environ, LLMI_SERVER="on", XDG_RUNTIME_DIR=str(runtime))
    folder = runtime / "llmi"
    folder.mkdir(mode=0o700, exist_ok=True)
    socket = resident.socket_in(folder)
    process = subprocess.Popen([sys.executable, "-P", "-m", "llmi.cli.server", str(socket)],
                               env=command_env | env, cwd="/", stdin=subprocess.DEVNULL,
                               start_new_session=True)
    wait_for(lambda: socket.exists() or process.poll() is not None, "the server")
    assert process.poll() is None, socket.with_suffix(".log").read_text()
    return Served(command_env, process, socket)


@pytest.fixture
def served(runtime: Path) -> Iterator[Served]:
    serving = start(runtime, LLMI_MODEL="the-servers-model")
    try:
        yield serving
    finally:
        serving.process.terminate()
        serving.process.wait(timeout=WAIT_S)


def test_a_command_runs_in_a_child_of_the_server(served: Served) -> None:
    status, out, err = served.run("--version")
    assert (status, out) == (0, "llmi 0.1.0\n")
    assert "llmi.cli.launch" in err and not ran_here(err) and "langgraph" not in err


def test_the_command_keeps_its_own_status_streams_and_environment(served: Served) -> None:
    status, out, err = served.run("bogus")
    assert status == 2 and out == ""
    assert "invalid choice: 'bogus'" in lines(err) and not ran_here(err)
    # The server started with LLMI_MODEL set; the command's environment has none.
    status, out, err = served.run("generate", "a guide")
    assert status == 2 and "llmi: no chat model is configured" in lines(err)
    assert not ran_here(err)


def test_a_document_is_written_where_the_command_runs(served: Served, tmp_path: Path) -> None:
    status, out, err = served.run("demo", "--out", "guide", cwd=tmp_path,
                                  preexec_fn=lambda: os.umask(0o027))
    assert status == 0, lines(err)
    assert not ran_here(err)
    document = tmp_path / "guide" / "document.md"
    assert out.splitlines()[0] == str(document)
    assert "Grace Hopper" in document.read_text()
    assert document.stat().st_mode & 0o777 == 0o640


def test_a_served_chart_draws_in_a_zygote_started_before_its_command(
        runtime: Path, tmp_path: Path) -> None:
    # Unjailed, so that the chart sees the zygote's process id as it is.
    serving = start(runtime, LLMI_CODE_SANDBOX="off")
    try:
        def zygotes() -> set[int]:
            return {process.pid for process in
                    psutil.Process(serving.process.pid).children(recursive=True)
                    if "--zygote" in process.cmdline()}

        wait_for(zygotes, "the next command's zygote")
        started_before = zygotes()
        code = ("import os\n"
                "with open(os.path.join(os.environ['LLMI_TEST_RUNS'], 'parent'), 'w') as f:\n"
                "    f.write(str(os.getppid()))\n"
                "plt.bar(['a', 'b'], [1, 2])")
        draft = DRAFT + "\n" + tag("code", "Two bars", code=code)
        with routed_chat_server(lambda body: draft) as (url, _):
            status, out, err = serving.run("generate", "A note", "--out", str(tmp_path / "out"),
                                           env=serving.env | {
                "LLMI_MODEL": "test-model", "OPENAI_BASE_URL": url,
                "LLMI_CHECKPOINT_URL": str(tmp_path / "checkpoints.sqlite"),
                "LLMI_CODE_SANDBOX": "off", "LLMI_TEST_RUNS": str(tmp_path)})
        assert status == 0 and not ran_here(err), lines(err)
        assert int((tmp_path / "parent").read_text()) in started_before
    finally:
        serving.process.terminate()
        serving.process.wait(timeout=WAIT_S)


@dataclass
class Planning:
    """A served ``llmi generate`` whose planner's call is under way: the model answers
    once ``gate`` is set."""

    command: subprocess.Popen[str]
    env: dict[str, str]
    gate: threading.Event
    out: Path


@pytest.fixture
def planning(served: Served, tmp_path: Path) -> Iterator[Planning]:
    gate = threading.Event()

    def answer(body: dict) -> str:
        gate.wait(WAIT_S)
        return DRAFT

    with routed_chat_server(answer) as (url, seen):
        env = served.env | {"LLMI_MODEL": "test-model", "OPENAI_BASE_URL": url,
                            "LLMI_CHECKPOINT_URL": str(tmp_path / "checkpoints.sqlite")}
        command = served.llmi("generate", "A note", "--out", str(tmp_path / "out"),
                              "--thread", "a-note", env=env)
        wait_for(lambda: seen, "the planner's call")
        try:
            yield Planning(command, env, gate, tmp_path / "out")
        finally:
            gate.set()
            if command.poll() is None:
                command.kill()
                command.wait(timeout=WAIT_S)


def test_ctrl_c_stops_the_served_run_and_it_resumes(served: Served, planning: Planning) -> None:
    command = planning.command
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=WAIT_S)
    assert command.returncode == 130, lines(err)
    assert "llmi: interrupted" in lines(err) and "llmi resume a-note" in lines(err)
    assert not ran_here(err)
    planning.gate.set()
    status, out, err = served.run("resume", "a-note", env=planning.env)
    assert status == 0, lines(err)
    assert (planning.out / "document.md").read_text().startswith("# A note")


def test_ctrl_z_stops_the_served_run_and_a_continued_command_continues_it(
        served: Served, planning: Planning) -> None:
    command = planning.command
    [child] = psutil.Process(served.process.pid).children()
    command.send_signal(signal.SIGTSTP)
    wait_for(lambda: psutil.Process(command.pid).status() == psutil.STATUS_STOPPED
             and child.status() == psutil.STATUS_STOPPED, "the command and its run to stop")
    command.send_signal(signal.SIGCONT)
    wait_for(lambda: child.status() != psutil.STATUS_STOPPED, "the run to go on")
    planning.gate.set()
    out, err = command.communicate(timeout=WAIT_S)
    assert command.returncode == 0, lines(err)
    assert (planning.out / "document.md").exists()


def test_a_command_that_dies_stops_its_run(planning: Planning) -> None:
    command = planning.command
    command.kill()
    # The child writes to the same stream, and holds it open until it ends.
    err = command.stderr.read()
    command.wait(timeout=WAIT_S)
    assert "llmi: stopped by SIGTERM" in lines(err) and "llmi resume a-note" in lines(err)
    assert not (planning.out / "document.md").exists()


def test_a_served_command_reviews_its_plan_on_the_commands_terminal(
        served: Served, tmp_path: Path) -> None:
    draft = DRAFT + "\n" + tag("code", "Tracks by month", code="plt.bar(['Jan', 'Feb'], [3, 5])")
    with routed_chat_server(lambda body: draft) as (url, _):
        env = served.env | {"LLMI_MODEL": "test-model", "OPENAI_BASE_URL": url,
                            "LLMI_CHECKPOINT_URL": str(tmp_path / "checkpoints.sqlite"),
                            "TERM": "xterm", "COLUMNS": "100", "LINES": "40"}
        main, terminal = pty.openpty()
        command = subprocess.Popen([sys.executable, "-m", "llmi.cli", "generate", "A note",
                                    "--review", "--out", str(tmp_path / "out")], env=env,
                                   stdin=terminal, stdout=terminal, stderr=terminal)
        os.close(terminal)
        shown = Screen(main)
        try:
            wait_for(lambda: "accept the plan, edit it, or quit?" in shown.text, "the prompt")
            assert psutil.Process(served.process.pid).children(), "the command ran itself"
            os.write(main, b"accept\n")
            assert command.wait(timeout=WAIT_S) == 0, shown.text
        finally:
            if command.poll() is None:
                command.kill()
            shown.close()
    assert "image 0: code" in shown.text and "Tracks by month" in shown.text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [slot["ok"] for slot in manifest["slots"]] == [True]


class Screen:
    """What a terminal shows: everything written to its side ``main`` of a pseudo-terminal,
    read as it comes."""

    def __init__(self, main: int) -> None:
        self.main, self.chunks = main, []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.main, 4096)
            except OSError:  # the other side closed
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    def close(self) -> None:
        self.reader.join(timeout=WAIT_S)
        os.close(self.main)


def test_a_server_told_to_stop_finishes_the_commands_it_runs(
        served: Served, planning: Planning) -> None:
    command = planning.command
    served.process.terminate()
    wait_for(lambda: not served.socket.exists(), "the server to stop listening")
    assert served.process.poll() is None
    planning.gate.set()
    out, err = command.communicate(timeout=WAIT_S)
    assert command.returncode == 0, lines(err)
    assert (planning.out / "document.md").exists()
    assert served.process.wait(timeout=WAIT_S) == 0
    assert "stopping: SIGTERM" in served.socket.with_suffix(".log").read_text()


def test_a_server_whose_imports_read_another_environment_steps_aside(
        served: Served, runtime: Path) -> None:
    # LangGraph reads its default recursion limit once, on import.
    status, out, err = served.run("--version", env=served.env | {
        "LANGGRAPH_DEFAULT_RECURSION_LIMIT": "77"})
    assert (status, out) == (0, "llmi 0.1.0\n")
    assert ran_here(err)
    served.process.wait(timeout=WAIT_S)
    assert "LANGGRAPH_DEFAULT_RECURSION_LIMIT changed" in served.socket.with_suffix(".log").read_text()
    # The command started a server for the next one.
    wait_for(served.socket.exists, "a new server")
    assert served.socket.with_suffix(".lock").read_text().strip() != str(served.process.pid)


def test_without_a_server_the_command_runs_here_and_starts_one(runtime: Path) -> None:
    env = dict(os.environ, LLMI_SERVER="on", XDG_RUNTIME_DIR=str(runtime))
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmi.cli", "--version"],
                          env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert (done.returncode, done.stdout) == (0, "llmi 0.1.0\n") and ran_here(done.stderr)
    socket = resident.socket_in(runtime / "llmi")
    wait_for(socket.exists, "the server it started")
    served = Served(env, None, socket)  # type: ignore[arg-type]
    status, out, err = served.run("--version")
    assert (status, out) == (0, "llmi 0.1.0\n") and not ran_here(err)


def test_a_folder_others_may_enter_is_not_used(runtime: Path) -> None:
    (runtime / "llmi").mkdir(mode=0o755)
    os.chmod(runtime / "llmi", 0o755)
    env = dict(os.environ, LLMI_SERVER="on", XDG_RUNTIME_DIR=str(runtime))
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmi.cli", "--version"],
                          env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0 and ran_here(done.stderr)
    time.sleep(1)
    assert [path.name for path in (runtime / "llmi").iterdir()] == []


def test_an_idle_server_exits(runtime: Path) -> None:
    serving = start(runtime, LLMI_SERVER_IDLE="0.5")
    assert serving.process.wait(timeout=WAIT_S) == 0
    assert not serving.socket.exists()
    assert "stopping: idle" in serving.socket.with_suffix(".log").read_text()


@pytest.mark.parametrize(("name", "value", "said"), [
    ("LLMI_SERVER", "maybe", "LLMI_SERVER must be on or off, not 'maybe'"),
    ("LLMI_SERVER_IDLE", "soon", "LLMI_SERVER_IDLE must be a number of seconds, not 'soon'"),
    ("LLMI_SERVER_IDLE", "0", "LLMI_SERVER_IDLE must be more than 0 seconds, not '0'"),
])
def test_a_bad_setting_is_refused(runtime: Path, name: str, value: str, said: str) -> None:
    env = dict(os.environ, LLMI_SERVER="on", XDG_RUNTIME_DIR=str(runtime)) | {name: value}
    done = subprocess.run([sys.executable, "-m", "llmi.cli", "--version"], env=env,
                          capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"llmi: {said}\nhint: ")


def test_changed_code_makes_a_server_stale(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    known = {str(module): module.stat().st_mtime_ns}
    assert server._changed(known) == ""
    os.utime(module, ns=(0, module.stat().st_mtime_ns + 1_000_000))
    assert server._changed(known) == str(module)
    module.unlink()
    assert server._changed(known) == str(module)


def test_the_socket_folder_must_be_private_and_its_path_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ("long" * 30)))
    assert resident.socket_path() is None
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert resident.socket_path() == tmp_path / "llmi" / f"server-{resident.key()}.sock"
    os.chmod(tmp_path / "llmi", 0o750)
    assert resident.socket_path() is None
    (tmp_path / "file").touch()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "file"))
    assert resident.socket_path() is None


def test_server_status_and_stop(served: Served) -> None:
    pid = served.process.pid
    status, out, err = served.run("server", "status")
    assert (status, out) == (0, f"server {pid} serves {served.socket}\n") and not ran_here(err)
    status, out, err = served.run("server", "stop", env=served.env | {"LLMI_SERVER": "off"})
    assert (status, out) == (0, f"server {pid} stopped\n"), lines(err)
    assert served.process.wait(timeout=WAIT_S) == 0
    status, out, err = served.run("server", "status", env=served.env | {"LLMI_SERVER": "off"})
    assert (status, out) == (1, f"no server runs for {served.socket}\n")


def test_a_served_stop_stops_its_own_server(served: Served) -> None:
    status, out, err = served.run("server", "stop")
    assert (status, out) == (0, f"server {served.process.pid} is stopping\n"), lines(err)
    assert not ran_here(err)
    assert served.process.wait(timeout=WAIT_S) == 0


def test_server_status_where_no_server_can_run(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    done = subprocess.run([sys.executable, "-m", "llmi.cli", "server", "status"],
                          env=dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "file")),
                          capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 2
    assert done.stderr.startswith(f"llmi: no resident server can run here: {tmp_path}/file/llmi "
                                  "cannot be made")
