"""Draws charts, each in its own process. Two ways to start it:

``python -I -X utf8 chart_runner.py JOB_DIR`` draws one chart in a fresh interpreter.

``python -I -X utf8 chart_runner.py --zygote FD FOLDER`` is a zygote: it imports matplotlib,
pandas, seaborn and numpy once, then forks one child per chart; each child applies
the job's limits to itself, draws, and exits. ``FD`` is a Unix socket
(``SOCK_SEQPACKET``) to ``llmi.tools.chart_pool``, which holds the other end.

Either way ``JOB_DIR/job.json`` holds the code and the limits. The chart comes back
as ``JOB_DIR/chart.png`` (exit status 0), a failure as ``JOB_DIR/error.txt`` (exit
status 1); stdout is not used, so the code may print what it likes.
``llmi.tools.code`` and ``llmi.tools.chart_pool`` also import ``end_job`` and the protocol.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import io
import json
import linecache
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FILENAME = "<chart>"
"""The code's file name in tracebacks."""
DPI = 130
MAX_SIDE_PX = 4000
FILE_SIZE_LIMIT = 64 * 2**20
SPARE_TASKS = 128
"""Processes and threads the code may add to those its user already runs."""
TRACEBACK_LINES = 20
TRACEBACK_CHARS = 4000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
CLONE_THREAD = 0x10000
KILL_ROUNDS = 40
CJK_FONT_HINTS = (
    "Noto Sans CJK", "Source Han Sans", "Noto Serif CJK", "Source Han Serif",
    "Noto Sans SC", "Noto Sans TC", "Noto Sans HK", "Noto Sans JP", "Noto Sans KR",
    "WenQuanYi", "IPAGothic", "IPAexGothic", "IPAPGothic", "Droid Sans Fallback",
    "CJK", "Unifont",
)
"""Substrings of names of installed fonts with CJK glyphs, best first."""
READY = b"ready"
"""What the zygote says on its socket once it has imported everything."""
JOB_STARTED = b"pid"
"""``pid N``: the zygote forked the job's process N."""
JOB_ENDED = b"exit"
"""``exit S``: the job's process ended with status S, negative for a signal (as in
``subprocess``). The zygote keeps the process unreaped until the job's socket is
closed, so its pid names no other process while the caller may still signal it."""
JOB_END = b"end"
"""From llmi on a job's socket: end the job now. A jailed job's pid is not llmi's to kill."""
JOB_FAILED = b"error"
"""``error MESSAGE``: the zygote could not fork."""
SPARE_READY = b"spare"
"""What a spare says to the zygote once it has drawn its throwaway figure."""
WAIT_FOR_KILLED_S = 2.0
"""How long the zygote waits for killed processes to end before it serves on."""


class ChartError(Exception):
    """The code ran but left no chart; the message says why."""


def main(job_dir: Path) -> int:
    """Draw the chart of ``job_dir`` in this fresh interpreter."""
    job = read_job(job_dir)
    undumpable()
    if os.getpid() == 1:
        # The init of its jail's PID namespace ignores signals it has no handler for, the
        # CPU limit's SIGXCPU too: end as that signal would, 128 + it, as bwrap reports.
        signal.signal(signal.SIGXCPU, lambda *_: os._exit(128 + signal.SIGXCPU))
    set_limits(job["memory_mb"], job["cpu_s"])
    become_subreaper()
    if job["parent"]:
        die_with_parent(job["parent"])
    return run_job(job_dir, job)


def read_job(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "job.json").read_text(encoding="utf-8"))


def run_job(job_dir: Path, job: dict[str, Any], fallbacks: list[str] | None = None) -> int:
    """Draw the job's chart in this process, which already has its limits; returns
    the exit status. ``fallbacks`` are the CJK fonts, when known already."""
    # The code runs as a script named <chart> would; Python-level stderr goes where
    # stdout goes, nowhere, so the code cannot fill the disk through it.
    sys.argv = [FILENAME]
    sys.stderr = sys.stdout
    if job.get("jailed"):
        forbid_processes()
    try:
        png = draw(job["code"], fallbacks)
    except MemoryError as error:
        report = f"ran out of memory (limit {job['memory_mb']} MB)\n{describe(error)}"
    except ChartError as error:
        report = str(error)
    except BaseException as error:  # whatever the code raised is the slot's error
        report = describe(error)
    else:
        (job_dir / "chart.png").write_bytes(png)
        return 0
    finally:
        kill_descendants(psutil.Process())
    (job_dir / "error.txt").write_text(report, encoding="utf-8")
    return 1


def set_limits(memory_mb: int, cpu_s: int) -> None:
    """Limit this process and everything it starts; the code cannot raise the limits."""
    lower_limit(resource.RLIMIT_AS, memory_mb * 2**20)
    # SIGXCPU at the soft limit ends the process, SIGKILL at the hard one would too;
    # the parent tells a time-out from SIGXCPU.
    lower_limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
    lower_limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
    lower_limit(resource.RLIMIT_CORE, 0)
    # RLIMIT_NPROC counts all tasks of the user, so it is set relative to those.
    lower_limit(resource.RLIMIT_NPROC, tasks_of_user() + SPARE_TASKS)
    # Past the file size limit a write then raises an OSError instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def forbid_processes() -> None:
    """From here on this process starts no process and signals none but itself, which
    holds for root too, where RLIMIT_NPROC does not (a seccomp filter: threads stay
    allowed, as numpy and matplotlib use them)."""
    import pyseccomp as seccomp

    denied = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    # chmod too: a jailed job must not make the jobs folder listable.
    for name in ("fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
                 "pidfd_send_signal", "unshare", "setns", "mount", "keyctl", "bpf", "chmod",
                 "fchmod", "fchmodat"):
        rules.add_rule(denied, name)
    rules.add_rule(denied, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes its flags in memory, which a filter cannot read: libc falls back to clone.
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    me = os.getpid()
    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        rules.add_rule(denied, name, seccomp.Arg(0, seccomp.NE, me))
    rules.load()


def lower_limit(kind: int, soft: int, hard: int | None = None) -> None:
    ceiling = resource.getrlimit(kind)[1]
    hard = soft if hard is None else hard
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(kind, (soft, hard))


def tasks_of_user() -> int:
    uid = os.getuid()
    return sum(
        p.info["num_threads"] or 0
        for p in psutil.process_iter(["uids", "num_threads"])
        if p.info["uids"] and p.info["uids"].real == uid
    )


def undumpable() -> None:
    """No process of the same user may open this one's memory or descriptors through
    /proc, and the processes forked from it inherit that: jailed charts of one zygote
    cannot reach the zygote or each other."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def become_subreaper() -> None:
    """Orphans of the code's processes (double forks, setsid) then stay this
    process's descendants, so ``kill_descendants`` still finds them."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def die_with_parent(parent: int) -> None:
    """A killed llmi process (or zygote) must not leave its chart running until the
    code ends. ``parent`` is the pid the parent had when it started this process."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)


def kill_descendants(root: psutil.Process) -> None:
    """Kill every live descendant of ``root``, round after round, until none is left.

    A process that forks while its parent is killed leaves an orphan; with ``root``
    a subreaper the orphan comes back under ``root`` and the next round finds it.
    """
    for _ in range(KILL_ROUNDS):
        live = live_descendants(root)
        if not live:
            return
        for process in live:
            with suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(live, timeout=0.05)


def live_descendants(root: psutil.Process) -> list[psutil.Process]:
    try:
        descendants = root.children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in descendants if is_live(p)]


def is_live(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_job(pid: int, *, running: bool) -> None:
    """Kill what is left of the job whose first process is ``pid``: every descendant,
    the process group, and ``pid`` itself when it is still ``running``.

    The caller makes sure ``pid`` is not reaped yet (it is the caller's child, or the
    zygote holds it), so the pid names no other process.
    """
    if running:
        try:
            root = psutil.Process(pid)
            # A stopped job can start nothing more, and, being a subreaper, it still
            # adopts the orphans of the processes killed below.
            root.suspend()
            kill_descendants(root)
        except psutil.Error:
            pass
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if running:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def draw(code: str, fallbacks: list[str] | None = None) -> bytes:
    compiled = compile_chart(code)
    plt, namespace = prepare()
    if fallbacks is None:
        fallbacks = cjk_font_names(installed_font_names())
    add_font_fallbacks(fallbacks)
    caught = catch_figures(plt)
    try:
        run(compiled, namespace)
        figure = pick_figure(plt, caught)
        restore_font_fallbacks(figure, fallbacks)
        return render(figure)
    except MemoryError:
        # Drop what the code holds, so that reporting the error has memory to work with.
        namespace.clear()
        plt.close("all")
        raise


def compile_chart(code: str) -> CodeType:
    compiled = compile(code, FILENAME, "exec")
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(keepends=True), FILENAME)
    return compiled


def prepare() -> tuple[ModuleType, dict[str, Any]]:
    """Import what the code may assume; returns pyplot and the code's globals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns

    warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
    return plt, {"__name__": "__main__", "plt": plt, "pd": pd, "sns": sns, "np": np}


def installed_font_names() -> list[str]:
    from matplotlib import font_manager

    return [font.name for font in font_manager.fontManager.ttflist]


def cjk_font_names(installed: Iterable[str]) -> list[str]:
    """Installed font families with CJK glyphs, best first."""
    names = sorted(set(installed))
    found: list[str] = []
    for hint in CJK_FONT_HINTS:
        found += [n for n in names if hint.lower() in n.lower() and n not in found]
    return found


def add_font_fallbacks(fallbacks: list[str]) -> None:
    """Put the fallbacks after the default font: matplotlib (3.6+) takes each glyph
    from the first font in ``font.family`` that has it."""
    from matplotlib import rcParams

    rcParams["font.family"] = with_fallbacks(rcParams["font.family"], fallbacks)


def restore_font_fallbacks(figure: Figure, fallbacks: list[str]) -> None:
    """Add the fallbacks back where the code reset the fonts (``sns.set_theme`` does)."""
    from matplotlib.text import Text

    add_font_fallbacks(fallbacks)
    for text in figure.findobj(Text):
        text.set_fontfamily(with_fallbacks(text.get_fontfamily(), fallbacks))


def with_fallbacks(families: str | list[str], fallbacks: list[str]) -> list[str]:
    families = [families] if isinstance(families, str) else list(families)
    return families + [f for f in fallbacks if f not in families]


def catch_figures(plt: ModuleType) -> list[Figure]:
    """Make ``show`` and ``savefig`` remember the figure instead of showing or
    writing it; returns the list the figures are remembered in."""
    from matplotlib.figure import Figure

    caught: list[Figure] = []

    def show(*args: Any, **kwargs: Any) -> None:
        if plt.get_fignums():
            caught.append(plt.gcf())

    def savefig(*args: Any, **kwargs: Any) -> None:
        caught.append(plt.gcf())

    def figure_savefig(figure: Figure, *args: Any, **kwargs: Any) -> None:
        caught.append(figure)

    plt.show = show
    plt.savefig = savefig
    Figure.savefig = figure_savefig
    return caught


def run(compiled: CodeType, namespace: dict[str, Any]) -> None:
    try:
        exec(compiled, namespace)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise ChartError(f"the code exited with status {stop.code}") from None


def pick_figure(plt: ModuleType, caught: list[Figure]) -> Figure:
    if plt.get_fignums() and plt.gcf().axes:
        return plt.gcf()
    if caught:
        return caught[-1]
    raise ChartError("the code drew nothing")


def render(figure: Figure) -> bytes:
    width, height = figure.get_size_inches()
    buffer = io.BytesIO()
    # print_figure is what the real savefig calls; savefig itself is patched.
    figure.canvas.print_figure(
        buffer, format="png", dpi=min(DPI, MAX_SIDE_PX / max(width, height, 1)),
        bbox_inches="tight",
    )
    return buffer.getvalue()


def describe(error: BaseException) -> str:
    """The last lines of the error's traceback, without this script's frames.

    The code's own frames read ``File "<chart>", line 3``; a library's name its file from
    its import root, as an import does (``matplotlib/axes/_axes.py``), since the report
    travels with the document and the folders of this machine say nothing to its reader.
    """
    traceback.clear_frames(error.__traceback__)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    roots = sorted((os.path.join(entry, "") for entry in sys.path if os.path.isabs(entry)),
                   key=len, reverse=True)
    for frame in frames:
        _ = frame.line  # read while the file can still be found by its path
        root = next((root for root in roots if frame.filename.startswith(root)), "")
        frame.filename = frame.filename[len(root):]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames) + traceback.format_exception_only(error)
    text = "".join(lines)
    tail = "\n".join(text.rstrip("\n").splitlines()[-TRACEBACK_LINES:])
    return tail[-TRACEBACK_CHARS:]


def warm_up() -> list[str]:
    """Import and load what every chart needs; returns the CJK font fallbacks.

    Nothing here opens a pyplot figure or sets an rcParam that a fresh interpreter's
    first chart would not: a forked child starts where ``main`` would have, with the
    caches a first draw fills (fonts, glyphs, text layout, the PNG writer) already
    filled by one throwaway figure drawn outside pyplot.
    """
    plt, _ = prepare()
    plt.switch_backend("Agg")
    from PIL import Image

    Image.init()
    draw_throwaway()
    fallbacks = cjk_font_names(installed_font_names())
    if sys.platform.startswith("linux") and len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("the zygote started a thread: forking it would not be safe")
    # The children need not scan what the zygote made, nor copy its pages to do so.
    gc.collect()
    gc.freeze()
    return fallbacks


def draw_throwaway() -> None:
    """Draw one figure outside pyplot, opening no pyplot figure and setting no rcParam:
    it fills the caches a first draw fills (fonts, glyphs, text layout, the PNG writer)
    and, in a forked process, copies the pages a draw writes to."""
    from matplotlib.figure import Figure

    figure = Figure()
    figure.add_subplot().plot([1, 2, 3], label="warm")
    figure.axes[0].set_title("warm")
    render(figure)


def run_forked_job(job_dir: Path, zygote: int, fallbacks: list[str]) -> int:
    """In a child of the zygote: make this process what ``main`` makes of a fresh
    interpreter (limits, subreaper, death signal, stderr, working folder,
    environment), then draw. The limits apply to this process, not to the zygote."""
    os.setsid()  # its own session and process group, as ``start_new_session`` gives
    die_with_parent(zygote)
    job = read_job(job_dir)
    stderr = os.open(job_dir / "stderr.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(stderr, 2)
    os.close(stderr)
    os.chdir(job["work_dir"])
    os.environ.clear()
    os.environ.update(job["env"])
    set_limits(job["memory_mb"], job["cpu_s"])
    become_subreaper()
    # Python reseeds ``random`` in a forked child; numpy's global generator it does not.
    sys.modules["numpy"].random.seed()
    return run_job(job_dir, job, fallbacks)


class Job:
    __slots__ = ("channel", "status")

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.status: int | None = None
        """Exit status once the process ended (it stays unreaped until the channel closes)."""


class Spare:
    """The next job's process, forked before its job: it has drawn a throwaway figure,
    so the job's chart does not pay for the pages a first draw copies."""

    __slots__ = ("pid", "socket", "ready")

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.socket = sock
        self.ready = False


class Zygote:
    """Forks one child per job, reports its pid and exit status, reaps it.

    Single-threaded: an event loop over the control socket (a job directory comes in
    with a fresh socket for that job, ``SCM_RIGHTS``), the jobs' sockets, and a pipe
    that signals write to. A job's socket closing means its caller is done or gone:
    the job's processes are killed, if still running, and reaped. The control socket
    closing means llmi is done with this zygote: it takes no more jobs and exits when
    the last one is over. SIGTERM ends every job and the zygote at once.

    A spare child is kept ready: a job goes to it when it has drawn its throwaway
    figure, else to a child forked on the spot, and a new spare is forked after.
    """

    def __init__(self, control: socket.socket, fallbacks: list[str]) -> None:
        self.pid = os.getpid()
        self.control = control
        self.accepting = True
        self.fallbacks = fallbacks
        self.jobs: dict[int, Job] = {}
        self.spare: Spare | None = None
        self.selector = selectors.DefaultSelector()
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_write)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, lambda *_: None)
        # Orphans of a job whose first process died abruptly come back here.
        become_subreaper()
        self.selector.register(self.control, selectors.EVENT_READ, self.on_request)
        self.selector.register(self.wake_read, selectors.EVENT_READ, self.on_signal)
        self.fork_spare()
        self.control.send(READY)
        while self.accepting or self.jobs:
            for key, _ in self.selector.select():
                key.data()

    def on_request(self) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(self.control, 4096, 1)
        except OSError:
            message, fds = b"", []
        if not message:  # llmi closed its end
            for fd in fds:
                os.close(fd)
            self.stop_accepting()
            return
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return
        self.start(Path(os.fsdecode(message)), socket.socket(fileno=fds[0]))

    def start(self, job_dir: Path, channel: socket.socket) -> None:
        pid = self.hand_to_spare(job_dir)
        if pid is None:
            try:
                pid = os.fork()
            except OSError as error:
                with suppress(OSError):
                    channel.send(JOB_FAILED + b" " + str(error).encode())
                channel.close()
                return
            if pid == 0:
                channel.close()
                self.become_job(job_dir)
        self.jobs[pid] = Job(channel)
        self.selector.register(channel, selectors.EVENT_READ, lambda: self.on_channel(pid, channel))
        with suppress(OSError):  # a caller that is gone closed the channel: on_channel ends the job
            channel.send(b"%s %d" % (JOB_STARTED, pid))
        self.fork_spare()

    def become_job(self, job_dir: Path) -> None:
        """The forked child: drop the zygote's signals and descriptors, run the job, exit."""
        status = 70
        try:
            self.leave()
            status = run_forked_job(job_dir, self.pid, self.fallbacks)
        except BaseException:
            with suppress(OSError):
                os.write(2, traceback.format_exc().encode(errors="replace"))
        finally:
            # Never back into the zygote's loop; os._exit also skips the code's threads.
            os._exit(status)

    def fork_spare(self) -> None:
        if not self.accepting or self.spare is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:  # the next job forks its own
            ours.close()
            theirs.close()
            return
        if pid == 0:
            ours.close()
            self.become_spare(theirs)
        theirs.close()
        self.spare = Spare(pid, ours)
        self.selector.register(ours, selectors.EVENT_READ, self.on_spare)

    def become_spare(self, sock: socket.socket) -> None:
        """The forked spare: draw the throwaway figure, say so, wait for a job (a job
        folder) or the end (the zygote closing its end), and run the job as
        ``become_job`` does."""
        status = 70
        try:
            self.leave()
            die_with_parent(self.pid)
            draw_throwaway()
            sock.send(SPARE_READY)
            job_dir = sock.recv(4096)
            sock.close()
            status = run_forked_job(Path(os.fsdecode(job_dir)), self.pid, self.fallbacks) \
                if job_dir else 0
        except BaseException:
            with suppress(OSError):
                os.write(2, traceback.format_exc().encode(errors="replace"))
        finally:
            os._exit(status)

    def hand_to_spare(self, job_dir: Path) -> int | None:
        """The pid of the ready spare that now runs the job, or None when there is none."""
        spare = self.spare
        if spare is None or not spare.ready:
            return None
        self.spare = None
        self.selector.unregister(spare.socket)
        try:
            spare.socket.send(os.fsencode(job_dir))
        except OSError:  # it died just now
            self.end_spare(spare)
            return None
        spare.socket.close()
        return spare.pid

    def on_spare(self) -> None:
        spare = self.spare
        if spare is None:
            return
        try:
            message = spare.socket.recv(64)
        except OSError:
            message = b""
        if message == SPARE_READY:
            spare.ready = True
            return
        # It ended before it had a job; the next job forks its own, then a new spare.
        self.spare = None
        self.selector.unregister(spare.socket)
        self.end_spare(spare)

    def end_spare(self, spare: Spare) -> None:
        spare.socket.close()
        with suppress(OSError):
            os.kill(spare.pid, signal.SIGKILL)
        reap(spare.pid, WAIT_FOR_KILLED_S)

    def leave(self) -> None:
        """In a forked child: drop the zygote's signal handling and descriptors."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        self.close()

    def close(self) -> None:
        """Close every descriptor of the zygote (in a child, so the job holds none)."""
        self.selector.close()
        for job in self.jobs.values():
            job.channel.close()
        if self.spare is not None:
            self.spare.socket.close()
        self.control.close()
        os.close(self.wake_read)
        os.close(self.wake_write)

    def on_signal(self) -> None:
        signals = b""
        with suppress(BlockingIOError):
            while chunk := os.read(self.wake_read, 512):
                signals += chunk
        if signal.SIGTERM in signals:
            self.shutdown()
        self.report_ended()

    def report_ended(self) -> None:
        ended = []
        for pid, job in self.jobs.items():
            if job.status is None:
                with suppress(ChildProcessError):
                    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    if info is not None and info.si_pid == pid:
                        ended.append((job, exit_status(info)))
        # Kill what an abruptly ended job left before saying that it ended.
        self.sweep()
        for job, status in ended:
            job.status = status
            with suppress(OSError):
                job.channel.send(b"%s %d" % (JOB_ENDED, status))

    def on_channel(self, pid: int, channel: socket.socket) -> None:
        job = self.jobs.get(pid)
        if job is None or job.channel is not channel:
            return
        try:
            more = channel.recv(64)
        except OSError:
            more = b""
        if not more:
            self.finish(pid)
        elif more == JOB_END and job.status is None:
            end_job(pid, running=True)  # SIGCHLD follows, and report_ended says so

    def finish(self, pid: int) -> None:
        """The job's caller is done or gone: kill what is left of the job, reap it."""
        job = self.jobs.pop(pid)
        self.selector.unregister(job.channel)
        job.channel.close()
        if job.status is None:
            end_job(pid, running=True)
        reap(pid, WAIT_FOR_KILLED_S)
        self.sweep()

    def sweep(self) -> None:
        """Kill and reap the zygote's children that are no job's first process: what
        a job that died abruptly left running was orphaned to this subreaper. One
        that will not die in time is tried again at the next SIGCHLD."""
        deadline = time.monotonic() + WAIT_FOR_KILLED_S
        for _ in range(KILL_ROUNDS):
            spare = self.spare.pid if self.spare else None
            strays = [pid for pid in child_pids() if pid not in self.jobs and pid != spare]
            if not strays:
                return
            for pid in strays:
                if not reap(pid, 0):
                    end_job(pid, running=True)
            for pid in strays:
                reap(pid, max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return

    def stop_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            self.selector.unregister(self.control)
            self.control.close()
        if self.spare is not None:
            spare, self.spare = self.spare, None
            self.selector.unregister(spare.socket)
            self.end_spare(spare)

    def shutdown(self) -> None:
        for pid in list(self.jobs):
            self.finish(pid)
        self.stop_accepting()


def exit_status(info: os.waitid_result) -> int:
    """As ``subprocess`` gives it: the exit code, or minus the signal that ended it."""
    if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        return -info.si_status
    return info.si_status


def reap(pid: int, timeout_s: float) -> bool:
    """Reap the child ``pid`` once it has ended, waiting at most ``timeout_s``;
    returns whether it is gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def child_pids() -> list[int]:
    """The children of this single-threaded process."""
    with suppress(OSError), open(f"/proc/self/task/{os.getpid()}/children", encoding="ascii") as f:
        return [int(pid) for pid in f.read().split()]
    return [child.pid for child in psutil.Process().children()]


def zygote_main(control_fd: int, folder: Path) -> int:
    """Warm up, serve until llmi is done, remove ``folder`` (the zygote's own: its
    working folder and log, which llmi reads when the zygote fails to start)."""
    control = socket.socket(fileno=control_fd)
    control.set_inheritable(False)
    undumpable()
    Zygote(control, warm_up()).serve()
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    # os._exit skips waiting for threads the code may have left running.
    if sys.argv[1] == "--zygote":
        os._exit(zygote_main(int(sys.argv[2]), Path(sys.argv[3])))
    os._exit(main(Path(sys.argv[1])))
