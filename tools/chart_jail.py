"""The jail chart code runs in: its own Linux namespaces, through bubblewrap.

Chart code is written by a model, and a model can be steered by what it reads. Each
chart process (a fresh interpreter, or the warm zygote whose children draw the charts)
starts under ``bwrap`` (https://github.com/containers/bubblewrap, Debian's
``bubblewrap``), chosen over hand-made namespaces because it is small, audited, used by
Flatpak, and needs no privileges where the kernel allows user namespaces:

- user, PID, network, IPC, UTS (and, where possible, cgroup) namespaces: no network but
  a loopback of its own, no sight of any process outside the jail, no capabilities;
- a read-only view of the system folders, the Python installation, its packages and the
  system's fonts; the only writable folders are the ones llmi names (the job's, which are
  HOME and TMPDIR too); the real HOME (with the user's own fonts), the cache, the
  artifact store and the checkpoints are not there;
- an environment from ``ALLOWED_ENV`` only; a new session (no controlling terminal);
- the jail dies with llmi: a fresh interpreter's through ``--die-with-parent`` (the
  thread that started it waits for it), the zygote's when llmi's end of its socket
  closes (a death signal would fire when the thread that started it ends, which may be
  a short-lived worker thread, while other threads' charts still run in it).

Inside, the chart process denies itself new processes and signals to others with a
seccomp filter (``chart_runner.forbid_processes``), so process limits hold for root too.
``LLMI_CODE_SANDBOX`` says what happens where no jail can be had: ``strict`` refuses
chart code, ``process`` runs it with the process limits alone, ``off`` is for trusted
code. ``LLMI_BWRAP`` (``Context.bwrap``) names the bwrap binary when it is not on PATH.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from llmi.context import env_name
from llmi.tools.base import ToolError

BWRAP_ENV = env_name("bwrap")
SANDBOX_ENV = env_name("code_sandbox")
MODES = ("strict", "process", "off")
ALLOWED_ENV = (
    "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "JE_ARROW_MALLOC_CONF", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "LANG", "LC_ALL", "TZ",
)
"""What a chart may see of its environment; PATH and HOME are set by the jail."""
SYSTEM_FOLDERS = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/fonts",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/alternatives",
)
"""Mounted read-only where they exist: the interpreter's libraries and the fonts."""
PROBE_TIMEOUT_S = 10.0
STDERR_TAIL_CHARS = 2000
"""How much of a chart process's stderr a failure reports."""

log = logging.getLogger(__name__)


def sandbox_mode(value: str) -> str:
    mode = (value or "strict").strip().lower()
    if mode not in MODES:
        raise ToolError(f"{SANDBOX_ENV}={value!r} is not one of {', '.join(MODES)}",
                        kind="config")
    return mode


def jail_problem(bwrap: str = "") -> str:
    """Why no jail can be had here with the ``bwrap`` binary named (empty: the one on
    PATH); empty when one can."""
    binary = bwrap_binary(bwrap)
    if binary is None:
        return ("bubblewrap is not installed (apt-get install bubblewrap, dnf install "
                f"bubblewrap), or set {BWRAP_ENV} to its bwrap binary")
    return _probe(binary)


def require_jail(mode: str, bwrap: str = "") -> str | None:
    """The bwrap binary this chart runs under with ``mode``, or None for no jail;
    raises ToolError where ``strict`` asks for a jail that cannot be had, and says once
    that ``process`` runs without."""
    if mode == "off":
        return None
    problem = jail_problem(bwrap)
    if not problem:
        return bwrap_binary(bwrap)
    if mode == "strict":
        raise ToolError(f"chart code is refused: it runs only in a jail, and {problem}. "
                        f"{SANDBOX_ENV}=process runs it with process limits alone",
                        kind="config")
    _warn_once(problem)
    return None


def bwrap_binary(bwrap: str = "") -> str | None:
    return bwrap.strip() or shutil.which("bwrap")


def jailed(bwrap: str, argv: Sequence[str], *, writable: Iterable[Path],
           env: Mapping[str, str], cwd: Path, die_with_parent: bool = True) -> list[str]:
    """``argv`` as a command that runs it in a jail of ``bwrap``, with ``writable``
    folders (the job's) and ``cwd`` as its working folder. With ``die_with_parent`` the
    jail is killed when the thread that starts it ends."""
    command = [bwrap, *_namespaces()]
    if die_with_parent:
        command.append("--die-with-parent")
    command.append("--clearenv")
    for name, value in sorted(env.items()):
        command += ["--setenv", name, value]
    # HOME and temporary files in the working folder: the rest of the view is read-only.
    command += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", str(cwd),
                "--setenv", "TMPDIR", str(cwd)]
    for folder in _readable():
        command += ["--ro-bind", folder, folder]
    command += ["--proc", "/proc", "--dev", "/dev"]
    for folder in writable:
        command += ["--bind", str(folder), str(folder)]
    # The root bwrap builds is a writable tmpfs: only the folders above stay writable.
    return [*command, "--remount-ro", "/", "--chdir", str(cwd), "--", *argv]


def read_result(folder: int, name: str, limit: int | None = None) -> bytes | None:
    """The bytes of ``name`` in the job folder open as ``folder`` (a descriptor taken
    before the chart ran, so a folder renamed or replaced by a link is not followed),
    or None when there is no such regular file: the jail can write there, so a link or a
    pipe left in its place is never read. ``limit`` keeps only the last bytes."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        size = os.fstat(fd)
        if not stat.S_ISREG(size.st_mode):
            return None
        if limit is not None and size.st_size > limit:
            file.seek(size.st_size - limit)
        return file.read()


def stderr_tail(folder: int) -> str:
    """The last ``STDERR_TAIL_CHARS`` of ``stderr.txt`` in the folder open as ``folder``,
    read as ``read_result`` reads; empty when there is none."""
    tail = read_result(folder, "stderr.txt", limit=STDERR_TAIL_CHARS) or b""
    return tail.decode("utf-8", errors="replace").strip()


def allowed_env(env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name in ALLOWED_ENV}


def _namespaces() -> list[str]:
    return [
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup-try", "--uid", "65534", "--gid", "65534",
        "--hostname", "chart", "--cap-drop", "ALL", "--new-session",
        # The command itself is the PID namespace's init: no bwrap process inside whose
        # memory a chart could open.
        "--as-pid-1",
    ]


@functools.cache
def _readable() -> tuple[str, ...]:
    """System folders, the interpreter, its packages, and this folder (the runner)."""
    found = [folder for folder in SYSTEM_FOLDERS if os.path.lexists(folder)]
    # Not sys.path: its first entry is the folder of the script llmi was started from,
    # which may be HOME.
    python = [sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent),
              str(Path(__file__).resolve().parent), *site.getsitepackages(),
              *(sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib",
                                                      "platlib"))]
    for folder in filter(os.path.isdir, python):
        real = os.path.realpath(folder)
        if not any(real == kept or real.startswith(kept.rstrip("/") + "/") for kept in found):
            found.append(real)
    return tuple(found)


@functools.cache
def _probe(binary: str) -> str:
    """Start a jail once to see whether this kernel and binary allow one."""
    command = jailed(binary, [sys.executable, "-I", "-c", "pass"], writable=[], env={},
                     cwd=Path("/"))
    try:
        done = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap ({binary}) cannot start a jail: {error}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        return (f"this system refuses bubblewrap's namespaces "
                f"({reason[-1] if reason else f'exit status {done.returncode}'})")
    return ""


@functools.cache
def _warn_once(problem: str) -> None:
    log.warning("chart code runs without a jail (%s=process): %s", SANDBOX_ENV, problem)
