"""The llmi command: its error paths, a run against a loopback model server, the demo."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llmi.cli import main
from llmi.cli.parser import build_parser

from helpers import gradient_png, tag
from openai_standin import chat_server, closed_port_url, silent_server


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def llmi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmi.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> dict[str, str]:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    import os

    return dict(os.environ)


def test_help_lists_the_commands() -> None:
    result = llmi("--help")
    assert result.returncode == 0
    assert "generate" in result.stdout and "demo" in result.stdout


def imported_by(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """The top-level packages ``llmi ARGS`` imports, as ``-X importtime`` lists them, and
    what it said besides."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmi.cli", *args],
                            capture_output=True, text=True, timeout=120, env=env,
                            stdin=subprocess.DEVNULL)
    imported, said = set(), [result.stdout]
    for line in result.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        else:
            said.append(line)
    return imported, "\n".join(said)


@pytest.mark.parametrize(("args", "answer"), [
    (["--help"], "usage: llmi"),
    (["--version"], "llmi "),
    (["eval", "--help"], "usage: llmi eval"),
    (["generate", "x", "--images", "100"], "argument --images: must be"),
    (["generate", "x"], "llmi: no chat model is configured"),
], ids=["help", "version", "eval-help", "argument-error", "no-model"])
def test_what_stops_before_a_model_call_imports_no_model_client_nor_the_graphs(
    args: list[str], answer: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    imported, said = imported_by(*args, env=_env(monkeypatch))
    assert answer in said
    assert "llmi" in imported and "argparse" in imported
    assert imported & {"openai", "langchain_openai", "langchain_core", "langgraph", "matplotlib",
                       "torch"} == set()


def test_no_model_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    result = llmi("generate", "a guide", env=_env(monkeypatch))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "llmi: no chat model is configured"
    assert lines[1].startswith("hint: set LLMI_MODEL")


def test_server_that_refuses_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(monkeypatch, LLMI_MODEL="m", OPENAI_BASE_URL=closed_port_url())
    result = llmi("generate", "a guide", env=env)
    assert result.returncode != 0
    reason = [line for line in result.stderr.splitlines() if line.startswith("llmi:")]
    assert len(reason) == 1 and "did not answer" in reason[0], result.stderr
    assert "Traceback" not in result.stderr


def test_server_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    with silent_server() as url:
        env = _env(monkeypatch, LLMI_MODEL="m", OPENAI_BASE_URL=url, LLMI_MODEL_TIMEOUT="1")
        result = llmi("generate", "a guide", env=env)
    assert result.returncode != 0
    assert "did not answer within 1 s" in result.stderr, result.stderr


def test_unreadable_input_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "photo.png"
    bad.write_text("not an image")
    env = _env(monkeypatch, LLMI_MODEL="m")
    result = llmi("generate", "x", "--image", str(bad), env=env)
    assert result.returncode != 0
    assert "photo.png" in result.stderr and "not a readable image" in result.stderr


def test_generate_against_a_loopback_openai_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "input.png"
    photo.write_bytes(gradient_png(5, (120, 90)))
    draft = "# Report\n\nSales grew.\n\n" + tag(
        "code", "Sales by year", code="plt.bar(['2023', '2024'], [3, 5])\nplt.title('Ventes — 2024')"
    ) + "\n\nAnd your photo, edited:\n\n" + tag("edit", "Edited photo", img_index=0, prompt="warmer")
    with chat_server(draft) as (url, seen):
        monkeypatch.setenv("LLMI_MODEL", "llmi-test-model")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        code = main(["generate", "A sales report", "--image", str(photo), "--out", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / name)
                       for name in ("document.md", "document.html", "manifest.json")]
    request = seen[0]
    assert request["path"] == "/v1/chat/completions" and request["body"]["model"] == "llmi-test-model"
    system, user = request["body"]["messages"]
    assert "<imgen>" in system["content"] and "input image(s) are 0-0" in system["content"]
    assert user["content"][0]["text"] == "A sales report"
    assert user["content"][2]["image_url"]["url"].startswith("data:image/png;base64,")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    slots = {s["index"]: s for s in manifest["slots"]}
    assert slots[1]["ok"] and slots[1]["image"]["width"] > 64
    assert not slots[2]["ok"] and "LLMI_EDIT" in slots[2]["error"]


def test_generate_writes_and_prints_the_formats_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("llmi.export.pdf", exc_type=OSError)  # WeasyPrint needs Pango
    draft = "# Report\n\nSales grew.\n\n" + tag("code", "Sales", code="plt.bar(['a'], [1])")
    with chat_server(draft) as (url, _):
        monkeypatch.setenv("LLMI_MODEL", "llmi-test-model")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        code = main(["generate", "A report", "--format", "docx,pdf", "--out", str(tmp_path / "out")])
    assert code == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "out" / name) for name in ("document.docx", "document.pdf", "manifest.json")]
    assert (tmp_path / "out" / "document.pdf").read_bytes().startswith(b"%PDF")


def test_demo_runs_offline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = llmi("demo", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "recorded" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    photo, repaired, _ = manifest["slots"]
    assert manifest["stats"] == {"search": {"total": 1, "success": 1},
                                 "code": {"total": 2, "success": 2}}
    assert photo["provenance"]["path"] == "grace_hopper.jpg"
    assert repaired["attempts"] == 2 and repaired["repairs"][-1]["worked"]
    html = (out / "document.html").read_text()
    assert 'class="failed"' not in html and "<imgen" not in html


def test_generate_with_candidates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    draft = "# Report\n\n" + tag("code", "Sales", code="plt.bar(['a', 'b'], [1, 2])") + "\n\nDone."
    with chat_server(draft) as (url, seen):
        monkeypatch.setenv("LLMI_MODEL", "llmi-test-model")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        code = main(["generate", "A report", "--candidates", "4", "--keep", "2",
                     "--out", str(tmp_path / "out")])
    assert code == 0
    plans = [r["body"] for r in seen if "<imgen>" in r["body"]["messages"][0]["content"]]
    assert sorted(body["seed"] for body in plans) == [0, 1, 2, 3]
    assert len({body["temperature"] for body in plans}) == 4
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [c["pruned"] for c in manifest["candidates"]] == [False, False, True, True]
    assert manifest["winner"] == "c0" and manifest["slots"][0]["ok"]
    assert "candidate c3: pruned" in capsys.readouterr().err


def test_candidates_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "x", "--candidates", "0"])
    assert "must be 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "nodes"), [
    ([], ["intake", "planner", "dispatch", "verifier", "assembler"]),
    (["--tts"], ["draft", "screen", "produce", "rank", "polish"]),
])
def test_graph_prints_mermaid(flags: list[str], nodes: list[str],
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", *flags]) == 0
    text = capsys.readouterr().out
    assert "graph TD;" in text
    assert all(f"\t{node}({node})" in text for node in nodes)


# --- everything is checked before the first model call ----------------------------------


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, list[dict]]:
    """Run ``llmi generate`` against a chat stand-in; the one llmi: line and its requests."""
    with chat_server("# A document") as (url, seen):
        os.environ["OPENAI_BASE_URL"] = url  # _server_env undoes it
        code = main(list(args))
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("llmi: ") and lines[1].startswith("hint: ")
    assert "Traceback" not in lines[0]
    return lines[0], seen


@pytest.fixture
def _server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set and unset through monkeypatch, so _refused's os.environ writes are undone.
    monkeypatch.setenv("LLMI_MODEL", "llmi-test-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://unset.invalid")


@pytest.mark.usefixtures("_server_env")
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_input_image_is_refused_before_any_model_call(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = io.BytesIO()
    Image.open(io.BytesIO(gradient_png(3, (320, 240)))).save(whole, fmt)
    cut = tmp_path / f"photo.{fmt.lower()}"
    cut.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    reason, seen = _refused(capsys, "generate", "x", "--image", str(cut), "--out",
                            str(tmp_path / "out"))
    assert f"photo.{fmt.lower()}" in reason and "truncated" in reason
    assert seen == []


@pytest.mark.usefixtures("_server_env")
@pytest.mark.parametrize("place", ["proc", "file", "under a file", "read-only"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_model_call(
    place: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    out = {
        "proc": Path("/proc/x"),
        "file": a_file,
        "under a file": a_file / "out",
        "read-only": Path("/sys"),  # sysfs: no one may make files there, root included
    }[place]
    reason, seen = _refused(capsys, "generate", "x", "--out", str(out))
    assert reason.startswith(f"llmi: cannot make the output folder {out}: ") or \
        reason.startswith(f"llmi: cannot write in the output folder {out}: ")
    if place.endswith("file"):
        assert reason.endswith(f"{a_file} is a file")
    assert seen == []
    assert a_file.read_text() == "mine"


def test_a_missing_output_folder_is_made_before_the_model_call_and_no_probe_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "new" / "folder"
    env = _env(monkeypatch, LLMI_MODEL="m", OPENAI_BASE_URL=closed_port_url())
    result = llmi("generate", "a guide", "--out", str(out), env=env)
    assert "did not answer" in result.stderr  # the model call failed, after the check
    assert out.is_dir() and list(out.iterdir()) == []


@pytest.mark.usefixtures("_server_env")
@pytest.mark.parametrize(("args", "env", "said"), [
    (["--keep", "3", "--candidates", "2"], {}, "keep is 3 but candidates is 2"),
    (["--keep", "3"], {"LLMI_CANDIDATES": "2"}, "keep is 3 but candidates is 2"),
    (["--candidates", "2"], {"LLMI_KEEP": "3"}, "keep is 3 but candidates is 2"),
    ([], {"LLMI_KEEP": "3"}, "keep is 3 but candidates is 1"),
    ([], {"LLMI_CANDIDATES": "0"}, "LLMI_CANDIDATES must be 1 or more, not 0"),
    (["--images", "20"], {"LLMI_MAX_IMAGES": "12"}, "--images 20 asks for more images"),
])
def test_settings_that_cannot_work_are_refused_before_any_model_call(
    args: list[str], env: dict[str, str], said: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reason, seen = _refused(capsys, "generate", "x", "--out", str(tmp_path / "out"), *args)
    assert said in reason
    assert seen == []


@pytest.mark.usefixtures("_server_env")
@pytest.mark.parametrize(("name", "value", "said"), [
    ("LLMI_KEEP", "abc", "LLMI_KEEP='abc' is not a whole number"),
    ("LLMI_TOOL_CACHE", "maybe", "LLMI_TOOL_CACHE='maybe' is not one of"),
    ("LLMI_CONSISTENCY", "always", "LLMI_CONSISTENCY='always' is not one of auto, tags, off"),
])
def test_a_setting_with_a_value_it_cannot_take_is_one_line(
    name: str, value: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    reason, seen = _refused(capsys, "generate", "x", "--out", str(tmp_path / "out"))
    assert said in reason
    assert seen == []


@pytest.mark.usefixtures("_server_env")
def test_an_artifact_folder_that_cannot_be_written_is_refused_before_any_model_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    monkeypatch.setenv("LLMI_ARTIFACTS", str(a_file / "artifacts"))
    reason, seen = _refused(capsys, "generate", "x", "--out", str(tmp_path / "out"))
    assert reason == f"llmi: cannot make the artifact folder {a_file / 'artifacts'}: {a_file} is a file"
    assert seen == []


@pytest.mark.parametrize("value", ["-5", "-2", "100", "two"])
def test_images_takes_only_the_counts_llmi_reads(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "x", "--images", value])
    assert "argument --images: must be" in capsys.readouterr().err
    # None, any, at least one, or exactly n.
    for count in (-1, 0, 99, 1, 98):
        assert build_parser().parse_args(["generate", "x", "--images", str(count)]).image_num == count


@pytest.mark.parametrize("command", [["demo"], ["resume", "some-run"], ["eval", "items.jsonl"]])
def test_demo_resume_and_eval_check_the_output_folder_first(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMI_MODEL", "llmi-test-model")
    assert main([*command, "--out", "/proc/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmi: cannot make the output folder /proc/x"), err


NOTICE = "diffusion: dall-e-3 takes no reference images; those images are made without them"


@pytest.mark.parametrize("is_terminal", [False, True])
def test_a_notice_is_printed_once_and_plainly(is_terminal: bool) -> None:
    from rich.console import Console

    from llmi.cli.progress import SlotProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=is_terminal, width=200, color_system="standard")
    with SlotProgress(console) as progress:
        progress.event({"llmi": "notice", "text": NOTICE})
        progress.event({"llmi": "notice", "text": NOTICE, "candidate": "c2"})
        progress.event({"llmi": "notice", "text": "edit: [b]bold[/b] stays as written"})
    printed = screen.getvalue()
    assert printed.count(NOTICE) == 1
    assert "edit: [b]bold[/b] stays as written" in printed
    # Plain: neither red as a failure nor dim as a progress note.
    assert "\x1b[31m" not in printed and "\x1b[2m" + NOTICE not in printed
