"""The resident server: llmi's libraries imported once, a forked child for each command.

``python -m llmi.cli.server SOCKET`` imports what ``llmi generate`` needs (LangGraph and its
SQLite checkpointer, the chat model client, Pillow, rich, every graph, node and tool), then
listens on ``SOCKET``. Each command (``llmi.cli.launch``) runs in a forked child that takes
the command's standard streams, working folder, umask and environment, and runs it as a
fresh ``llmi`` process would; the command is told the child's process id (to pass on
Ctrl-C and other signals) and, when the child ends, its exit status. A command whose
connection closes before its child ends (the terminal closed, the command killed) has its
child stopped with SIGTERM, as a run stopped at the terminal: it can be resumed.

While no command runs, the server forks the next command's child ahead (the spare), which
starts the chart zygote that a command of the server's environment uses, so that a chart
does not wait for its imports. A command that comes while the spare is taken gets a child
forked then.

The server forks only while it is a single thread. It exits after ``LLMI_SERVER_IDLE``
seconds (900 unless set) with nothing to run, on SIGTERM, SIGINT or SIGHUP, and when a
command finds it stale: a file it imported from llmi or a folder on its import path
changed since it started (llmi upgraded, or edited in place), or the command's
environment differs in a variable the server's imports read. That command is answered
``stale`` and runs in a process of its own, which starts a new server. A server that is
told to exit takes no more commands and exits once those it runs have ended.
A lock file beside the socket keeps one server per socket and holds its process id;
what the server did goes to a ``.log`` file there.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llmi
from llmi.cli import resident, wire

PRELOAD = (
    "langgraph.graph", "langgraph.checkpoint.sqlite", "langchain_openai", "PIL.Image",
    "rich.console", "rich.live", "rich.progress", "rich.prompt", "llmi.cli.commands",
    "llmi.cli.progress", "llmi.cli.review", "llmi.cli.runs", "llmi.cli.failures",
    "llmi.graphs.document", "llmi.graphs.tts", "llmi.checkpoints", "llmi.render",
    "llmi.tools.code", "openai.resources.chat", "openai.lib.streaming.chat",
    "langchain_core.tracers.context", "langchain_core.tracers.stdout",
    "langchain_core.tracers.run_collector",
)
"""What ``llmi generate`` imports, up to its first model call's reply."""
PRELOAD_WHERE_INSTALLED = ("httpcore2", "httpcore", "h11", "jiter", "truststore")
"""What the chat client's first request imports, in the versions that have them."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LOCK_WAIT_S = 10.0
log = logging.getLogger("llmi.server")


@dataclass
class Command:
    """A command's child and the connection of the ``llmi`` process waiting on it."""

    pid: int
    conn: socket.socket
    pidfd: int


@dataclass
class Spare:
    """A child forked ahead of the next command, which waits for it on ``sock`` with a chart
    zygote already started."""

    pid: int
    sock: socket.socket
    pidfd: int


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:])[0])
    os.umask(0o077)
    handler = logging.FileHandler(path.with_suffix(".log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if not _locked(lock):
        return 0  # another server has it
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    try:
        return Server(path).serve()
    except Exception:
        log.exception("the server failed")
        return 1
    finally:
        os.close(lock)


def _locked(lock: int) -> bool:
    """Whether this process took the lock within ``LOCK_WAIT_S``: a stale server lets go of
    it in moments, once the command that found it stale has started this one."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


class Server:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.commands: dict[int, Command] = {}
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.known: dict[str, int] = {}
        self.read: dict[str, str | None] = {}
        self.signals = (-1, -1)
        self.spare: Spare | None = None

    def serve(self) -> int:
        with _reading_environment() as self.read:
            for name in PRELOAD:
                importlib.import_module(name)
            for name in PRELOAD_WHERE_INSTALLED:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
        if (threads := len(os.listdir("/proc/self/task"))) != 1:
            log.error("not serving: importing llmi's libraries started %d threads", threads)
            return 1
        self.known = _watched()
        self.signals = _signal_pipe()
        self.selector.register(self.signals[0], selectors.EVENT_READ, ("signalled", 0))
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.listener.listen(16)
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", 0))
        log.info("serving on %s", self.path)
        self._fork_spare()
        try:
            self._loop(resident.idle_seconds())
        finally:
            self._stop_listening("exiting")
            self.selector.close()
        return 0

    def _loop(self, idle_s: float) -> None:
        """Serve until stopped or idle for ``idle_s``, then until the commands running have
        ended."""
        idle_since = time.monotonic()
        while self.listener is not None or self.commands:
            timeout = (None if self.commands
                       else max(0.0, idle_s - (time.monotonic() - idle_since)))
            events = self.selector.select(timeout)
            if not events and not self.commands:
                self._stop_listening("idle")
            for selected, _ in events:
                what, pid = selected.data
                if what == "accept":
                    self._accept()
                elif what == "ended":
                    self._ended(pid)
                elif what == "gone":
                    self._gone(pid)
                elif what == "spare ended":
                    self._spare_ended()
                else:
                    names = [signal.Signals(signum).name for signum in os.read(self.signals[0], 64)]
                    self._stop_listening(", ".join(names))
            idle_since = time.monotonic()

    def _accept(self) -> None:
        if self.listener is None:  # stopped by an event before this one
            return
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(5)
            uid = _peer_uid(conn)
            if uid != os.getuid():
                log.warning("refused a connection of uid %s", uid)
                conn.close()
                return
            request, fds = wire.receive(conn, max_fds=3)
            if request is None or len(fds) != 3:
                conn.close()
                return
            if changed := _changed(self.known) or _differs(self.read, request["env"]):
                wire.send(conn, {"stale": changed})
                conn.close()
                self._stop_listening(f"{changed} changed")
                return
            pid, pidfd = self._start(conn, request, fds)
            command = Command(pid, conn, pidfd)
            self.commands[pid] = command
            self.selector.register(pidfd, selectors.EVENT_READ, ("ended", pid))
            self.selector.register(conn, selectors.EVENT_READ, ("gone", pid))
            wire.send(conn, {"pid": pid})
        except (OSError, ValueError) as exc:
            log.warning("a command could not start: %s", exc)
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _start(self, conn: socket.socket, request: dict[str, Any],
               fds: list[int]) -> tuple[int, int]:
        """The process id and pidfd of the child that runs the command: the spare, or one
        forked now."""
        if (spare := self._take_spare()) is not None:
            try:
                wire.send(spare.sock, request, fds)
                return spare.pid, spare.pidfd
            except OSError:  # it ended before it read the command
                with contextlib.suppress(ProcessLookupError):
                    os.kill(spare.pid, signal.SIGKILL)
                _reaped(spare.pid, spare.pidfd)
            finally:
                spare.sock.close()
        pid = os.fork()
        if pid == 0:
            self._child(conn, request, fds)  # never returns
        return pid, os.pidfd_open(pid)

    def _fork_spare(self) -> None:
        """Fork the next command's child now, while no command runs: its chart zygote
        imports while nothing waits for it."""
        if self.spare is not None or self.listener is None or self.commands:
            return
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._spare(theirs)  # never returns
        theirs.close()
        self.spare = Spare(pid, ours, os.pidfd_open(pid))
        self.selector.register(self.spare.pidfd, selectors.EVENT_READ, ("spare ended", pid))

    def _take_spare(self) -> Spare | None:
        """The spare, no longer the server's to watch; None when there is none."""
        spare, self.spare = self.spare, None
        if spare is not None:
            self.selector.unregister(spare.pidfd)
        return spare

    def _spare_ended(self) -> None:
        """The spare ended before a command came; the next command gets a child of its own."""
        spare = self._take_spare()
        assert spare is not None
        code = _reaped(spare.pid, spare.pidfd)
        spare.sock.close()
        log.warning("the spare child ended, status %d", code)

    def _ended(self, pid: int) -> None:
        command = self.commands.pop(pid)
        self.selector.unregister(command.pidfd)
        with contextlib.suppress(KeyError):  # unless it has gone already
            self.selector.unregister(command.conn)
        code = _reaped(pid, command.pidfd)
        with contextlib.suppress(OSError):
            wire.send(command.conn, {"status": 128 - code if code < 0 else code})
        command.conn.close()
        self._fork_spare()

    def _gone(self, pid: int) -> None:
        """The command's connection has something to read: only its end is expected."""
        command = self.commands[pid]
        with contextlib.suppress(OSError):
            if command.conn.recv(1):
                return
        self.selector.unregister(command.conn)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def _child(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        """Run the command in this forked child, then exit."""
        status = 1
        try:
            self._release(conn)
            status = _run_command(request, fds)
        except BaseException:  # noqa: BLE001 - the child must never return to the server's loop
            traceback.print_exc()
        finally:
            _exit(status)

    def _spare(self, sock: socket.socket) -> None:
        """As the spare: start the chart zygote, then run the command that comes on
        ``sock``, and exit; exit as well when the server closes ``sock`` first."""
        status = 1
        try:
            self._release(None)
            _start_chart_zygote()
            request, fds = wire.receive(sock, max_fds=3)
            sock.close()
            if request is None:
                atexit._run_exitfuncs()  # the zygote and its folders
                status = 0
            else:
                status = _run_command(request, fds)
        except BaseException:  # noqa: BLE001 - as in _child
            traceback.print_exc()
        finally:
            _exit(status)

    def _release(self, conn: socket.socket | None) -> None:
        """Leave, in a child, everything of the server's: its signal handling, its socket,
        its commands."""
        signal.set_wakeup_fd(-1)
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for command in self.commands.values():
            command.conn.close()
            os.close(command.pidfd)
        self.selector.close()
        for fd in self.signals:
            os.close(fd)
        assert self.listener is not None
        self.listener.close()
        if conn is not None:
            conn.close()
        for handler in log.handlers[:]:
            log.removeHandler(handler)
            handler.close()

    def _stop_listening(self, reason: str) -> None:
        """Take no more commands; the server exits once those it runs have ended."""
        if self.listener is None:
            return
        log.info("stopping: %s", reason)
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if (spare := self._take_spare()) is not None:
            spare.sock.close()  # it reads the end, stops its zygote and exits
            _reaped(spare.pid, spare.pidfd)


def _reaped(pid: int, pidfd: int) -> int:
    """The exit code of the child ``pid``, waited for; its pidfd is closed."""
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    return os.waitstatus_to_exitcode(status)


def _run_command(request: dict[str, Any], fds: list[int]) -> int:
    """Take the command's streams, umask, environment and working folder, and run it;
    returns its exit status."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    fds.clear()
    _reopen_streams()
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = ["llmi", *request["argv"]]
    from llmi.cli.launch import run_here

    return run_here(request["argv"])


def _start_chart_zygote() -> None:
    """Start the chart zygote a command of the server's environment starts, and wait until
    it has read that environment, which the command's replaces. A command whose charts
    need another (another sandbox, other fonts) starts its own."""
    from llmi.context import Context
    from llmi.errors import LlmiError
    from llmi.tools.code import start_chart_zygote

    with contextlib.suppress(LlmiError):  # a setting that the command will refuse, if it is its
        thread = start_chart_zygote(Context())
        if thread is not None:
            thread.join()


def _exit(status: int) -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def _signal_pipe() -> tuple[int, int]:
    """A pipe whose reading end ``STOP_SIGNALS`` make readable (each signal's number a
    byte), so that the server's loop handles them between its events, never in the middle
    of one."""
    readable, writable = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(writable)
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: None)
    return readable, writable


def _peer_uid(conn: socket.socket) -> int:
    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


@contextlib.contextmanager
def _reading_environment() -> Iterator[dict[str, str | None]]:
    """The environment variables the block reads, with the values they had when first read.

    Libraries read some at import (LangGraph its recursion limit, openai its log level,
    LangSmith whether to trace), and keep what they read: a command whose environment
    differs in one of these must not run in a child of these imports.
    """
    read: dict[str, str | None] = {}

    class Recording(dict):
        def __getitem__(self, key: bytes) -> bytes:
            read.setdefault(os.fsdecode(key), os.fsdecode(value) if (value := self.get(key)) is not None else None)
            return super().__getitem__(key)

    # os.environ looks every name up in its _data, a dict of bytes in CPython.
    plain = os.environ._data  # type: ignore[attr-defined]
    os.environ._data = Recording(plain)  # type: ignore[attr-defined]
    try:
        yield read
    finally:
        os.environ._data = dict(os.environ._data)  # type: ignore[attr-defined]


def _differs(read: dict[str, str | None], env: dict[str, str]) -> str:
    """The first variable of ``read`` that ``env`` gives another value, or ``""``."""
    return next((f"${name}" for name, value in read.items() if env.get(name) != value), "")


def _watched() -> dict[str, int]:
    """Modification times of what the server's code came from: each file it imported from
    llmi, and each folder on its import path (installing or removing a package changes
    its folder)."""
    root = str(Path(llmi.__file__).parent.parent)
    files = {module.__file__ for module in list(sys.modules.values())
             if (getattr(module, "__name__", "").startswith("llmi")
                 and isinstance(getattr(module, "__file__", None), str)
                 and module.__file__.startswith(root))}
    paths = files | {entry for entry in sys.path if entry and os.path.isdir(entry)}
    return {path: os.stat(path).st_mtime_ns for path in paths}


def _changed(known: dict[str, int]) -> str:
    """The first of ``known`` whose modification time moved, or ``""``."""
    for path, mtime in known.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return path
        except OSError:
            return path
    return ""


def _reopen_streams() -> None:
    """New ``sys`` streams over descriptors 0-2, as an interpreter makes them at start:
    the same encoding, stdout line-buffered only on a terminal, stderr always."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        old = getattr(sys, name)
        lines = fd == 2 or (fd == 1 and os.isatty(1))
        stream = open(fd, "r" if fd == 0 else "w", buffering=1 if lines else -1,
                      encoding=old.encoding, errors=old.errors, closefd=False)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


if __name__ == "__main__":
    sys.exit(main())
