"""Code: charts and plots drawn by model-written matplotlib code.

The code is untrusted. It runs in a separate process (``chart_runner.py``) with
time, memory, file size and process limits, an empty working folder, no stdin,
and an environment without the parent's secrets. When the job ends, for any
reason, every process it started is killed.

That process is forked from a warm zygote that has the libraries imported already
(``chart_pool.py``), or, with the pool off or unavailable, a fresh interpreter.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from llmi.context import Context, default_cache_dir
from llmi.state import ImageRequest
from llmi.tools import chart_fonts, chart_jail, chart_pool
from llmi.tools.base import ToolCall, ToolError, ToolOutput
from llmi.tools.chart_runner import end_job

RUNNER = Path(__file__).with_name("chart_runner.py")
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")
"""A variable whose name holds one of these (in any case) stays out of the code's environment."""
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+:[^/@\s]*@")
"""So does one whose value is a URL with a password, like ``postgres://me:pw@db``."""
CPU_SPARE_S = 2
"""The CPU limit is this much over the wall-time limit, which should strike first."""
SIGNALLED = 128
OPENING_FENCE = re.compile(r"\A\s*```(?:[\w+-]*[ \t]*\n)?")
CLOSING_FENCE = re.compile(r"\n?[ \t]*```\s*\Z")
"""A Markdown fence a model wraps its code in although told not to; LLM-I drops it too."""
POOL = chart_pool.SUPPORTED
"""Whether charts run in children of the warm zygote (``chart_pool``) rather than each
in a fresh interpreter, when ``run_chart`` is not told; off where it is unsupported."""


class CodeTool:
    source = "code"
    required_params = ("code",)
    guidance = (
        "charts and plots drawn from data. params: {'code': matplotlib code; "
        "plt, pd, sns and np are already imported; do not call show or savefig}"
    )
    params_in_cache_key = False

    def cache_settings(self, context: Context, request: ImageRequest) -> dict[str, Any]:
        """The code, nothing else, decides a chart."""
        return {"code": request["params"].get("code")}

    def __call__(self, call: ToolCall) -> ToolOutput:
        chart_code = unfenced(call.request["params"]["code"])
        png = run_chart(
            chart_code,
            timeout_s=min(call.context.code_timeout, call.deadline_s),
            memory_mb=call.context.code_memory_mb,
            pool=call.context.code_pool,
            sandbox=call.context.code_sandbox,
            bwrap=call.context.bwrap,
        )
        return ToolOutput(data=png, backend="matplotlib", provenance={"code": chart_code})


code = CodeTool()


def unfenced(code: str) -> str:
    """``code`` without the Markdown fence around it, if it has one."""
    return CLOSING_FENCE.sub("", OPENING_FENCE.sub("", code))


def start_chart_zygote(ctx: Context) -> threading.Thread | None:
    """Start the shared pool's zygote for the charts of ``ctx`` now, in a thread of its
    own, so that its imports overlap llmi's and the model's reply; the first chart finds
    it by its environment and waits for it to be ready. Returns the thread, or None where
    charts run in fresh interpreters. A zygote no chart uses is stopped at exit; where the
    sandbox refuses chart code or no zygote can start, nothing starts, and the chart
    says why."""
    if not (ctx.code_pool and chart_pool.SUPPORTED):
        return None
    thread = threading.Thread(target=_start_zygote, args=(ctx.code_sandbox, ctx.bwrap),
                              name="llmi-chart-zygote", daemon=True)
    thread.start()
    return thread


def _start_zygote(sandbox: str, bwrap: str) -> None:
    with suppress(ToolError):
        jail = chart_jail.require_jail(chart_jail.sandbox_mode(sandbox), bwrap)
        chart_pool.shared_pool().start(_child_env(jail is not None), bwrap=jail)


def run_chart(code: str, *, timeout_s: float, memory_mb: int, pool: bool | None = None,
              sandbox: str = "strict", bwrap: str = "") -> bytes:
    """Run matplotlib ``code`` in a separate process; returns the chart as PNG.

    ``pool`` says whether to fork that process from the warm zygote (the default,
    ``POOL``) or to start a fresh interpreter; where no zygote can be had the chart
    runs in a fresh interpreter anyway. ``sandbox`` is ``LLMI_CODE_SANDBOX``: on both
    paths the process runs in a jail (``chart_jail``, of the ``bwrap`` binary named, or the
    one on PATH) unless it is ``off``, or ``process`` where no jail can be had. The job's
    results are read through a descriptor of its folder taken before the chart ran, and
    only as regular files: the chart can write there. Raises ToolError with the last lines of the
    traceback, or saying that the code timed out, ran out of memory or drew nothing.
    """
    started = time.monotonic()
    jail = chart_jail.require_jail(chart_jail.sandbox_mode(sandbox), bwrap)
    with tempfile.TemporaryDirectory(prefix="llmi-chart-", dir=chart_pool.jobs_root(),
                                     ignore_cleanup_errors=True) as tmp:
        job_dir, work_dir = Path(tmp, "job"), Path(tmp, "work")
        job_dir.mkdir()
        work_dir.mkdir()
        cpu_s = math.ceil(timeout_s) + CPU_SPARE_S
        env = _child_env(jail is not None)
        if jail:  # a job of a warm zygote takes these from its job, not from the zygote
            env |= {"HOME": str(work_dir), "TMPDIR": str(work_dir)}
        job = {
            "code": code, "memory_mb": memory_mb, "cpu_s": cpu_s, "work_dir": str(work_dir),
            "env": env, "jailed": jail is not None,
            # A jailed process cannot see llmi's pid; bwrap ends the jail with llmi.
            "parent": 0 if jail else os.getpid(),
        }
        (job_dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (job_dir / "stderr.txt").touch()
        folder = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            status = None
            if (POOL if pool is None else pool) and chart_pool.SUPPORTED:
                with suppress(chart_pool.PoolUnavailable):
                    status = chart_pool.shared_pool().run(job_dir, env, timeout_s, bwrap=jail)
            if status is None:
                left_s = timeout_s - (time.monotonic() - started)
                status = _run_runner(job_dir, work_dir, env, timeout_s, left_s, bwrap=jail)
            return _result(folder, status, cpu_s)
        finally:
            os.close(folder)


def _run_runner(
    job_dir: Path, work_dir: Path, env: dict[str, str], timeout_s: float, left_s: float,
    *, bwrap: str | None,
) -> int:
    """Run the runner on the job in a fresh interpreter, jailed by ``bwrap`` unless it is
    None, for at most ``left_s`` of the job's ``timeout_s``; returns its exit status."""
    command = [sys.executable, "-I", "-X", "utf8", str(RUNNER), str(job_dir)]
    if bwrap:
        command = chart_jail.jailed(bwrap, command, writable=[job_dir.parent], cwd=work_dir,
                                    env=chart_pool.jailed_config(env, job_dir.parent))
    with open(job_dir / "stderr.txt", "wb") as stderr:
        try:
            runner = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                cwd=work_dir, env=env, start_new_session=True,
            )
        except OSError as error:
            raise ToolError(f"could not start the chart process: {error}") from error
    try:
        status = runner.wait(timeout=max(0.0, left_s))
    except subprocess.TimeoutExpired:
        raise ToolError(f"timed out after {timeout_s:g} s") from None
    finally:
        _end(runner)
    # bwrap exits with 128 + the signal that ended the runner, as a shell does.
    return -(status - SIGNALLED) if bwrap and status > SIGNALLED else status


def _child_env(jail: bool) -> dict[str, str]:
    env = {
        name: value for name, value in os.environ.items()
        if not any(marker in name.upper() for marker in SECRET_MARKERS)
        and not CREDENTIALS_IN_URL.search(value)
    }
    # One BLAS thread: each thread reserves address space, and RLIMIT_AS counts it.
    threads = dict.fromkeys(["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"], "1")
    # No jemalloc background thread in pyarrow (which pandas imports): the zygote must
    # have one thread only when it forks.
    threads["JE_ARROW_MALLOC_CONF"] = "background_thread:false"
    env = env | threads | {"MPLBACKEND": "Agg"}
    if jail:
        env = chart_jail.allowed_env(env)
    # A persistent config folder, so matplotlib builds its font cache once for each set of
    # fonts the chart can see; a font installed since gets a new one (``chart_fonts``).
    config = chart_fonts.config_dir(default_cache_dir() / "matplotlib", env, os.environ)
    return env | {"MPLCONFIGDIR": str(config)}


def _end(runner: subprocess.Popen[bytes]) -> None:
    """Kill the runner, everything it started and its process group; reap the runner."""
    end_job(runner.pid, running=runner.poll() is None)
    runner.kill()
    runner.wait()


def _result(folder: int, status: int, cpu_s: int) -> bytes:
    chart = chart_jail.read_result(folder, "chart.png") if status == 0 else None
    if chart is not None:
        return chart
    error = chart_jail.read_result(folder, "error.txt")
    if error is not None:
        raise ToolError(error.decode("utf-8", errors="replace"))
    raise ToolError(_crash_report(status, cpu_s, chart_jail.stderr_tail(folder)))


def _crash_report(status: int, cpu_s: int, stderr: str) -> str:
    if status == -signal.SIGXCPU:
        report = f"timed out after {cpu_s} s of CPU time"
    elif status < 0:
        report = f"the chart process died of {signal.Signals(-status).name}"
    else:
        report = f"the chart process exited with status {status} and no chart"
    return f"{report}\n{stderr}" if stderr else report
