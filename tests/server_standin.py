"""The real ``langgraph dev`` server on a loopback port, offline, for the tests.

The server runs in a temporary project folder that holds a verbatim copy of the
repository's ``langgraph.json`` and of the graph files it names (``langgraph dev``
resolves graph paths against its working folder and writes its in-memory
runtime's ``.langgraph_api/`` there, so the repository is never written to).
Everything the server prints goes to a log file the tests read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Settings of the server process: no tracing, no analytics, no version check on PyPI,
# nothing from the developer's environment that could send a slot to a real service.
OFFLINE_ENV = {
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGCHAIN_TRACING": "false",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "PYTHONUNBUFFERED": "1",
    "NO_COLOR": "1",
}
_DROPPED_PREFIXES = ("LLMI_", "OPENAI_", "TAVILY_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_")
# A proxy would stand between the server and the loopback chat stand-in.
_DROPPED = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}
# What the in-memory runtime and blockbuster print when an async path blocks the event loop.
BLOCKING_MARKERS = ("BlockingError", "Blocking call", "blocking call")
# httpx logs every request the server's code makes: "HTTP Request: POST http://host:port/... ".
_HTTP_REQUEST = re.compile(r"HTTP Request: [A-Z]+ (\S+)")


@dataclass
class DevServer:
    url: str
    log: Path
    project: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def requested_urls(self) -> list[str]:
        """URLs the server's HTTP clients called, as its log shows them."""
        return _HTTP_REQUEST.findall(self.log_text())

    def blocking_errors(self) -> list[str]:
        return [line for line in self.log_text().splitlines()
                if any(marker in line for marker in BLOCKING_MARKERS)]


def langgraph_command() -> list[str]:
    """``langgraph``, the one installed next to this interpreter when there is one."""
    script = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    if script:
        return [script]
    return [sys.executable, "-c", "from langgraph_cli.cli import cli; cli()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def project_copy(folder: Path) -> Path:
    """``folder`` with the repository's langgraph.json and the graph files it names."""
    config = json.loads((REPO / "langgraph.json").read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "langgraph.json", folder / "langgraph.json")
    for spec in config["graphs"].values():
        path = spec.split(":", 1)[0]
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, folder / path)
    return folder


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED}
    env.update(OFFLINE_ENV)
    return env


@contextmanager
def dev_server(folder: Path, *, ready_s: float = 60.0) -> Iterator[DevServer]:
    """``langgraph dev`` serving langgraph.json on a free loopback port; stopped on exit."""
    project = project_copy(folder / "project")
    log = folder / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*langgraph_command(), "dev", "--host", "127.0.0.1", "--port", str(port),
               "--no-browser", "--no-reload", "--config", str(project / "langgraph.json")]
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, cwd=project, env=server_env(), stdin=subprocess.DEVNULL,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = DevServer(url=url, log=log, project=project, process=process)
    try:
        _wait_ready(server, ready_s)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: DevServer, ready_s: float) -> None:
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"langgraph dev exited with {server.process.returncode}:\n{server.log_text()[-6000:]}"
            )
        try:
            with urllib.request.urlopen(server.url + "/ok", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"langgraph dev was not ready in {ready_s:.0f} s:\n{server.log_text()[-6000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and every process it started (its own process group)."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    # Children (a chart job left behind, a worker) share the server's process group.
    _signal_group(process, signal.SIGKILL)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
