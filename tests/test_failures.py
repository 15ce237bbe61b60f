"""Hard stops: every failure a user can cause or meet ends in one ``llmi:`` line and a hint.

Model servers are the loopback OpenAI stand-in (its error replies are the bodies OpenAI
documents); full disks are real ones, a small tmpfs made by bubblewrap or by
``unshare``; folders that cannot be written are real ones too, with the permission
checks a user without root meets.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmi.checkpoints import latest, open_checkpointer
from llmi.cli import main
from llmi.context import Context
from llmi.models import ModelServerError, chat_model

from openai_standin import (
    BAD_KEY,
    OUT_OF_QUOTA,
    RATE_LIMITED,
    SERVER_ERROR,
    chat_server,
    closed_port_url,
    silent_server,
)

TEXT_ONLY = "# A note\n\nNo pictures needed."


def told(stderr: str) -> tuple[str, str]:
    """The ``llmi:`` line and the hint after it; there must be exactly one of each."""
    lines = stderr.strip().splitlines()
    reasons = [i for i, line in enumerate(lines) if line.startswith("llmi:")]
    assert len(reasons) == 1, stderr
    assert "Traceback" not in stderr, stderr
    hints = [line for line in lines if line.startswith("hint:")]
    assert hints == [lines[reasons[0] + 1]], stderr
    return lines[reasons[0]].removeprefix("llmi: "), hints[0].removeprefix("hint: ")


def tries_over(reason: str) -> tuple[int, float]:
    """(tries, seconds) as the reason says them: "on 3 tries over 1.4 s", "on 1 try in 0.1 s"."""
    found = re.search(r" on (\d+) tr(?:ies over|y in) (\d+\.\d) s", reason)
    assert found, reason
    return int(found.group(1)), float(found.group(2))


@pytest.fixture
def generate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """``llmi generate`` against a server at ``url``: (exit status, stderr)."""
    monkeypatch.setenv("LLMI_MODEL", "gpt-4o")
    monkeypatch.setenv("LLMI_CHECKPOINT_URL", str(tmp_path / "checkpoints.sqlite"))

    def run(url: str, **settings: str) -> tuple[int, str]:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        code = main(["generate", "A note", "--out", str(tmp_path / "out")])
        return code, capsys.readouterr().err

    return run


# --- model servers -----------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "said"), [
    (SERVER_ERROR, "failed with HTTP 500"),
    (RATE_LIMITED, "refused the request for its rate limit (HTTP 429)"),
])
def test_a_failing_server_is_tried_again_and_the_message_counts_the_tries(
    generate, reply, said: str,
) -> None:
    with chat_server(reply) as (url, seen):
        code, err = generate(url, LLMI_MODEL_RETRIES="2")
    assert code == 2
    assert len(seen) == 3
    reason, hint = told(err)
    assert reason.startswith(f"the model server at {url} {said} on 3 tries over ")
    assert reason.endswith(": " + reply.error["message"])
    tries, seconds = tries_over(reason)
    assert tries == 3 and seconds > 0
    assert "LLMI_MODEL_RETRIES" in hint
    assert "OPENAI_API_KEY" not in hint


def test_a_server_that_recovers_within_the_retries(generate, tmp_path: Path) -> None:
    with chat_server(SERVER_ERROR, SERVER_ERROR, TEXT_ONLY) as (url, seen):
        code, err = generate(url)
    assert code == 0, err
    assert len(seen) == 3
    assert "No pictures needed." in (tmp_path / "out" / "document.md").read_text()


def test_the_retries_setting(generate) -> None:
    with chat_server(SERVER_ERROR) as (url, seen):
        code, err = generate(url, LLMI_MODEL_RETRIES="0")
    assert code == 2 and len(seen) == 1
    reason, _ = told(err)
    assert tries_over(reason)[0] == 1 and " on 1 try in " in reason


def test_quota_is_told_as_quota_and_not_tried_again(generate) -> None:
    with chat_server(OUT_OF_QUOTA) as (url, seen):
        code, err = generate(url, LLMI_MODEL_RETRIES="3")
    assert code == 2
    assert len(seen) == 1
    reason, hint = told(err)
    assert "quota" in reason and "insufficient_quota" in reason
    assert tries_over(reason)[0] == 1
    assert "OPENAI_API_KEY" in hint and "account" in hint and "credit" in hint
    assert "LLMI_MODEL_RETRIES" not in hint


def test_quota_is_not_tried_again_from_async_code_either() -> None:
    """A LangGraph server calls the models from async code, through the async client."""
    with chat_server(OUT_OF_QUOTA) as (url, seen):
        model = chat_model(Context(model="gpt-4o", base_url=url, model_retries=3))
        with pytest.raises(ModelServerError) as raised:
            asyncio.run(model.ainvoke("A note"))
    assert len(seen) == 1
    assert raised.value.tries == 1 and "quota" in raised.value.reason


def test_a_refused_key_names_the_key(generate) -> None:
    with chat_server(BAD_KEY) as (url, seen):
        code, err = generate(url)
    assert code == 2 and len(seen) == 1
    reason, hint = told(err)
    assert "refused the key (HTTP 401)" in reason and "Incorrect API key" in reason
    assert "OPENAI_API_KEY" in hint


def test_a_server_that_never_answers_is_told_with_the_time_of_every_try(generate) -> None:
    with silent_server() as url:
        code, err = generate(url, LLMI_MODEL_TIMEOUT="1", LLMI_MODEL_RETRIES="1")
    assert code == 2
    reason, hint = told(err)
    assert reason.startswith(f"the model server at {url} did not answer within 1 s on 2 tries")
    tries, seconds = tries_over(reason)
    # Two tries waited their second each: the time told is the whole wait, not one try's.
    assert tries == 2 and seconds >= 2.0
    assert "LLMI_MODEL_TIMEOUT" in hint and "LLMI_MODEL_RETRIES" in hint


def test_a_server_that_is_down(generate) -> None:
    url = closed_port_url()
    code, err = generate(url)
    assert code == 2
    reason, hint = told(err)
    assert reason.startswith(f"the model server at {url} did not answer (")
    assert "refused" in reason.lower() and tries_over(reason)[0] == 3
    assert "OPENAI_BASE_URL" in hint and "LLMI_MODEL_RETRIES" in hint


# --- files that cannot be written -----------------------------------------------------------


def llmi(*args: str, env: dict[str, str], prefix: list[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "llmi.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def storage_env(tmp_path: Path, *, artifacts: Path, checkpoints: Path) -> dict[str, str]:
    return {**os.environ, "LLMI_ARTIFACTS": str(artifacts),
            "LLMI_CHECKPOINT_URL": str(checkpoints)}


def run_id(stderr: str) -> str:
    found = re.search(r"^run (\S+) ", stderr, re.MULTILINE)
    assert found, stderr
    return found.group(1)


def temporary_files(folder: Path) -> list[Path]:
    """Hidden files named as temporary ones, as llmi (and tempfile's mkstemp) name them."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") and "tmp" in p.name]


def small_disk(folder: Path, size: int) -> list[str]:
    """A command prefix that runs what follows with a tmpfs of ``size`` bytes at ``folder``;
    the test is skipped where neither bubblewrap nor ``unshare`` can make one."""
    ways = []
    if bwrap := shutil.which("bwrap"):
        ways.append([bwrap, "--dev-bind", "/", "/", "--size", str(size), "--tmpfs", str(folder)])
    if unshare := shutil.which("unshare"):
        ways.append([unshare, "--user", "--map-root-user", "--mount", "sh", "-c",
                     f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(folder)])
    folder.mkdir(parents=True, exist_ok=True)
    for way in ways:
        if subprocess.run([*way, "true"], capture_output=True).returncode == 0:
            return way
    pytest.skip("no tmpfs can be made here: bubblewrap and unshare --user --mount both failed")


def kept_after(prefix: list[str], small: Path, keep: Path) -> list[str]:
    """``prefix`` running a command, then copying what is left on the small disk to ``keep``
    before the disk goes away; the command's exit status is kept."""
    keep.mkdir()
    return [*prefix, "sh", "-c", f'"$@"; status=$?; cp -a "{small}/." "{keep}/"; exit $status',
            "sh"]


def test_a_full_disk_under_the_document(tmp_path: Path) -> None:
    small, keep = tmp_path / "small", tmp_path / "left"
    env = storage_env(tmp_path, artifacts=tmp_path / "artifacts",
                      checkpoints=tmp_path / "checkpoints.sqlite")
    prefix = kept_after(small_disk(small, 20_000), small, keep)

    result = llmi("demo", "--out", str(small / "out"), env=env, prefix=prefix)

    assert result.returncode == 2, result.stderr
    reason, hint = told(result.stderr)
    assert re.fullmatch(rf"no space left on the disk of {re.escape(str(small))}/out/\S+", reason)
    thread = run_id(result.stderr)
    assert f"llmi resume {thread}" in hint and "--out" in hint
    assert temporary_files(keep) == []
    # The run goes on where it stopped, into a folder with room; what the full disk kept
    # is whole: the same bytes the finished run wrote.
    resumed = llmi("resume", thread, "--out", str(tmp_path / "out"), env=env)
    assert resumed.returncode == 0, resumed.stderr
    for left in (p for p in (keep / "out").rglob("*") if p.is_file()):
        assert left.read_bytes() == (tmp_path / "out" / left.relative_to(keep / "out")).read_bytes()


def test_a_full_disk_under_the_checkpoints_and_the_artifacts(tmp_path: Path) -> None:
    small, keep = tmp_path / "small", tmp_path / "left"
    env = storage_env(tmp_path, artifacts=small / "artifacts",
                      checkpoints=small / "checkpoints.sqlite")
    prefix = kept_after(small_disk(small, 300_000), small, keep)

    result = llmi("demo", "--out", str(small / "out"), env=env, prefix=prefix)

    assert result.returncode == 2, result.stderr
    reason, hint = told(result.stderr)
    assert reason.startswith("no space left on the disk of ")
    assert str(small) in reason
    assert hint.startswith("free some space on that disk")
    assert temporary_files(keep) == []


@pytest.fixture
def without_root() -> list[str]:
    """A prefix that runs a command under the permission checks of a user without root:
    none as such a user, ``unshare --user`` as root (its owner bits then apply to it)."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--user", "true"]).returncode != 0:
        pytest.skip("running as root, and unshare --user is not allowed here")
    return [unshare, "--user"]


def test_an_asset_folder_that_cannot_be_written(tmp_path: Path, without_root: list[str]) -> None:
    out = tmp_path / "out"
    (out / "assets").mkdir(parents=True)
    (out / "assets").chmod(0o500)
    env = storage_env(tmp_path, artifacts=tmp_path / "artifacts",
                      checkpoints=tmp_path / "checkpoints.sqlite")

    result = llmi("demo", "--out", str(out), env=env, prefix=without_root)

    assert result.returncode == 2, result.stderr
    reason, hint = told(result.stderr)
    assert re.fullmatch(rf"no permission to write {re.escape(str(out))}/assets/\S+", reason)
    assert hint.startswith("make that folder writable for this user, then continue the run "
                           f"with `llmi resume {run_id(result.stderr)}`")
    assert temporary_files(out) == []


def test_a_checkpoint_file_that_cannot_be_written(tmp_path: Path, without_root: list[str]) -> None:
    store = tmp_path / "checkpoints.sqlite"
    with open_checkpointer(str(store)) as saver:
        latest(saver, "none")  # makes its tables
    store.chmod(0o444)
    env = storage_env(tmp_path, artifacts=tmp_path / "artifacts", checkpoints=store)

    result = llmi("demo", "--out", str(tmp_path / "out"), env=env, prefix=without_root)

    assert result.returncode == 2, result.stderr
    reason, hint = told(result.stderr)
    assert reason == f"the checkpoint file {store} cannot be written (attempt to write a " \
                     "readonly database)"
    # Nothing of the run was saved, so there is nothing to resume.
    assert hint == "make it and its folder writable for this user, or write elsewhere " \
                   "(LLMI_CHECKPOINT_URL)"
    assert sqlite3.connect(store).execute("select count(*) from checkpoints").fetchone() == (0,)


def test_a_checkpoint_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    env = storage_env(tmp_path, artifacts=tmp_path / "artifacts",
                      checkpoints=tmp_path / "a-file" / "runs" / "checkpoints.sqlite")

    result = llmi("demo", "--out", str(tmp_path / "out"), env=env)

    assert result.returncode == 2
    reason, hint = told(result.stderr)
    assert reason.startswith(f"cannot open the checkpoint file {tmp_path}/a-file/runs/")
    assert "LLMI_CHECKPOINT_URL" in hint
