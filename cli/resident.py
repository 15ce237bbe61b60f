"""The resident server's address and wire format, shared by the ``llmi`` command and the
server (``llmi.cli.server``). Standard library only: the command reads this before it
imports anything else.

With ``LLMI_SERVER=on`` the ``llmi`` command hands its arguments, environment, working
folder and standard streams to a resident server that imported llmi's libraries once,
and the server forks a child that runs the command as a fresh process would
(``llmi.cli.launch``). The server listens on a Unix socket in a folder only the user can
enter: ``$XDG_RUNTIME_DIR/llmi``, else ``$TMPDIR/llmi-<uid>`` (as tmux names its own).
One server serves one interpreter and one way of starting it: the socket's name is a hash
of the Python executable and version, llmi's location, and the environment variables that
change how an interpreter starts (``PYTHON*``, the locale), so a command never reaches a
server that would run it differently.

Messages are length-prefixed JSON: four bytes of big-endian length, then the object.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Any

import llmi

SETTING = "LLMI_SERVER"
ON, OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no", "")
SUPPORTED = sys.platform == "linux"
"""It forks, passes descriptors over Unix sockets and reads ``/proc``: Linux only."""
IDLE_SETTING, IDLE_S = "LLMI_SERVER_IDLE", 900.0
"""A server with no command to run for this many seconds exits."""
MAX_SOCKET_PATH = 107
"""Bytes in a Unix socket's path, Linux's ``sun_path`` less its final NUL."""
_HEADER = struct.Struct(">I")
MAX_MESSAGE = 1 << 22
STARTUP_ENV = ("LANG", "LANGUAGE")
"""Besides ``PYTHON*`` and ``LC_*``: what an interpreter reads as it starts."""


class ServerSettingError(ValueError):
    """``LLMI_SERVER`` holds a value that is neither on nor off."""


def wanted(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether ``LLMI_SERVER`` asks for the resident server (where it can run)."""
    value = environ.get(SETTING, "").strip().lower()
    if value not in ON + OFF:
        raise ServerSettingError(f"{SETTING} must be on or off, not {environ[SETTING]!r}")
    return value in ON and SUPPORTED


def idle_seconds() -> float:
    """``LLMI_SERVER_IDLE``, or ``IDLE_S``."""
    value = os.environ.get(IDLE_SETTING, "")
    try:
        seconds = float(value) if value else IDLE_S
    except ValueError:
        raise ServerSettingError(f"{IDLE_SETTING} must be a number of seconds, not {value!r}") from None
    if not seconds > 0:
        raise ServerSettingError(f"{IDLE_SETTING} must be more than 0 seconds, not {value!r}")
    return seconds


def folder() -> Path:
    """The folder of the user's sockets, made private when missing; raises OSError when it
    cannot be made."""
    base = folder_path()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def folder_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return (Path(runtime, "llmi") if runtime
            else Path(os.environ.get("TMPDIR") or "/tmp", f"llmi-{os.getuid()}"))


def private(path: Path) -> bool:
    """Whether ``path`` is a folder of this user's that no one else may enter: a socket in
    someone else's folder could be theirs."""
    info = path.lstat()
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & 0o077)


def key() -> str:
    """What a server must share with the command it runs, as a short hash."""
    startup = sorted((name, value) for name, value in os.environ.items()
                     if name.startswith(("PYTHON", "LC_")) or name in STARTUP_ENV)
    facts = [sys.executable, sys.version, str(Path(llmi.__file__).parent), startup]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def socket_path() -> Path | None:
    """The socket of this interpreter's server; None where its folder is not private or
    the path is too long for a Unix socket."""
    try:
        base = folder()
        if not private(base):
            return None
    except OSError:  # a folder that cannot be made, or was removed this moment
        return None
    path = base / f"server-{key()}.sock"
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH else None


def running(path: Path) -> int | None:
    """The process id of the server that holds the lock of the socket ``path``; None where
    no server holds it."""
    try:
        lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(lock, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    finally:
        os.close(lock)  # and with it a lock this took
    return None


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send ``message``, and ``fds`` with its first bytes."""
    body = json.dumps(message).encode()
    data = _HEADER.pack(len(body)) + body
    sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
    if sent < len(data):  # an empty send to a peer that has read all and closed fails
        sock.sendall(data[sent:])


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the descriptors sent with it; None at the end of the stream."""
    if max_fds:
        first, fds, _, _ = socket.recv_fds(sock, _HEADER.size, max_fds)
    else:
        first, fds = sock.recv(_HEADER.size), []
    header = first + _exactly(sock, _HEADER.size - len(first)) if first else b""
    if len(header) < _HEADER.size:
        _close(fds)
        return None, []
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        _close(fds)
        raise ValueError(f"a message of {length} bytes")
    body = _exactly(sock, length)
    if len(body) < length:
        _close(fds)
        return None, []
    return json.loads(body), fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer where the stream ends first."""
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
