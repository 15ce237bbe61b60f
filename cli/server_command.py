"""``llmi server status|stop``: the resident server of this interpreter
(``llmi.cli.server``), which ``LLMI_SERVER=on`` starts."""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import TYPE_CHECKING

from llmi.cli import resident
from llmi.errors import LlmiError

if TYPE_CHECKING:
    from rich.console import Console

STOP_WAIT_S = 10.0
NOT_RUNNING = 1


def add_server_parser(commands: argparse._SubParsersAction) -> None:
    """The ``server`` command's arguments, among ``commands``."""
    server = commands.add_parser(
        "server", help="show or stop the resident server (LLMI_SERVER=on)",
        description="Show whether the resident server of this Python runs (its process id and "
        "socket; exit status 1 when none runs), or stop it: it takes no more commands and "
        "exits once those it runs have ended.",
    )
    server.add_argument("action", choices=["status", "stop"])


def server_command(args: argparse.Namespace, console: Console) -> int:
    path = resident.socket_path()
    if path is None:
        raise LlmiError(f"no resident server can run here: {resident.folder_path()} cannot be "
                        "made, is not private, or its path is too long for a socket",
                        "set XDG_RUNTIME_DIR to a short folder only you may enter")
    pid = resident.running(path)
    if pid is None:
        print(f"no server runs for {path}")
        return NOT_RUNNING
    if args.action == "status":
        print(f"server {pid} serves {path}")
        return 0
    os.kill(pid, signal.SIGTERM)
    # A command the server runs itself ends before the server can.
    deadline = time.monotonic() + (0 if os.getppid() == pid else STOP_WAIT_S)
    while resident.running(path) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"server {pid} {'is stopping' if resident.running(path) == pid else 'stopped'}")
    return 0
