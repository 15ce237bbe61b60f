"""The resident server's settings and address, shared by the ``llmi`` command and the
server (``llmi.cli.server``). Standard library only, and little of it: every command
reads this before it knows whether it runs in this process (``llmi.cli.launch``).

With ``LLMI_SERVER=on`` the ``llmi`` command hands its arguments, environment, working
folder and standard streams to a resident server that imported llmi's libraries once,
and the server forks a child that runs the command as a fresh process would
(``llmi.cli.launch``). The server listens on a Unix socket in a folder only the user can
enter: ``$XDG_RUNTIME_DIR/llmi``, else ``$TMPDIR/llmi-<uid>`` (as tmux names its own).
One server serves one interpreter and one way of starting it: the socket's name is a hash
of the Python executable and version, llmi's location, and the environment variables that
change how an interpreter starts (``PYTHON*``, the locale), so a command never reaches a
server that would run it differently. Their messages are in ``llmi.cli.wire``.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
from pathlib import Path

import llmi

SETTING = "LLMI_SERVER"
ON, OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no", "")
SUPPORTED = sys.platform == "linux"
"""It forks, passes descriptors over Unix sockets and reads ``/proc``: Linux only."""
IDLE_SETTING, IDLE_S = "LLMI_SERVER_IDLE", 900.0
"""A server with no command to run for this many seconds exits."""
MAX_SOCKET_PATH = 107
"""Bytes in a Unix socket's path, Linux's ``sun_path`` less its final NUL."""
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
    # Here, not above: only a command that asks for the server needs them.
    import hashlib
    import json

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
    path = socket_in(base)
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH else None


def socket_in(base: Path) -> Path:
    """The socket of this interpreter's server in the folder ``base``."""
    return base / f"server-{key()}.sock"


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
