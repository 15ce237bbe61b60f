"""The code tool: model-written chart code, run in a separate, limited process.

The behaviour tests run twice: with the warm pool (a child forked from a zygote per
chart) and with a fresh interpreter per chart. Tests of the pool itself follow them.
They test the process layer that the jail wraps, so they run with
``LLMI_CODE_SANDBOX=off``; tests/test_chart_jail.py tests the jail.
"""

from __future__ import annotations

import ast
import io
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

import matplotlib as mpl
import psutil
import pytest
from matplotlib.figure import Figure
from PIL import Image

from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools import chart_jail, chart_pool
from llmi.tools import code as code_module
from llmi.tools.base import ImageTool, ToolCall, ToolError
from llmi.tools.chart_runner import cjk_font_names, restore_font_fallbacks
from llmi.tools.code import code as code_tool
from llmi.tools.code import run_chart, start_chart_zygote

SANDBOX = "off"
slow = pytest.mark.slow


@pytest.fixture(autouse=True)
def _process_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMI_CODE_SANDBOX", SANDBOX)
executors = pytest.mark.usefixtures("executor")
"""Runs the test with the warm pool and with a fresh interpreter per chart."""

BAR = "plt.bar(['a', 'b', 'c'], [3, 1, 2])\nplt.title('Sales')\n"
NO_MISSING_GLYPHS = """
import warnings
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    plt.gcf().canvas.draw()
missing = [str(w.message) for w in seen if "missing" in str(w.message)]
assert not missing, missing
"""


@pytest.fixture(params=["warm", "cold"])
def executor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(code_module, "POOL", request.param == "warm")
    return request.param


@pytest.fixture
def warm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code_module, "POOL", True)


def chart(code: str, *, timeout_s: float = 20.0, memory_mb: int = 2048,
          pool: bool | None = None) -> Image.Image:
    png = run_chart(code, timeout_s=timeout_s, memory_mb=memory_mb, pool=pool, sandbox=SANDBOX)
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def failure(code: str, *, timeout_s: float = 20.0, memory_mb: int = 2048,
            pool: bool | None = None) -> str:
    with pytest.raises(ToolError) as raised:
        run_chart(code, timeout_s=timeout_s, memory_mb=memory_mb, pool=pool, sandbox=SANDBOX)
    return str(raised.value)


def reported(code: str, expression: str, **limits: Any) -> Any:
    """The value of ``expression`` evaluated in the chart process after ``code``."""
    message = failure(f"{code}\nraise RuntimeError('REPORT ' + repr({expression}))", **limits)
    last = message.splitlines()[-1]
    assert last.startswith("RuntimeError: REPORT "), message
    return ast.literal_eval(last.removeprefix("RuntimeError: REPORT "))


class CallerFailed(Exception):
    pass


def marker() -> str:
    """A ``sleep`` argument no other process has."""
    return f"300.{random.randrange(10**9):09d}"


def running_with(*markers: str) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and set(markers) & set(cmdline):
            found.append(" ".join(cmdline))
    return found


def spawn_sleepers(setsid_marker: str, double_fork_marker: str) -> str:
    """Chart code that starts one ``sleep`` in a new session and one by a double fork,
    and waits until both run."""
    return f"""
import os, subprocess, time
import psutil
subprocess.Popen(["sleep", {setsid_marker!r}], start_new_session=True)
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", {double_fork_marker!r}])
    os._exit(0)
os.waitpid(middle, 0)
wanted = {{{setsid_marker!r}, {double_fork_marker!r}}}
for _ in range(200):
    running = {{arg for p in psutil.process_iter(["cmdline"]) for arg in p.info["cmdline"] or []}}
    if wanted <= running:
        break
    time.sleep(0.01)
else:
    raise AssertionError("the sleepers did not start")
"""


@slow
@executors
def test_bar_chart_is_a_png_of_sensible_size() -> None:
    image = chart(BAR)
    assert 200 <= image.width <= 4000 and 200 <= image.height <= 4000
    darkest, brightest = image.convert("L").getextrema()
    assert brightest - darkest > 50


@slow
@executors
def test_show_does_not_block() -> None:
    # A blocking show would hold the process until the 15 s limit, and run_chart
    # would fail with "timed out" instead of returning the chart.
    image = chart(BAR + "plt.show()\nplt.show(block=True)\n", timeout_s=15)
    assert image.width > 200


@slow
@executors
@pytest.mark.parametrize("save", [
    "plt.savefig('x.png')\nplt.close()",
    "fig = plt.gcf()\nfig.savefig('x.png', dpi=300)\nplt.close('all')",
])
def test_savefig_then_close_keeps_the_chart_and_writes_nothing(save: str) -> None:
    image = chart(BAR + save + "\nimport os\nassert os.listdir('.') == [], os.listdir('.')\n")
    assert image.width > 200


@slow
@executors
@pytest.mark.parametrize("code", ["x = 1", BAR + "plt.close('all')"])
def test_code_that_leaves_no_figure_drew_nothing(code: str) -> None:
    assert failure(code) == "the code drew nothing"


@slow
@executors
def test_print_flood_neither_corrupts_the_chart_nor_hangs() -> None:
    flood = (
        "import os, sys\n"
        "for _ in range(30):\n"
        "    print('x' * 10**6)\n"
        "    print('\\x89PNG' * 10**5, file=sys.stderr)\n"
        "os.write(1, b'y' * 10**7)\n"
    )
    # A hang would end in "timed out after 15 s" rather than a chart.
    image = chart(flood + BAR, timeout_s=15)
    assert image.width > 200


@slow
@executors
@pytest.mark.parametrize("code", ["while True:\n    pass", "import time\ntime.sleep(100)"])
def test_time_out(code: str) -> None:
    # The code never ends by itself, so failing at all, with this message, proves the limit.
    assert failure(BAR + code, timeout_s=3) == "timed out after 3 s"


@slow
@executors
@pytest.mark.parametrize("code", [
    "np.ones(10**10)",
    "chunks = []\nwhile True:\n    chunks.append(bytes(10**7))",
])
def test_out_of_memory(code: str) -> None:
    message = failure(code, memory_mb=1024)
    assert message.startswith("ran out of memory (limit 1024 MB)\n")
    assert "MemoryError" in message


@slow
@executors
def test_cpu_time_limit_is_a_time_out() -> None:
    # Lowering its own CPU limit to 1 s trips it: at once in a fresh interpreter, whose
    # imports took more, after a second in a child of the zygote, whose CPU time starts
    # at 0. The hard limit stays where it was, so SIGXCPU (not SIGKILL) ends the code.
    spin = ("import resource\nhard = resource.getrlimit(resource.RLIMIT_CPU)[1]\n"
            "resource.setrlimit(resource.RLIMIT_CPU, (1, hard))\nwhile True:\n    pass")
    assert failure(spin, timeout_s=10) == "timed out after 12 s of CPU time"


@slow
@executors
@pytest.mark.parametrize(("code", "report"), [
    ("import os\nos._exit(3)", "the chart process exited with status 3 and no chart"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "the chart process died of SIGSEGV"),
])
def test_a_crash_is_reported(code: str, report: str) -> None:
    assert failure(BAR + code).startswith(report)


@slow
@executors
def test_undefined_name_names_it_and_its_line() -> None:
    message = failure(BAR + "plt.xlabel(undefined_thing)\n")
    assert "NameError: name 'undefined_thing' is not defined" in message
    assert 'File "<chart>", line 3' in message
    assert "plt.xlabel(undefined_thing)" in message
    assert "chart_runner" not in message


@slow
@executors
def test_library_frames_are_named_from_their_package_not_by_a_path() -> None:
    message = failure("plt.bar(['a', 'b'], [1, 2, 3])\n")
    assert 'File "<chart>", line 1' in message
    assert 'File "matplotlib/axes/_axes.py", line ' in message
    assert "site-packages" not in message and sys.prefix not in message
    assert 'File "/' not in message


@slow
@executors
def test_syntax_error_gives_the_line() -> None:
    message = failure("plt.plot([1, 2])\nfor i in range(3)\n    plt.plot([i, i])\n")
    assert "SyntaxError" in message
    assert 'File "<chart>", line 2' in message
    assert "for i in range(3)" in message


@slow
@executors
def test_non_ascii_survives_and_renders() -> None:
    title = "Température — 20 °C — Zürich — Ωmega"
    code = (
        f"title = {title!r}\n"
        f"assert [ord(c) for c in title] == {[ord(c) for c in title]}\n"
        "plt.plot([1, 2], [3, 4])\nplt.title(title)\nplt.xlabel('Wärme (°C)')\n"
    )
    chart(code + NO_MISSING_GLYPHS)


@slow
@executors
def test_cjk_labels_render() -> None:
    labels = "plt.plot([1, 2], [3, 4])\nplt.title('東京の気温 — °C')\nplt.ylabel('서울 / 北京')\n"
    chart("sns.set_theme()\n" + labels)
    if reported("", "plt.rcParams['font.family']") == ["sans-serif"]:
        pytest.skip("the chart process found no CJK font: only checked that CJK labels render")
    chart(labels + NO_MISSING_GLYPHS)


def test_cjk_fonts_are_found_best_first() -> None:
    installed = ["DejaVu Sans", "Unifont", "WenQuanYi Zen Hei", "Noto Sans CJK JP", "cmr10"]
    assert cjk_font_names(installed) == ["Noto Sans CJK JP", "WenQuanYi Zen Hei", "Unifont"]
    assert cjk_font_names(["DejaVu Sans", "STIXGeneral"]) == []


def test_font_fallbacks_come_back_after_a_theme_resets_the_fonts() -> None:
    with mpl.rc_context({"font.family": ["sans-serif"]}):
        figure = Figure()
        axes = figure.subplots()
        axes.set_title("东京")
        restore_font_fallbacks(figure, ["STIXGeneral"])
        assert mpl.rcParams["font.family"] == ["sans-serif", "STIXGeneral"]
        assert axes.title.get_fontfamily() == ["sans-serif", "STIXGeneral"]
        restore_font_fallbacks(figure, ["STIXGeneral"])
        assert axes.title.get_fontfamily() == ["sans-serif", "STIXGeneral"]


@slow
@executors
def test_environment_has_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = {
        "FOO_API_KEY": "k", "GITHUB_TOKEN": "t", "my_secret": "s", "DB_PASSWORD": "p",
        "DATABASE_URL": "postgres://me:pw@db.example/app", "LLMI_HARMLESS": "1",
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    env = reported(
        "import os", "{k: v for k, v in os.environ.items() "
        f"if k in {set(planted)!r} or k.startswith('MPL') or k.endswith('_NUM_THREADS')}}",
    )
    assert env.pop("LLMI_HARMLESS") == "1"
    assert env.pop("MPLBACKEND") == "Agg"
    assert Path(env.pop("MPLCONFIGDIR")).parent.name == "matplotlib"
    assert env == dict.fromkeys(["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"], "1")


@slow
@executors
def test_working_folder_is_empty_private_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine.txt").write_text("not for the chart")
    monkeypatch.chdir(tmp_path)
    cwd = reported("import os\nassert os.listdir('.') == [], os.listdir('.')", "os.getcwd()")
    assert Path(cwd) != tmp_path
    assert not Path(cwd).exists()


@slow
@executors
def test_stdin_is_closed() -> None:
    code = (
        "import sys\nassert sys.stdin.read() == ''\n"
        "try:\n    input()\nexcept EOFError:\n    pass\n"
        "else:\n    raise AssertionError('input() returned')\n"
    )
    chart(code + BAR)


@slow
@executors
def test_limits_are_set() -> None:
    names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NPROC"]
    limits = reported(
        "import resource", f"{{n: resource.getrlimit(getattr(resource, n)) for n in {names!r}}}",
        timeout_s=10, memory_mb=1536,
    )
    assert limits["RLIMIT_AS"] == (1536 * 2**20,) * 2
    assert limits["RLIMIT_CPU"] == (12, 13)
    assert limits["RLIMIT_FSIZE"] == (64 * 2**20,) * 2
    assert limits["RLIMIT_CORE"] == (0, 0)
    assert limits["RLIMIT_NPROC"][0] != resource.RLIM_INFINITY


@slow
@executors
@pytest.mark.parametrize("ending", ["normal", "time-out"])
def test_no_process_outlives_the_job(ending: str) -> None:
    markers = marker(), marker()
    code = spawn_sleepers(*markers) + BAR
    if ending == "normal":
        chart(code)
    else:
        assert failure(code + "time.sleep(100)\n", timeout_s=4).startswith("timed out")
    assert running_with(*markers) == []


@slow
def test_no_process_outlives_an_exception_in_the_caller(
    executor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = marker(), marker()

    def until_the_sleepers_run(timeout: float) -> NoReturn:
        deadline = time.monotonic() + timeout
        while len(running_with(*markers)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        raise CallerFailed

    if executor == "cold":
        wait = subprocess.Popen.wait

        def interrupted_wait(self: subprocess.Popen[bytes], timeout: float | None = None) -> int:
            if timeout is None:
                return wait(self)
            until_the_sleepers_run(timeout)

        monkeypatch.setattr(subprocess.Popen, "wait", interrupted_wait)
    else:
        job_wait = chart_pool.ForkedJob.wait
        interrupted: list[bool] = []

        def interrupted_job_wait(self: chart_pool.ForkedJob, deadline: float) -> int:
            if interrupted:  # the wait for the killed job to end
                return job_wait(self, deadline)
            interrupted.append(True)
            until_the_sleepers_run(deadline - time.monotonic())

        monkeypatch.setattr(chart_pool.ForkedJob, "wait", interrupted_job_wait)
    with pytest.raises(CallerFailed):
        run_chart(spawn_sleepers(*markers) + "time.sleep(100)\n", timeout_s=15, memory_mb=2048,
                  sandbox=SANDBOX)
    assert running_with(*markers) == []


def tool_call(code: str, *, code_timeout: float, deadline_s: float) -> ToolCall:
    request = ImageRequest(slot=0, source="code", description="a bar chart",
                           params={"code": code}, depends_on=None, attempt=0)
    context = Context(code_timeout=code_timeout, code_memory_mb=2048)
    return ToolCall(request=request, context=context, deadline_s=deadline_s)


@slow
@executors
def test_code_tool_makes_a_chart_for_a_tool_call() -> None:
    assert isinstance(code_tool, ImageTool)
    assert (code_tool.source, code_tool.required_params) == ("code", ("code",))
    output = code_tool(tool_call(BAR, code_timeout=20, deadline_s=60))
    assert output.backend == "matplotlib"
    assert output.provenance == {"code": BAR}
    assert Image.open(io.BytesIO(output.data)).format == "PNG"


@slow
@executors
def test_code_tool_stops_at_the_deadline_when_it_comes_first() -> None:
    call = tool_call("import time\ntime.sleep(100)", code_timeout=20, deadline_s=2)
    with pytest.raises(ToolError, match="timed out after 2 s"):
        code_tool(call)


# The warm pool: one zygote, one fresh child per chart.

LEAKY = """
import builtins, os, sys, types, matplotlib
sns.set_theme(style="darkgrid")
plt.rcParams["lines.linewidth"] = 17
np.sum = lambda *args, **kwargs: "patched"
matplotlib.LEAKED = builtins.LEAKED = True
sys.modules["leaked_module"] = types.ModuleType("leaked_module")
os.environ["LLMI_LEAKED"] = "1"
plt.figure()
plt.plot([1, 2])
plt.figure()
"""
STATE = (
    "(os.getppid(), plt.rcParams['lines.linewidth'], plt.rcParams['axes.facecolor'], "
    "str(np.sum([1, 2])), hasattr(matplotlib, 'LEAKED'), hasattr(builtins, 'LEAKED'), "
    "'leaked_module' in sys.modules, 'LLMI_LEAKED' in os.environ, plt.get_fignums())"
)
# What the open descriptors name, but font files (a spare has drawn its throwaway figure,
# so matplotlib may hold the fonts every chart opens) and the listing's own.
FRESH = (
    "(hashlib.sha256(repr(sorted((k, repr(v)) for k, v in plt.rcParams.items())).encode())"
    ".hexdigest(), plt.get_fignums(), sorted(os.environ), os.listdir('.'), sys.argv, "
    "matplotlib.get_backend(), [os.path.basename(path) for path in (os.path.realpath("
    "f'/proc/self/fd/{fd}') for fd in sorted(os.listdir('/proc/self/fd'), key=int)) "
    "if not path.startswith('/proc/') and not path.endswith(('.ttf', '.otf', '.ttc'))])"
)


def zygote_pid() -> int | None:
    return chart_pool.shared_pool().zygote_pid()


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    """A pool of this test's own, closed afterwards, so that what the test does to
    it (a zygote that cannot start, another environment) stays here."""
    chart_pool.close_shared_pool()
    yield
    chart_pool.close_shared_pool()


def gone(pid: int, within_s: float = 30.0) -> bool:
    """Whether ``pid`` ends (or is a zombie) within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@slow
def test_warm_charts_are_children_of_the_zygote_and_cold_ones_are_not(warm: None) -> None:
    warm_parent = reported("import os", "os.getppid()")
    assert warm_parent == zygote_pid() != os.getpid()
    assert reported("import os", "os.getppid()", pool=False) == os.getpid()


@slow
def test_nothing_a_chart_does_reaches_the_next(warm: None) -> None:
    imports = "import builtins, os, sys, matplotlib"
    first = reported(LEAKY, STATE)
    second = reported(imports, STATE)
    # The first chart changed its process; the second, from the same zygote, saw none of it.
    assert first == (first[0], 17.0, "#EAEAF2", "patched", True, True, True, True, [1, 2])
    assert second == (first[0], 1.5, "white", "3", False, False, False, False, [])


@slow
def test_a_warm_chart_starts_where_a_fresh_interpreter_does(warm: None) -> None:
    imports = "import hashlib, os, sys, matplotlib"
    assert reported(imports, FRESH) == reported(imports, FRESH, pool=False)


@slow
def test_every_chart_draws_its_own_random_numbers(warm: None) -> None:
    draws = [reported("import random", "(random.random(), float(np.random.rand()))")
             for _ in range(2)]
    assert draws[0][0] != draws[1][0]
    assert draws[0][1] != draws[1][1]


@slow
def test_charts_run_at_once_in_children_of_one_zygote(warm: None, tmp_path: Path) -> None:
    # Each chart waits until all have started: run one after another, the first would
    # wait for ever and time out.
    charts = 8
    started = tmp_path / "started"
    started.mkdir()
    code = textwrap.dedent(f"""
        import os, time
        open(os.path.join({str(started)!r}, f"{{os.getppid()}}-{{os.getpid()}}"), "w").close()
        while len(os.listdir({str(started)!r})) < {charts}:
            time.sleep(0.01)
    """) + BAR
    with ThreadPoolExecutor(charts) as threads:
        images = list(threads.map(lambda _: chart(code, timeout_s=60), range(charts)))
    assert all(image.width > 200 for image in images)
    parents = {name.split("-")[0] for name in os.listdir(started)}
    assert parents == {str(zygote_pid())}


@slow
def test_the_zygote_is_single_threaded_unlimited_and_has_no_secrets(
    warm: None, fresh_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMI_PLANTED_API_KEY", "k")
    assert reported("import resource", "resource.getrlimit(resource.RLIMIT_AS)",
                    memory_mb=1536) == (1536 * 2**20,) * 2
    zygote = psutil.Process(zygote_pid())
    assert zygote.num_threads() == 1
    assert "LLMI_PLANTED_API_KEY" not in zygote.environ()
    assert zygote.environ()["JE_ARROW_MALLOC_CONF"] == "background_thread:false"
    for limit in ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_FSIZE"]:
        mine = resource.getrlimit(getattr(resource, limit))
        assert zygote.rlimit(getattr(psutil, limit)) == mine, limit


def idle_spare(zygote: int, within_s: float = 60.0) -> int:
    """The zygote's spare once it waits for a job: its only child, asleep, its CPU time
    unchanged for a second (the throwaway figure drawn)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        children = psutil.Process(zygote).children()
        if len(children) == 1:
            spare = children[0]
            with suppress(psutil.NoSuchProcess):
                before = spare.cpu_times()
                time.sleep(1.0)
                if spare.cpu_times() == before and spare.status() == psutil.STATUS_SLEEPING:
                    return spare.pid
        time.sleep(0.05)
    raise AssertionError("the zygote kept no idle spare")


@slow
def test_the_next_chart_runs_in_the_spare_forked_ahead_of_it(warm: None) -> None:
    first = reported("import os", "(os.getppid(), os.getpid())")
    spare = idle_spare(first[0])
    assert spare != first[1]
    assert reported("import os", "(os.getppid(), os.getpid())") == (first[0], spare)
    # A spare drew only outside pyplot: the chart in it starts as a fresh interpreter does.
    imports = "import hashlib, os, sys, matplotlib"
    idle_spare(first[0])
    assert reported(imports, FRESH) == reported(imports, FRESH, pool=False)


@slow
def test_a_spare_that_dies_is_replaced(warm: None) -> None:
    zygote = reported("import os", "os.getppid()")
    spare = idle_spare(zygote)
    os.kill(spare, signal.SIGKILL)
    assert gone(spare)
    assert chart(BAR).width > 200
    assert idle_spare(zygote) != spare


@slow
def test_a_killed_zygote_is_replaced(warm: None) -> None:
    first = reported("import os", "os.getppid()")
    os.kill(first, signal.SIGKILL)
    second = reported("import os", "os.getppid()")
    assert second == zygote_pid() not in (first, os.getpid())
    assert chart(BAR).width > 200


@slow
def test_a_stopped_zygote_is_replaced(warm: None) -> None:
    first = reported("import os", "os.getppid()")
    os.kill(first, signal.SIGSTOP)
    try:
        second = reported("import os", "os.getppid()", timeout_s=30)
    finally:
        with suppress(ProcessLookupError):
            os.kill(first, signal.SIGCONT)
    assert second == zygote_pid() not in (first, os.getpid())
    assert gone(first)


@slow
def test_a_chart_whose_zygote_dies_fails_and_the_next_one_works(warm: None) -> None:
    suicide = "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(100)"
    # Were the lost job not noticed, this would end in "timed out after 60 s".
    assert failure(suicide, timeout_s=60).startswith("the chart process was lost")
    assert chart(BAR).width > 200


@slow
def test_a_zygote_that_cannot_start_leaves_charts_to_fresh_interpreters(
    warm: None, fresh_pool: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken_runner.py"
    broken.write_text("raise SystemExit('no zygote here')\n")
    monkeypatch.setattr(chart_pool, "RUNNER", broken)
    assert reported("import os", "os.getppid()") == os.getpid()
    assert zygote_pid() is None
    assert chart(BAR).width > 200


@slow
def test_another_matplotlib_config_gets_another_zygote(
    warm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = reported("import os", "os.getppid()")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    parent, config = reported("import os, matplotlib", "(os.getppid(), matplotlib.get_configdir())")
    assert parent != first
    assert Path(config).parent == tmp_path / "cache" / "llmi" / "matplotlib"


@slow
@pytest.mark.parametrize("sandbox", ["off", "strict"])
def test_the_first_chart_runs_in_the_zygote_started_ahead_of_it(
    warm: None, fresh_pool: None, sandbox: str,
) -> None:
    if sandbox == "strict" and chart_jail.jail_problem():
        pytest.skip(f"no jail here: {chart_jail.jail_problem()}")
    start_chart_zygote(Context(code_sandbox=sandbox)).join()
    started = zygote_pid()
    assert started is not None
    png = run_chart(BAR, timeout_s=60, memory_mb=2048, sandbox=sandbox)
    assert Image.open(io.BytesIO(png)).width > 200
    assert zygote_pid() == started
    if sandbox == "off":  # a jailed chart sees the jail's pids, not llmi's
        assert reported("import os", "os.getppid()") == started


@pytest.mark.parametrize("settings", [
    {"code_pool": False},
    {"code_sandbox": "strict", "bwrap": "/nonexistent/bwrap"},
    {"code_sandbox": "nonesuch"},
], ids=["pool off", "no jail for strict", "unknown sandbox"])
def test_no_zygote_starts_ahead_where_charts_would_not_use_one(
    warm: None, fresh_pool: None, settings: dict[str, Any],
) -> None:
    thread = start_chart_zygote(Context(**settings))
    if thread is not None:
        thread.join()
    assert zygote_pid() is None


ENDS_UNUSED = """
import sys, time
import psutil
from llmi.context import Context
from llmi.tools.chart_pool import shared_pool
from llmi.tools.code import start_chart_zygote

start_chart_zygote(Context(code_sandbox=sys.argv[1])).join()
zygote = psutil.Process(shared_pool().zygote_pid())
while sys.argv[1] == "strict" and not zygote.children():  # bwrap, then the zygote in it
    time.sleep(0.01)
print(zygote.pid, *(child.pid for child in zygote.children()), flush=True)
"""


@slow
@pytest.mark.parametrize("sandbox", ["off", "strict"])
def test_a_zygote_no_chart_used_ends_with_llmi(sandbox: str, tmp_path: Path) -> None:
    if sandbox == "strict" and chart_jail.jail_problem():
        pytest.skip(f"no jail here: {chart_jail.jail_problem()}")
    ran = subprocess.run([sys.executable, "-c", ENDS_UNUSED, sandbox], capture_output=True,
                         text=True, timeout=120, env=os.environ | {"TMPDIR": str(tmp_path)})
    pids = list(map(int, ran.stdout.split()))
    assert pids, ran.stderr
    assert all(gone(pid) for pid in pids)
    assert os.listdir(tmp_path) == []


LLMI_ENDS = """
import os, signal, sys, threading, time
import psutil
from llmi.tools.chart_pool import shared_pool
from llmi.tools.code import run_chart, start_chart_zygote

run_chart("plt.plot([1, 2])", timeout_s=60, memory_mb=2048, pool=True, sandbox="off")
zygote = shared_pool().zygote_pid()
print(zygote, *(child.pid for child in psutil.Process(zygote).children()), flush=True)
if sys.argv[1] == "exits":
    sys.exit(0)
code = sys.argv[2]
threading.Thread(target=run_chart, args=(code,),
                 kwargs={"timeout_s": 60, "memory_mb": 2048, "pool": True, "sandbox": "off"},
                 daemon=True).start()
markers = set(sys.argv[3:])
while not markers <= {a for p in psutil.process_iter(["cmdline"]) for a in p.info["cmdline"] or []}:
    time.sleep(0.05)
if sys.argv[1] == "is killed":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(0)
"""


@slow
@pytest.mark.parametrize("ending", ["exits", "exits during a chart", "is killed"])
def test_the_zygote_and_its_charts_end_with_llmi(ending: str, tmp_path: Path) -> None:
    markers = marker(), marker()
    code = spawn_sleepers(*markers) + "time.sleep(100)\n"
    ran = subprocess.run([sys.executable, "-c", LLMI_ENDS, ending, code, *markers],
                         capture_output=True, text=True, timeout=120,
                         env=os.environ | {"TMPDIR": str(tmp_path)})
    zygote, *spares = map(int, ran.stdout.split())
    assert gone(zygote), ran.stderr
    assert spares and all(gone(spare) for spare in spares)
    assert gone_all(markers)
    # The zygote removed its folder; only a killed llmi leaves its chart's folder behind.
    left = os.listdir(tmp_path)
    assert not [name for name in left if name.startswith("llmi-chart-zygote-")]
    if ending != "is killed":
        assert left == []


def gone_all(markers: tuple[str, str], within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while running_with(*markers) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running_with(*markers) == []
