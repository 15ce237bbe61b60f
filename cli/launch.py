"""The ``llmi`` command's entry: the command runs in this process, or, with
``LLMI_SERVER=on``, in a child of the resident server (``llmi.cli.server``).

Through the server, this process sends its arguments, environment, working folder, umask
and standard streams, passes on the signals it gets (Ctrl-C, SIGTERM, a resized
terminal, Ctrl-Z) to the child, and exits with the child's status. Where no server
answers, or the one that answers is stale, the command runs here, and a server is started
for the next one once this has ended, so that it does not take the cores this run needs.
Standard library only until the command runs here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

from llmi.cli import resident

ANSWER_S = 10.0
"""Seconds to wait for the server to say it started the command; then it runs here."""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)


def entry() -> None:
    """The ``llmi`` command; it ends with ``os._exit``: when the command returns,
    everything its run made is on disk (``run_here``)."""
    argv = sys.argv[1:]
    try:
        served = resident.wanted()
        if served:
            resident.idle_seconds()
    except resident.ServerSettingError as exc:
        print(f"llmi: {exc}\nhint: set {resident.SETTING} to on or off, or unset it",
              file=sys.stderr)
        os._exit(2)
    if served:
        status = forwarded(argv)
        if status is not None:
            os._exit(status)
    status = run_here(argv)
    if served:
        start_server()
    os._exit(status)


def run_here(argv: Sequence[str]) -> int:
    """Run the command in this process: ``main``, then llmi's clean-up (chart processes,
    temporary folders). The caller ends the process with ``os._exit``.

    The interpreter's own exit would join every thread of a ThreadPoolExecutor, daemon or
    not, among them work an interrupt left behind (a model call cannot be cut short; its
    step runs again on resume), and then tear down the thousands of modules a run imports,
    a second on a small machine.
    """
    from llmi.cli.commands import main

    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's --help and its errors; as the interpreter reads it
        status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    return status


def forwarded(argv: Sequence[str]) -> int | None:
    """The command's exit status, run by the resident server; None where none answered, or
    the one that answered is stale (it exits; the command should run here)."""
    import socket  # here: a command that runs in this process needs none of it

    from llmi.cli import wire

    path = resident.socket_path()
    if path is None:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
            request = {"argv": list(argv), "env": dict(os.environ), "cwd": os.getcwd(),
                       "umask": _umask()}
        except OSError:  # no server, a stale socket, or a working folder that is gone
            return None
        with _forwarding() as started, _streams() as fds:
            try:
                wire.send(sock, request, fds)
                sock.settimeout(ANSWER_S)
                answer, _ = wire.receive(sock)
            except (OSError, ValueError):
                return None
            if answer is None or "pid" not in answer:
                return None
            sock.settimeout(None)
            started(answer["pid"])
            answer, _ = wire.receive(sock)
    if answer is None:
        print("llmi: the llmi server stopped before the command ended\n"
              f"hint: run it again, or set {resident.SETTING}=off", file=sys.stderr)
        return 1
    return int(answer["status"])


@contextlib.contextmanager
def _forwarding() -> Iterator[Callable[[int], None]]:
    """Pass on ``FORWARDED`` signals to the child, once the block has called what it gets
    with the child's pid (signals that come before wait for it); Ctrl-Z stops the child,
    then this process."""
    child: list[int] = []
    waiting: list[int] = []

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child[0], signum)

    def forward(signum: int, frame: object) -> None:
        if child:
            send(signum)
        else:
            waiting.append(signum)

    def suspend(signum: int, frame: object) -> None:
        if child:
            send(signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    def started(pid: int) -> None:
        child.append(pid)
        for signum in waiting:
            send(signum)

    handlers = {signum: forward for signum in FORWARDED} | {signal.SIGTSTP: suspend}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield started
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _streams() -> Iterator[list[int]]:
    """Descriptors 0-2, each closed one standing in for /dev/null, as a fresh process
    would find them."""
    opened: list[int] = []
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            opened.append(os.open(os.devnull, os.O_RDWR))
            fds.append(opened[-1])
    try:
        yield fds
    finally:
        for fd in opened:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def start_server() -> None:
    """Start a resident server in the background, in a session of its own, for the next
    command; one that finds another holding its lock exits at once."""
    import subprocess

    path = resident.socket_path()
    if path is None:
        return
    with contextlib.suppress(OSError):
        subprocess.Popen([sys.executable, "-P", "-m", "llmi.cli.server", str(path)],
                         cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
