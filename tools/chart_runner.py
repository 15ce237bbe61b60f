"""Draws one chart in its own process: ``python -I -X utf8 chart_runner.py JOB_DIR``.

``JOB_DIR/job.json`` holds the code and the limits. The chart comes back as
``JOB_DIR/chart.png`` (exit status 0), a failure as ``JOB_DIR/error.txt``
(exit status 1); stdout is not used, so the code may print what it likes.
``llmi.tools.code`` starts this script; it also imports ``kill_descendants``.
"""

from __future__ import annotations

import ctypes
import io
import json
import linecache
import os
import resource
import signal
import sys
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
KILL_ROUNDS = 40
CJK_FONT_HINTS = (
    "Noto Sans CJK", "Source Han Sans", "Noto Serif CJK", "Source Han Serif",
    "Noto Sans SC", "Noto Sans TC", "Noto Sans HK", "Noto Sans JP", "Noto Sans KR",
    "WenQuanYi", "IPAGothic", "IPAexGothic", "IPAPGothic", "Droid Sans Fallback",
    "CJK", "Unifont",
)
"""Substrings of names of installed fonts with CJK glyphs, best first."""


class ChartError(Exception):
    """The code ran but left no chart; the message says why."""


def main(job_dir: Path) -> int:
    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    set_limits(job["memory_mb"], job["cpu_s"])
    become_subreaper()
    die_with_parent()
    # The code runs as a script named <chart> would; Python-level stderr goes where
    # stdout goes, nowhere, so the code cannot fill the disk through it.
    sys.argv = [FILENAME]
    sys.stderr = sys.stdout
    try:
        png = draw(job["code"])
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


def become_subreaper() -> None:
    """Orphans of the code's processes (double forks, setsid) then stay this
    process's descendants, so ``kill_descendants`` still finds them."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def die_with_parent() -> None:
    """A killed llmi process must not leave its chart running until the code ends."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before the line above took effect
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


def draw(code: str) -> bytes:
    compiled = compile_chart(code)
    plt, namespace = prepare()
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
    """The last lines of the error's traceback, without this script's frames."""
    traceback.clear_frames(error.__traceback__)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames) + traceback.format_exception_only(error)
    text = "".join(lines)
    tail = "\n".join(text.rstrip("\n").splitlines()[-TRACEBACK_LINES:])
    return tail[-TRACEBACK_CHARS:]


if __name__ == "__main__":
    # os._exit skips waiting for threads the code may have left running.
    os._exit(main(Path(sys.argv[1])))
