"""The warm chart executor: a zygote that forks one fresh process per chart.

Starting a Python interpreter and importing matplotlib, pandas, seaborn and numpy
takes about a second, longer than drawing most charts. A zygote
(``chart_runner.py --zygote``) does that once; for each chart it forks a child,
which applies the chart's limits to itself (memory, CPU, file size, processes, no
core dumps), becomes a subreaper, dies with the zygote, moves into the job's empty
working folder, takes the job's environment, draws, and exits. The zygote keeps the
next chart's child forked ahead, a spare that has drawn a throwaway figure outside
pyplot, so the copy-on-write faults and font loading of a first draw are paid before
the chart arrives. Every chart still runs in its own process, a copy of a zygote that
drew only such a figure (to fill matplotlib's caches), so nothing one chart does
reaches the next.

This module is the llmi side. ``ChartPool.run`` sends the job over the zygote's
control socket, waits within the wall-time limit, and kills the job's whole process
tree when the time is up or the caller fails, as ``llmi.tools.code`` does for a
fresh interpreter. The pool is thread-safe and jobs run in parallel: the zygote only
forks, and each job has its own socket. It starts on the first chart, or ahead of it
(``llmi.tools.code.start_chart_zygote``), is shared by the whole process
(``shared_pool``), is closed at exit, and replaces a zygote that died. Where no zygote
can be had, ``PoolUnavailable`` tells the caller to run the chart in a fresh interpreter
instead.

Linux only: it needs ``fork``, ``waitid``, ``SOCK_SEQPACKET`` and ``prctl``.
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path

from llmi.tools import chart_jail
from llmi.tools.base import ToolError
from llmi.tools.chart_runner import JOB_END, JOB_ENDED, JOB_FAILED, JOB_STARTED, READY, end_job

RUNNER = Path(__file__).with_name("chart_runner.py")
SUPPORTED = sys.platform.startswith("linux")
STARTUP_VARIABLES = (
    "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "JE_ARROW_MALLOC_CONF",
)
"""Read while the zygote imports; a job whose environment differs in one gets a new zygote.
The rest of a job's environment is set in its child. ``MPLCONFIGDIR`` names the installed
fonts (``chart_fonts``), so a font installed since the zygote started gets a new one."""
START_LIMIT_S = 120.0
"""A zygote not ready this long after it started is given up (a first run may build
matplotlib's font cache first)."""
COOL_DOWN_S = 60.0
"""After a zygote failed to start, charts run in fresh interpreters this long."""
ANSWER_LIMIT_S = 5.0
"""A zygote that takes longer to take a job (it forks in milliseconds) is stuck, or
stopped by a chart's code: it is replaced, and the job goes to the new one. Its
running jobs are lost, so the limit is generous."""
CONFIRM_KILL_S = 2.0
"""How long to wait for the zygote to confirm that a killed job ended."""
STOP_ZYGOTE_S = 2.0


class PoolUnavailable(Exception):
    """No zygote could take the job, which has not started: run it in a fresh interpreter."""


class _ZygoteLost(Exception):
    """The zygote ended before it started the job."""


class Zygote:
    """One zygote process, as llmi sees it."""

    def __init__(self, env: dict[str, str], *, bwrap: str | None = None) -> None:
        self.key = startup_key(env, bwrap)
        self.jailed = bwrap is not None
        self.folder = Path(tempfile.mkdtemp(prefix="llmi-chart-zygote-"))
        self.started = time.monotonic()
        self.ready = False
        self.failed = False
        """It exited, will never be ready or was retired; ``failure`` says why."""
        self.failure = ""
        self.retired = False
        self._ready_lock = threading.Lock()
        self._send_lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [
            sys.executable, "-I", "-X", "utf8", str(RUNNER), "--zygote", str(theirs.fileno()),
            str(self.folder),
        ]
        if bwrap:
            # Its children draw in job folders under the jobs root, bound at the same path.
            command = chart_jail.jailed(bwrap, command, writable=[self.folder, jobs_root()],
                                        env=jailed_config(env, self.folder), cwd=self.folder,
                                        die_with_parent=False)
        try:
            with open(self.folder / "stderr.txt", "wb") as log:
                # Not a death signal: it is bound to the thread that forks, and this may
                # be a short-lived worker thread. The zygote ends when this end of the
                # socket closes, which llmi's death does too.
                self.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    cwd=self.folder, env=env, pass_fds=[theirs.fileno()], start_new_session=True,
                )
        except OSError:
            ours.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.control = ours

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return not self.failed and self.process.poll() is None

    def wait_ready(self, deadline: float) -> None:
        """Wait until the zygote has imported everything; raises TimeoutError when
        ``deadline`` comes first, PoolUnavailable when it cannot start."""
        if self.ready:
            return
        if not self._ready_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError
        try:
            if self.ready:
                return
            if self.retired:
                raise _ZygoteLost
            if self.failed:
                raise PoolUnavailable(self.failure)
            limit = min(deadline, self.started + START_LIMIT_S)
            poll = select.poll()
            poll.register(self.control, select.POLLIN)
            if not poll.poll(max(0.0, limit - time.monotonic()) * 1000):
                if limit < deadline:
                    self._fail(f"the chart zygote was not ready after {START_LIMIT_S:g} s")
                    raise PoolUnavailable(self.failure)
                raise TimeoutError
            try:
                message = self.control.recv(64)
            except OSError:
                message = b""
            if message != READY:
                if self.retired:
                    raise _ZygoteLost
                self._fail("the chart zygote did not start")
                raise PoolUnavailable(self.failure)
            self.ready = True
        finally:
            self._ready_lock.release()

    def run_job(self, job_dir: Path, deadline: float, timeout_s: float) -> int:
        """Run the job in a child of the zygote; returns its exit status.

        Raises TimeoutError when the deadline comes first (the job's processes are
        killed by then), ToolError when the zygote died during the job, _ZygoteLost
        when the zygote did not take the job (it ended or is stuck).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours:
            sent = time.monotonic()
            answer_by = min(deadline, sent + ANSWER_LIMIT_S)
            try:
                self._send(job_dir, theirs, answer_by)
            finally:
                theirs.close()
            job = ForkedJob(ours, self)
            try:
                job.start(answer_by)
            except TimeoutError:
                if answer_by < deadline:  # the zygote is stuck; the job was not taken
                    self._fail(f"the chart zygote did not answer within {ANSWER_LIMIT_S:g} s")
                    raise _ZygoteLost from None
                raise
            try:
                return job.wait(deadline)
            finally:
                job.end()

    def _send(self, job_dir: Path, channel: socket.socket, answer_by: float) -> None:
        """Hand the job and its socket to the zygote."""
        if not self._send_lock.acquire(timeout=max(0.0, answer_by - time.monotonic())):
            raise TimeoutError
        try:
            self.control.settimeout(max(0.001, answer_by - time.monotonic()))
            socket.send_fds(self.control, [os.fsencode(job_dir)], [channel.fileno()])
        except TimeoutError:
            raise
        except OSError:
            self.failed = True
            raise _ZygoteLost from None
        finally:
            self._send_lock.release()

    def _fail(self, reason: str) -> None:
        self.failed = True
        self.failure = f"{reason}\n{self.log_tail()}".strip()
        self.process.kill()

    def log_tail(self) -> str:
        # A jailed zygote's charts can write its folder: the log is read as a regular file.
        with suppress(OSError):
            folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                return chart_jail.stderr_tail(folder)
            finally:
                os.close(folder)
        return ""

    def retire(self) -> None:
        """Take no more jobs; the zygote exits once the jobs it runs are over."""
        self.failed = self.retired = True
        # Shut down, not closed: another thread may be using the socket this moment.
        with suppress(OSError):
            self.control.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """End the zygote and every job it runs; remove its folder."""
        self.retire()
        with suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(timeout=STOP_ZYGOTE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its children die with it (PR_SET_PDEATHSIG)
            self.process.wait()
        self._close_control()
        shutil.rmtree(self.folder, ignore_errors=True)

    def reaped(self) -> bool:
        """Whether a retired zygote has exited; then its socket is closed and its
        folder removed."""
        if self.process.poll() is None:
            return False
        self._close_control()
        shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def _close_control(self) -> None:
        # A thread that still sends or reads on it (it gets an error, the socket being
        # shut down) keeps it open: closed under it, its descriptor number could be
        # another file's by the time it is used. The garbage collector closes it then.
        if self._send_lock.acquire(blocking=False):
            try:
                if self._ready_lock.acquire(blocking=False):
                    self.control.close()
                    self._ready_lock.release()
            finally:
                self._send_lock.release()


class ForkedJob:
    """One job in a child of the zygote, seen through its socket."""

    def __init__(self, channel: socket.socket, zygote: Zygote) -> None:
        self.channel = channel
        self.zygote = zygote
        self.pid = 0
        self.status: int | None = None
        self.zygote_lost = False

    def start(self, deadline: float) -> None:
        """Wait for the zygote to fork; raises _ZygoteLost when it is gone."""
        kind, value = self._receive(deadline)
        if kind == JOB_STARTED:
            self.pid = int(value)
            return
        if kind == JOB_FAILED:
            raise ToolError(f"could not start the chart process: {value}")
        self.zygote.failed = True
        raise _ZygoteLost

    def wait(self, deadline: float) -> int:
        """Wait for the job's process to end; returns its exit status."""
        kind, value = self._receive(deadline)
        if kind == JOB_ENDED:
            self.status = int(value)
            return self.status
        self.zygote_lost = True
        self.zygote.failed = True
        raise ToolError("the chart process was lost: its zygote ended during the chart")

    def end(self) -> None:
        """Kill the job's processes unless they ended; wait until the zygote saw the
        job's first process end, so that nothing of the job runs on after this."""
        try:
            if self.zygote.jailed:
                self._end_in_jail()
            elif self.pid:
                # While the zygote lives it holds the process unreaped until this socket
                # closes, so the pid is still the job's. A zygote that died took the
                # process with it (PR_SET_PDEATHSIG); its process group may live on.
                running = self.status is None and not self.zygote_lost
                end_job(self.pid, running=running)
                if running:
                    with suppress(TimeoutError, ToolError):
                        self.wait(time.monotonic() + CONFIRM_KILL_S)
        finally:
            self.channel.close()

    def _end_in_jail(self) -> None:
        """The pid is the job's in the jail's PID namespace, not llmi's: the zygote ends
        the job. A zygote that does not confirm it in time is killed, and its jail with
        it."""
        if self.status is not None or self.zygote_lost or not self.pid:
            return
        with suppress(OSError):
            self.channel.send(JOB_END)
        try:
            self.wait(time.monotonic() + CONFIRM_KILL_S)
        except (TimeoutError, ToolError):
            self.zygote._fail("the chart zygote did not end a job in time")

    def _receive(self, deadline: float) -> tuple[bytes, str]:
        self.channel.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            message = self.channel.recv(256)
        except (TimeoutError, BlockingIOError):
            raise TimeoutError from None
        except OSError:
            message = b""
        kind, _, value = message.partition(b" ")
        return kind, value.decode("utf-8", errors="replace")


class ChartPool:
    """Zygotes for charts: one at a time, started on first use and replaced when it
    dies or the environment it was started with changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygote: Zygote | None = None
        self._retired: list[Zygote] = []
        self._cool_until = 0.0
        self._owner = os.getpid()
        self._closed = False

    def run(self, job_dir: Path, env: dict[str, str], timeout_s: float, *,
            bwrap: str | None = None) -> int:
        """Run the job written in ``job_dir`` (``job.json``: code, limits, working
        folder, environment) within ``timeout_s`` seconds, in a zygote jailed by the
        ``bwrap`` binary unless it is None; returns its exit status.

        Raises ToolError when it timed out (its processes are killed by then),
        PoolUnavailable when no zygote could take it.
        """
        deadline = time.monotonic() + timeout_s
        for _ in range(2):
            zygote = self._zygote_for(env, bwrap)
            try:
                zygote.wait_ready(deadline)
                return zygote.run_job(job_dir, deadline, timeout_s)
            except TimeoutError:  # the job's processes are killed by now
                raise ToolError(f"timed out after {timeout_s:g} s") from None
            except PoolUnavailable:
                with self._lock:
                    self._cool_until = time.monotonic() + COOL_DOWN_S
                raise
            except _ZygoteLost:
                continue
        raise PoolUnavailable("the chart zygote ended twice before it took the job")

    def start(self, env: dict[str, str], *, bwrap: str | None = None) -> None:
        """Start the zygote for jobs of ``env`` and ``bwrap`` now, unless one runs or none
        can be had; the first job waits for it to be ready."""
        with suppress(PoolUnavailable):
            self._zygote_for(env, bwrap)

    def zygote_pid(self) -> int | None:
        """The current zygote's pid, if one runs."""
        with self._lock:
            return self._zygote.pid if self._zygote and self._zygote.alive() else None

    def _zygote_for(self, env: dict[str, str], bwrap: str | None) -> Zygote:
        with self._lock:
            if self._closed:
                raise PoolUnavailable("the chart pool is closed")
            self._retired = [z for z in self._retired if not z.reaped()]
            current = self._zygote
            if current is not None and (not current.alive() or current.key != startup_key(env, bwrap)):
                current.retire()
                self._retired.append(current)
                self._zygote = current = None
            if current is None:
                if time.monotonic() < self._cool_until:
                    raise PoolUnavailable("the chart zygote failed to start a moment ago")
                try:
                    current = self._zygote = Zygote(env, bwrap=bwrap)
                except OSError as error:
                    self._cool_until = time.monotonic() + COOL_DOWN_S
                    raise PoolUnavailable(f"could not start the chart zygote: {error}") from None
            return current

    def close(self) -> None:
        """Stop every zygote and the jobs they run; later jobs get PoolUnavailable."""
        if os.getpid() != self._owner:  # a forked copy of llmi: the zygotes are not its
            return
        with self._lock:
            self._closed = True
            zygotes = [z for z in [self._zygote, *self._retired] if z is not None]
            self._zygote, self._retired = None, []
        for zygote in zygotes:
            zygote.stop()


def startup_key(env: dict[str, str], bwrap: str | None) -> tuple[str | None, ...]:
    return (*(env.get(name) for name in STARTUP_VARIABLES), bwrap)


def jobs_root() -> Path:
    """This process's folder of chart jobs: a jailed zygote sees it and nothing else of
    llmi's. Made once, whichever thread asks first; removed at exit."""
    with _jobs_root_lock:
        return _make_jobs_root()


_jobs_root_lock = threading.Lock()


@functools.cache
def _make_jobs_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="llmi-charts-"))
    # Not listable: a jailed chart finds its own job folder, never another's.
    root.chmod(0o300)
    atexit.register(_remove_jobs_root, root)
    return root


def _remove_jobs_root(root: Path) -> None:
    with suppress(OSError):
        root.chmod(0o700)
    shutil.rmtree(root, ignore_errors=True)


def jailed_config(env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` with matplotlib's config folder moved into ``folder``, a writable one of the
    jail: matplotlib ignores a read-only one and rebuilds its font cache. The cache is
    built outside the jail once for each set of fonts the jail shows, by an interpreter that
    runs no chart code and sees what a chart does (its HOME is the job's), and copied."""
    built = Path(env["MPLCONFIGDIR"])
    if not any(built.glob("fontlist-*.json")):
        # HOME as the jail sets it, a folder of no fonts: matplotlib lists the user's own
        # under the real one.
        subprocess.run([sys.executable, "-I", "-c", "import matplotlib.font_manager"],
                       env=env | {"HOME": str(folder)}, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=START_LIMIT_S, check=False)
    config = folder / "matplotlib"
    config.mkdir(exist_ok=True)
    for cache in built.glob("fontlist-*.json"):
        shutil.copyfile(cache, config / cache.name)
    return env | {"MPLCONFIGDIR": str(config)}


_shared: ChartPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> ChartPool:
    """The process's pool, made on first use and closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ChartPool()
            atexit.register(_shared.close)
        return _shared


def close_shared_pool() -> None:
    """Stop the shared pool's zygote now; the next chart starts a new pool."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        atexit.unregister(pool.close)
        pool.close()


def _forget_in_forked_child() -> None:
    # A forked copy of llmi starts its own pool when it needs one.
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_forked_child)
