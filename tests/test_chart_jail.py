"""Attacks on llmi from chart code, and the jail that contains them (``chart_jail``).

Each attack is a chart whose code tries it and reports what it found by raising
``RuntimeError("REPORT <json>")``, which comes back in the ToolError's traceback tail.
Every attack runs jailed (``sandbox="strict"``) on both paths, a child of the warm
zygote and a fresh interpreter, and, where that is safe, also unjailed
(``sandbox="off"``), where it must succeed: so each test fails if the jail is removed.
The exceptions: the fork bomb (unjailed, root has no process limit), and the links a
chart leaves where llmi reads its results, which llmi must refuse under any setting.
Victims that a chart could kill or stop are separate processes this test starts, never
the test process itself.

Without a jail here (no bubblewrap, or a kernel that refuses its namespaces) the attacks
are skipped; ``LLMI_TEST_REQUIRE_JAIL=1`` (set by CI where bubblewrap is installed)
turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

import llmi
from llmi.context import Context, default_cache_dir
from llmi.tools import chart_jail, chart_pool
from llmi.tools.base import ToolError
from llmi.tools.code import run_chart

REQUIRE_JAIL = os.environ.get("LLMI_TEST_REQUIRE_JAIL") == "1"
JAIL = not chart_jail.jail_problem()
jailed = pytest.mark.skipif(
    not JAIL and not REQUIRE_JAIL,
    reason="no jail here: bubblewrap (bwrap) is missing or this kernel refuses its "
    "namespaces; CI installs bubblewrap and runs these",
)
pytestmark = pytest.mark.slow

REAL_HOME = Path.home()
SECRET = "sk-canary-" + uuid.uuid4().hex
TIMEOUT_S = 60.0
REPORTED = re.compile(r"^RuntimeError: REPORT (.*)$", re.MULTILINE)
PRELUDE = textwrap.dedent("""\
    import json, os, signal
    def report(found):
        raise RuntimeError("REPORT " + json.dumps(found))
    """)
SYSCALLS = {
    "x86_64": {"rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "clone3": 435},
    "aarch64": {"rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "clone3": 435},
}.get(platform.machine(), {})


@pytest.fixture(autouse=True)
def _jail_required() -> None:
    if REQUIRE_JAIL and not JAIL:
        pytest.fail(f"LLMI_TEST_REQUIRE_JAIL=1 but no jail: {chart_jail.jail_problem()}")


@pytest.fixture(params=[True, False], ids=["warm", "cold"])
def pool(request: pytest.FixtureRequest) -> bool:
    return request.param


def probe(code: str, *, pool: bool, sandbox: str) -> Any:
    """Run chart ``code`` (after ``PRELUDE``), which ends by calling ``report``; returns
    what it reported."""
    with pytest.raises(ToolError) as raised:
        run_chart(PRELUDE + textwrap.dedent(code), timeout_s=TIMEOUT_S, memory_mb=2048,
                  pool=pool, sandbox=sandbox)
    return reported(str(raised.value))


def reported(error: str) -> Any:
    found = REPORTED.findall(error)
    assert found, f"the chart did not report; its error: {error}"
    return json.loads(found[-1])


def marked_processes(marker: str) -> list[psutil.Process]:
    return [process for process in psutil.process_iter(["cmdline"])
            if marker in " ".join(process.info["cmdline"] or [])]


def spawn_sleeper(marker: str, **options: Any) -> subprocess.Popen[bytes]:
    """A victim process, not this test's: ``marker`` is in its command line."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time, sys; time.sleep(600)", marker],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **options,
    )


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """Another process of llmi's user, with the secret in its environment."""
    process = spawn_sleeper("llmi-victim", env=os.environ | {"OPENAI_API_KEY": SECRET})
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A HOME of llmi's user with secrets in it, outside /tmp (the jail's /tmp is its own,
    which would hide a home under /tmp for the wrong reason) where the system allows."""
    base = Path(tempfile.mkdtemp(prefix="llmi-jail-test-", dir=_outside_tmp(tmp_path)))
    folder = base / "home"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".netrc").write_text(f"machine api.openai.com password {SECRET}\n")
    (folder / ".ssh" / "id_ed25519").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n")
    (folder / ".bashrc").write_text("# the user's bashrc\n")
    cache = folder / ".cache" / "llmi"
    (cache / "artifacts" / "cache").mkdir(parents=True)
    with sqlite3.connect(cache / "checkpoints.sqlite") as db:
        db.execute("CREATE TABLE writes (prompt TEXT)")
        db.execute("INSERT INTO writes VALUES (?)", (f"another run's prompt {SECRET}",))
    db.close()
    # llmi's own caches (matplotlib's font list) stay where they were: built once.
    monkeypatch.setenv("XDG_CACHE_HOME", str(default_cache_dir().parent))
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("LLMI_ARTIFACTS", str(cache / "artifacts"))
    yield folder
    shutil.rmtree(base, ignore_errors=True)


def _outside_tmp(tmp_path: Path) -> Path:
    var_tmp = Path("/var/tmp")
    return var_tmp if os.access(var_tmp, os.W_OK | os.X_OK) else tmp_path


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- 1 and 2: secrets of the llmi process and of its user --------------------------------

READ_SECRETS = """
    found = []
    pid = os.getpid()
    while pid > 1:  # up the chain of parents: the zygote, llmi
        try:
            with open(f"/proc/{{pid}}/status") as status:
                pid = int(next(l for l in status if l.startswith("PPid:")).split()[1])
            with open(f"/proc/{{pid}}/environ", "rb") as environ:
                if {secret!r}.encode() in environ.read():
                    found.append(f"environ of parent {{pid}}")
        except (OSError, StopIteration, ValueError):
            break
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{{entry}}/environ", "rb") as environ:
                if {secret!r}.encode() in environ.read():
                    found.append(f"environ of process {{entry}}")
        except OSError:
            pass
    for path in {paths!r}:
        try:
            with open(path, "rb") as file:
                if {secret!r}.encode() in file.read():
                    found.append(path)
        except OSError:
            pass
    report(sorted(set(found)))
"""

DRIVER = """\
import json, sys
from llmi.tools.base import ToolError
from llmi.tools.code import run_chart
code, pool, sandbox = json.loads(sys.argv[1])
try:
    run_chart(code, timeout_s=60, memory_mb=2048, pool=pool, sandbox=sandbox)
    print(json.dumps("drew a chart"))
except ToolError as error:
    print(json.dumps(str(error)))
"""


def probe_from_llmi(code: str, *, home: Path, pool: bool, sandbox: str) -> Any:
    """Run the chart from a separate llmi process whose environment holds the secret:
    a script in the user's HOME, run from there, as a user's script calling llmi is."""
    script = home / "make_chart.py"
    script.write_text(DRIVER)
    env = os.environ | {"OPENAI_API_KEY": SECRET, "HOME": str(home)}
    done = subprocess.run(
        [sys.executable, str(script), json.dumps([PRELUDE + textwrap.dedent(code), pool, sandbox])],
        cwd=home, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    return reported(json.loads(done.stdout.splitlines()[-1]))


def secret_paths(home: Path) -> list[str]:
    return [str(home / ".netrc"), str(home / ".ssh" / "id_ed25519"),
            str(home / ".cache" / "llmi" / "checkpoints.sqlite")]


@jailed
def test_chart_cannot_read_llmi_environment_or_users_secrets(home: Path, pool: bool) -> None:
    code = READ_SECRETS.format(secret=SECRET, paths=secret_paths(home))
    assert probe_from_llmi(code, home=home, pool=pool, sandbox="strict") == []
    unjailed = probe_from_llmi(code, home=home, pool=pool, sandbox="off")
    # As root, the zygote's environment too; as a user, the zygote is undumpable, and
    # llmi's is read further up.
    assert any(found.startswith("environ of") for found in unjailed), unjailed
    assert set(secret_paths(home)) <= set(unjailed)


@jailed
def test_chart_cannot_read_secrets_of_other_processes(
    sleeper: subprocess.Popen[bytes], pool: bool,
) -> None:
    code = READ_SECRETS.format(secret=SECRET, paths=[])
    assert probe(code, pool=pool, sandbox="strict") == []
    assert f"environ of process {sleeper.pid}" in probe(code, pool=pool, sandbox="off")


@jailed
def test_chart_sees_nothing_of_the_real_home_but_the_way_to_python(pool: bool) -> None:
    code = f"""
    try:
        report(sorted(os.listdir({str(REAL_HOME)!r})))
    except OSError as error:
        report([])
    """
    needed = set()
    for folder in (sys.prefix, sys.base_prefix, sys.executable, llmi.__file__, *sys.path):
        real = Path(os.path.realpath(folder))
        if real.is_relative_to(REAL_HOME):
            needed.add(real.relative_to(REAL_HOME).parts[0])
    assert set(probe(code, pool=pool, sandbox="strict")) <= needed


# --- 3 and 4: writes to the artifact store and HOME ----------------------------------

WRITE = """
    written = []
    for path in {paths!r}:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "ab") as file:
                file.write(b"planted by chart code\\n")
            written.append(path)
        except OSError:
            pass
    report(written)
"""


def planted_paths(home: Path) -> list[str]:
    artifacts = Path(os.environ["LLMI_ARTIFACTS"])
    return [
        str(artifacts / "images" / "planted.png"),
        str(artifacts / "cache" / ("0" * 64 + ".json")),
        str(home / ".bashrc"),
        str(home / ".cache" / "llmi" / "matplotlib" / "matplotlibrc"),
    ]


@jailed
def test_chart_cannot_write_artifacts_cache_or_bashrc(home: Path, pool: bool) -> None:
    artifacts = Path(os.environ["LLMI_ARTIFACTS"])
    before = tree(home), tree(artifacts)
    probe(WRITE.format(paths=planted_paths(home)), pool=pool, sandbox="strict")
    assert (tree(home), tree(artifacts)) == before
    code = WRITE.format(paths=planted_paths(home))
    assert probe(code, pool=pool, sandbox="off") == planted_paths(home)
    assert (home / ".bashrc").read_text().endswith("planted by chart code\n")


@jailed
def test_only_the_jobs_folders_are_writable(home: Path, pool: bool) -> None:
    """Not even the jail's own root or /tmp: on the warm path every chart of a zygote
    shares its jail, and a file one chart leaves there would reach the next. Temporary
    files go to the job's folder (TMPDIR)."""
    outside = [str(home.parent / "planted" / "file")]
    everywhere = ["/planted", "/var/planted", "/etc/planted", "/usr/planted",
                  f"/tmp/planted-{uuid.uuid4().hex}", *outside]
    ours = ["planted-in-cwd"]
    written = probe(WRITE.format(paths=everywhere + ours), pool=pool, sandbox="strict")
    assert written == ours
    assert probe("import tempfile\nreport(os.path.dirname(tempfile.mkstemp()[1]) == os.getcwd())",
                 pool=pool, sandbox="strict") is True
    # Unjailed only into a folder of this test: llmi may be root, and / the host's.
    assert probe(WRITE.format(paths=outside), pool=pool, sandbox="off") == outside


EXFILTRATE = """
    job = os.path.join(os.path.dirname(os.getcwd()), "job")
    target = os.path.join(job, {name!r})
    if os.path.lexists(target):
        os.remove(target)
    os.symlink({secret!r}, target)
    os._exit({status})
"""


@jailed
@pytest.mark.parametrize(("name", "status"), [("chart.png", 0), ("error.txt", 1),
                                              ("stderr.txt", 3)])
def test_chart_cannot_make_llmi_read_a_file_for_it(
    home: Path, pool: bool, name: str, status: int
) -> None:
    """llmi reads the chart, the error and stderr from the job's folder, outside the jail:
    a link the chart left there in their place must not bring a file of llmi's user
    into the document or the error message."""
    code = PRELUDE + textwrap.dedent(
        EXFILTRATE.format(name=name, secret=str(home / ".netrc"), status=status))
    try:
        result = run_chart(code, timeout_s=TIMEOUT_S, memory_mb=2048, pool=pool,
                           sandbox="strict")
    except ToolError as error:
        result = str(error).encode()
    assert b"Traceback" not in result, result  # the attack ran to its end
    assert SECRET.encode() not in result


# --- 5: signals to llmi's processes -------------------------------------------------------

SIGNAL = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    info = (ctypes.c_int * 32)(0, 0, -1)  # si_signo, si_errno, si_code = SI_QUEUE
    seen, sent = [], []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{{entry}}/cmdline", "rb") as cmdline:
                if {marker!r}.encode() in cmdline.read():
                    seen.append(int(entry))
        except OSError:
            pass
    for pid in set(seen) | {{{pid}}}:
        for how in ("SIGSTOP", "SIGKILL"):
            try:
                os.kill(pid, getattr(signal, how))
                sent.append(f"kill {{how}}")
            except OSError:
                pass
        for name, number in {syscalls!r}.items():
            if name.startswith("rt_") and libc.syscall(
                    number, pid, *([pid] if "tg" in name else []), signal.SIGKILL, info) == 0:
                sent.append(name)
    report({{"seen": seen, "sent": sent}})
"""


@jailed
def test_chart_cannot_see_stop_or_kill_llmi(pool: bool) -> None:
    marker = "llmi-victim-" + uuid.uuid4().hex
    victim = spawn_sleeper(marker)
    try:
        code = SIGNAL.format(marker=marker, pid=victim.pid, syscalls=SYSCALLS)
        assert probe(code, pool=pool, sandbox="strict") == {"seen": [], "sent": []}
        assert victim.poll() is None
        assert psutil.Process(victim.pid).status() != psutil.STATUS_STOPPED
        unjailed = probe(code, pool=pool, sandbox="off")
        assert unjailed["seen"] == [victim.pid]
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()


@jailed
@pytest.mark.skipif(not SYSCALLS, reason="signal syscall numbers known for x86_64 and aarch64")
def test_chart_cannot_signal_its_zygote_or_jail(pool: bool) -> None:
    """Signal 0 checks the right to signal and delivers nothing, so this is safe to try
    unjailed too, where the parent is the zygote or this test."""
    code = f"""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    info = (ctypes.c_int * 32)(0, 0, -1)
    me, could = os.getpid(), []
    others = [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me]
    for pid in sorted(set(others) | {{os.getppid()}} - {{0}}):
        if libc.syscall({SYSCALLS['rt_sigqueueinfo']}, pid, 0, info) == 0:
            could.append(f"rt_sigqueueinfo {{pid}}")
        if libc.syscall({SYSCALLS['rt_tgsigqueueinfo']}, pid, pid, 0, info) == 0:
            could.append(f"rt_tgsigqueueinfo {{pid}}")
        try:
            os.kill(pid, 0)
            could.append(f"kill {{pid}}")
        except OSError:
            pass
    report(could[:8])  # unjailed the list is long, and the report must fit the error
    """
    assert probe(code, pool=pool, sandbox="strict") == []
    assert probe(code, pool=pool, sandbox="off") != []


@jailed
def test_chart_cannot_open_the_memory_of_other_processes(pool: bool) -> None:
    """``/proc/PID/mem`` opened for writing is ptrace without the ptrace call: a chart
    that could write the zygote's memory would draw every later chart."""
    code = """
    me, opened = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                os.close(os.open(f"/proc/{entry}/mem", os.O_RDWR))
                opened.append(int(entry))
            except OSError:
                pass
    report(opened)
    """
    assert probe(code, pool=pool, sandbox="strict") == []
    if os.getuid() == 0:  # a user's processes may be kept from it (Yama's ptrace_scope)
        assert probe(code, pool=pool, sandbox="off") != []


# --- 6 and 7: new processes ------------------------------------------------------------------

FORK = """
    import ctypes, subprocess
    results = {{}}
    def attempt(name, start):
        try:
            start()
            results[name] = "started"
        except OSError as error:
            results[name] = type(error).__name__
    def fork():
        if os.fork() == 0:
            os._exit(0)
    def daemon():
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 100; : {marker}"])
            os._exit(0)
        os.waitpid(pid, 0)
    def popen():
        subprocess.Popen(["/bin/sh", "-c", "sleep 100; : {marker}"])
    def spawn():
        os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "sleep 100; : {marker}"], {{}})
    def system():
        if os.system("sleep 100 & : {marker}") != 0:
            raise PermissionError
    def clone3():
        libc = ctypes.CDLL(None, use_errno=True)
        args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, signal.SIGCHLD)
        if not {clone3}:
            raise OSError("clone3's number is not known here")
        child = libc.syscall({clone3}, args, ctypes.sizeof(args))
        if child == 0:
            os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 100; : {marker}"])
        if child < 0:
            raise OSError(ctypes.get_errno(), "clone3")
    for name, start in [("fork", fork), ("daemon", daemon), ("popen", popen),
                        ("posix_spawn", spawn), ("system", system), ("clone3", clone3)]:
        attempt(name, start)
    report(results)
"""


@jailed
def test_chart_cannot_start_processes(pool: bool) -> None:
    marker = "llmi-stray-" + uuid.uuid4().hex
    code = FORK.format(marker=marker, clone3=SYSCALLS.get("clone3", 0))
    contained = probe(code, pool=pool, sandbox="strict")
    assert "started" not in contained.values(), contained
    assert contained["fork"] == contained["popen"] == "PermissionError"
    assert marked_processes(marker) == []
    assert probe(code, pool=pool, sandbox="off")["fork"] == "started"


OTHER_ABI_FORK = """
    import ctypes, mmap
    if {abi!r} == "x32":
        forked = ctypes.CDLL(None).syscall(0x40000000 | 57)
    else:  # int 0x80 with eax = 2: fork in the i386 table
        code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        code.write(bytes([0xB8, 2, 0, 0, 0, 0xCD, 0x80, 0xC3]))
        forked = ctypes.CFUNCTYPE(ctypes.c_long)(
            ctypes.addressof(ctypes.c_char.from_buffer(code)))()
    if forked == 0:
        os._exit(0)
    report("forked" if forked > 0 else "refused")
"""


@jailed
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x32 and i386 ABIs of x86_64")
@pytest.mark.parametrize("abi", ["x32", "i386"])
def test_chart_cannot_fork_through_another_syscall_abi(pool: bool, abi: str) -> None:
    """A filter written for x86_64's syscall numbers must not let the same process fork
    with the numbers of x86_64's other ABIs."""
    with pytest.raises(ToolError) as raised:
        run_chart(PRELUDE + textwrap.dedent(OTHER_ABI_FORK.format(abi=abi)),
                  timeout_s=TIMEOUT_S, memory_mb=2048, pool=pool, sandbox="strict")
    assert "REPORT \"forked\"" not in str(raised.value)
    assert "Traceback" not in str(raised.value) or "REPORT" in str(raised.value)


@jailed
def test_fork_bomb_fails_at_once(pool: bool) -> None:
    """Run only where a single fork is refused already: as root, no process limit would
    stop the bomb unjailed."""
    single = probe("try:\n    os.fork() or os._exit(0)\n    report('forked')\n"
                   "except OSError as error:\n    report(type(error).__name__)\n",
                   pool=pool, sandbox="strict")
    assert single == "PermissionError"
    with pytest.raises(ToolError) as raised:
        run_chart("import os\nwhile True:\n    os.fork()\n", timeout_s=TIMEOUT_S,
                  memory_mb=2048, pool=pool, sandbox="strict")
    assert "PermissionError" in str(raised.value)
    assert "timed out" not in str(raised.value)


# --- 8: network -------------------------------------------------------------------------

class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"llmi-host-loopback")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def abstract_socket() -> Iterator[str]:
    """A listening Unix socket in the abstract namespace, which belongs to the network
    namespace: D-Bus and X11 use such sockets."""
    name = "llmi-test-" + uuid.uuid4().hex
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen()
    yield name
    listener.close()


@jailed
def test_chart_cannot_reach_the_hosts_loopback(
    host_server: int, abstract_socket: str, pool: bool
) -> None:
    code = f"""
    import socket
    found = {{}}
    try:
        with socket.create_connection(("127.0.0.1", {host_server}), timeout=10) as tcp:
            tcp.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            found["tcp"] = tcp.makefile("rb").read().decode(errors="replace")
    except OSError as error:
        found["tcp"] = type(error).__name__
    try:
        with socket.socket(socket.AF_UNIX) as unix:
            unix.connect("\\0{abstract_socket}")
            found["unix"] = "connected"
    except OSError as error:
        found["unix"] = type(error).__name__
    report(found)
    """
    contained = probe(code, pool=pool, sandbox="strict")
    assert contained["tcp"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert contained["unix"] != "connected"
    unjailed = probe(code, pool=pool, sandbox="off")
    assert "llmi-host-loopback" in unjailed["tcp"]
    assert unjailed["unix"] == "connected"


# --- 9: environment -----------------------------------------------------------------------

@jailed
def test_chart_environment_holds_only_allowed_names(
    monkeypatch: pytest.MonkeyPatch, home: Path, pool: bool
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("LLMI_TEST_PLAIN_SETTING", SECRET)  # a name no deny-list catches
    code = "report(dict(os.environ))"
    contained = probe(code, pool=pool, sandbox="strict")
    assert not any(SECRET in value for value in contained.values()), contained
    assert not any(str(home) in value for value in contained.values()), contained
    assert set(contained) <= set(chart_jail.ALLOWED_ENV) | {"PATH", "HOME", "TMPDIR", "PWD"}
    assert probe(code, pool=pool, sandbox="off")["LLMI_TEST_PLAIN_SETTING"] == SECRET


# --- Charts of other documents ----------------------------------------------------------------

@jailed
def test_nothing_one_chart_leaves_in_its_temporary_folder_reaches_the_next(pool: bool) -> None:
    name = "llmi-left-" + uuid.uuid4().hex
    leave = ("import tempfile\nopen(os.path.join(tempfile.gettempdir(), "
             f"{name!r}), 'w').write('left')\nreport(tempfile.gettempdir())")
    look = f"import tempfile\nreport(os.path.exists(os.path.join(tempfile.gettempdir(), {name!r})))"
    left_in = probe(leave, pool=pool, sandbox="strict")
    assert probe(look, pool=pool, sandbox="strict") is False
    assert not Path(left_in, name).exists()  # it went with the job's folder
    shared = probe(leave, pool=pool, sandbox="off")
    try:
        assert probe(look, pool=pool, sandbox="off") is True
    finally:
        Path(shared, name).unlink(missing_ok=True)


VICTIM = """
    import time
    open({canary!r}, "w").write("another document's data")
    deadline = time.monotonic() + 50
    while not os.path.exists("done") and time.monotonic() < deadline:
        time.sleep(0.05)
    report("victim done")
"""

SNOOP = """
    import glob
    found = []
    candidates = glob.glob("/proc/[0-9]*/cwd/{canary}")
    for root in ["/tmp", os.path.dirname(os.path.dirname(os.getcwd()))]:
        for depth in ("*/*", "*/*/*"):
            candidates += glob.glob(os.path.join(root, depth, {canary!r}))
    for path in candidates:
        try:
            with open(path) as file:
                found.append(file.read())
            with open(os.path.join(os.path.dirname(path), "planted"), "w") as file:
                file.write("planted")
            found.append("wrote")
        except OSError:
            pass
    report(found)
"""


@jailed
def test_chart_cannot_reach_another_running_chart(pool: bool) -> None:
    """The victim chart runs until this test puts ``done`` in its working folder; the
    snooping chart runs meanwhile, and knows the name of the victim's file."""
    for sandbox, contained in (("strict", True), ("off", False)):
        canary = "llmi-canary-" + uuid.uuid4().hex
        with ThreadPoolExecutor(1) as executor:
            victim = executor.submit(probe, VICTIM.format(canary=canary), pool=pool,
                                     sandbox=sandbox)
            work = _wait_for_file(canary, victim)
            try:
                found = probe(SNOOP.format(canary=canary), pool=pool, sandbox=sandbox)
                planted = (work / "planted").exists()
            finally:
                (work / "done").write_text("")
            assert victim.result() == "victim done"
        if contained:
            assert found == [] and not planted, (found, planted)
        elif os.geteuid() == 0:
            # A user's unjailed charts cannot list the jobs folder or read another's cwd
            # either (undumpable): only root's show that the attack itself works.
            assert "another document's data" in found


def _wait_for_file(name: str, victim: Any) -> Path:
    """The working folder of the running chart that wrote ``name``, as llmi sees it. The
    jobs folder is listable to no one but root: this test, as llmi, opens it a moment."""
    root = chart_pool.jobs_root()
    while not victim.done():
        root.chmod(0o700)
        try:
            found = next(root.glob(f"*/*/{name}"), None)
        finally:
            root.chmod(0o300)
        if found is not None:
            return found.parent
        time.sleep(0.05)
    pytest.fail(f"the victim chart ended first: {victim.exception() or victim.result()}")


# --- Where no jail can be had ---------------------------------------------------------------

def test_strict_without_a_jail_refuses_chart_code_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chart_jail, "jail_problem", lambda bwrap="": "bubblewrap is not installed")
    with pytest.raises(ToolError) as raised:
        run_chart("plt.plot([1, 2])", timeout_s=TIMEOUT_S, memory_mb=2048, sandbox="strict")
    assert raised.value.kind == "config"
    assert chart_jail.SANDBOX_ENV in str(raised.value)


def test_an_invalid_bwrap_path_makes_the_jail_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(chart_jail.BWRAP_ENV, str(tmp_path / "no-bwrap"))
    bwrap = Context().bwrap
    assert chart_jail.jail_problem(bwrap)
    with pytest.raises(ToolError) as raised:
        run_chart("plt.plot([1, 2])", timeout_s=TIMEOUT_S, memory_mb=2048, sandbox="strict",
                  bwrap=bwrap)
    assert raised.value.kind == "config"
    assert "LLMI_CODE_SANDBOX" in str(raised.value)


def test_strict_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(chart_jail.SANDBOX_ENV, raising=False)  # conftest sets it
    assert Context().code_sandbox == "strict"


def test_charts_started_at_once_share_one_jobs_folder() -> None:
    """A jailed zygote sees only the jobs folder it was started with: two threads asking
    for it at once must get the same one."""
    chart_pool.close_shared_pool()
    chart_pool._make_jobs_root.cache_clear()
    with ThreadPoolExecutor(8) as threads:
        roots = set(threads.map(lambda _: chart_pool.jobs_root(), range(32)))
    assert len(roots) == 1


# --- the jail's life: it lives as long as llmi needs it, and no longer -------------------

@jailed
def test_a_jailed_zygote_outlives_the_thread_that_started_it() -> None:
    """Test-time scaling draws its candidates' charts on worker threads: the thread that
    started the zygote may end while another thread's chart runs in it."""
    chart_pool.close_shared_pool()
    drawn, may_end = threading.Event(), threading.Event()

    def starter() -> None:
        run_chart("plt.plot([1, 2])", timeout_s=TIMEOUT_S, memory_mb=2048, sandbox="strict")
        drawn.set()
        may_end.wait(TIMEOUT_S)

    first = threading.Thread(target=starter)
    first.start()
    assert drawn.wait(TIMEOUT_S)
    zygote = chart_pool.shared_pool().zygote_pid()
    with ThreadPoolExecutor(1) as other:
        slow = other.submit(run_chart, "import time\ntime.sleep(1.5)\nplt.plot([1, 3])",
                            timeout_s=TIMEOUT_S, memory_mb=2048, sandbox="strict")
        time.sleep(0.5)  # the slow chart is in the zygote now
        may_end.set()
        first.join()
        assert slow.result().startswith(b"\x89PNG")
    assert chart_pool.shared_pool().zygote_pid() == zygote is not None


JAILED_LLMI_ENDS = """
import sys, threading, time
import psutil
from llmi.tools.chart_pool import shared_pool
from llmi.tools.code import run_chart

def chart(code):
    run_chart(code, timeout_s=60, memory_mb=2048, pool=True, sandbox="strict")

starter = threading.Thread(target=chart, args=("plt.plot([1, 2])",))
starter.start()
starter.join()
zygote = psutil.Process(shared_pool().zygote_pid())
before = {p.pid for p in zygote.children(recursive=True)}
threading.Thread(target=chart, args=("import time\\ntime.sleep(100)",), daemon=True).start()
while not {p.pid for p in zygote.children(recursive=True)} - before:  # the next spare
    time.sleep(0.05)
print(zygote.pid, *(p.pid for p in zygote.children(recursive=True)), flush=True)
if sys.argv[1] == "is killed":
    psutil.Process().kill()
sys.exit(0)
"""


@jailed
@pytest.mark.parametrize("ending", ["exits during a chart", "is killed"])
def test_a_jailed_zygote_and_its_charts_end_with_llmi(ending: str) -> None:
    ran = subprocess.run([sys.executable, "-c", JAILED_LLMI_ENDS, ending],
                         capture_output=True, text=True, timeout=120, check=False)
    pids = [int(pid) for pid in ran.stdout.split()]
    assert len(pids) >= 4, ran.stderr  # bwrap, the zygote, the chart, the spare
    deadline = time.monotonic() + 30
    while [pid for pid in pids if psutil.pid_exists(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if _running(pid)] == []


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
