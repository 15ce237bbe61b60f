"""The offline demo's library of shipped photographs and its run; tools without a backend
are told once on the terminal and left out of the reader's document."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from llmi.cli import commands, demo, main
from llmi.cli.demo import PROMPT, demo_context
from llmi.cli.demo_library import PHOTOGRAPHS, Photograph, library_folder, prepare_library
from llmi.errors import LlmiError
from llmi.tools.library import ImageLibrary

from helpers import tag
from openai_standin import chat_server

HOPPER = "grace_hopper.jpg"


def test_the_library_holds_the_shipped_photograph_with_its_caption(tmp_path: Path) -> None:
    folder = tmp_path / "library"

    assert prepare_library(folder) == [HOPPER]

    sidecar = json.loads((folder / "grace_hopper.json").read_text(encoding="utf-8"))
    assert sidecar["title"] == "Grace Hopper" and "public domain" in sidecar["caption"]
    [match] = ImageLibrary(folder, cache_dir=tmp_path / "index").search("Grace Hopper portrait")
    assert match.path == HOPPER and "U.S. Navy" in match.caption
    assert (folder / HOPPER).read_bytes()[:3] == b"\xff\xd8\xff"  # the JPEG as shipped


def test_preparing_again_leaves_the_files_as_they_were(tmp_path: Path) -> None:
    """Unchanged files keep their times, so the library's index and the tool cache hold."""
    folder = tmp_path / "library"
    prepare_library(folder)
    before = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}

    prepare_library(folder)

    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == before


def test_a_photograph_that_is_not_shipped_is_left_out(tmp_path: Path) -> None:
    missing = (
        Photograph(package="matplotlib", path="mpl-data/sample_data/no-such-photo.jpg",
                   title="t", caption="c", tags=()),
        Photograph(package="llmi_no_such_package", path="photo.jpg", title="t", caption="c",
                   tags=()),
    )

    assert prepare_library(tmp_path / "library", (*missing, *PHOTOGRAPHS)) == [HOPPER]
    assert sorted(p.name for p in (tmp_path / "library").iterdir()) == [HOPPER, "grace_hopper.json"]


def test_a_library_folder_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")

    with pytest.raises(LlmiError) as caught:
        prepare_library(tmp_path / "a-file" / "library")

    assert caught.value.reason.startswith("cannot write the demo's photo library at ")
    assert "XDG_CACHE_HOME" in caught.value.hint


def test_the_demo_context_searches_its_library_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMI_SEARCH", "tavily")
    monkeypatch.setenv("TAVILY_API_KEY", "tvly-not-used")

    ctx = demo_context(str(tmp_path / "out"))

    assert (ctx.search_backend, ctx.image_library) == ("library", str(library_folder()))
    assert ctx.code_sandbox == "process" and ctx.out_dir == str(tmp_path / "out")
    assert (library_folder() / HOPPER).is_file()


def test_without_a_shipped_photograph_the_demo_has_no_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "prepare_library", lambda folder: [])

    ctx = demo_context(str(tmp_path / "out"))

    assert (ctx.search_backend, ctx.image_library) == ("library", "")


def test_the_demo_shows_search_charts_and_a_repair_without_an_error_box(tmp_path: Path) -> None:
    """The run as ``llmi demo`` starts it: recorded replies, the demo's context."""
    out = tmp_path / "demo"
    said = io.StringIO()

    code = commands._run({"prompt": PROMPT}, demo_context(str(out)), Console(file=said, width=200),
                         model="recorded")

    assert code == 0, said.getvalue()
    html = (out / "document.html").read_text(encoding="utf-8")
    assert 'class="failed"' not in html and "could not be made" not in html
    assert html.count('<img src="data:image/') == 3
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stats"] == {"search": {"total": 1, "success": 1},
                                 "code": {"total": 2, "success": 2}}
    photo, repaired, timeline = manifest["slots"]
    assert photo["provenance"]["path"] == HOPPER and "public domain" in photo["provenance"]["caption"]
    assert photo["image"]["width"] == 512
    assert repaired["attempts"] == 2 and repaired["repairs"][-1]["worked"]
    assert "colour" in repaired["repairs"][0]["failed"]
    assert timeline["ok"] and timeline["attempts"] == 1
    assert "left out of the document" not in said.getvalue()


def test_a_tool_without_a_backend_is_told_once_and_left_out_of_the_document(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-library"
    empty.mkdir()
    draft = "\n\n".join([
        "# Foxes",
        "In the snow:", tag("diffusion", "A red fox in deep snow", prompt="a red fox, snow"),
        "The same fox at night.", tag("edit", "The fox at night", img_index=0, prompt="night"),
        "Another fox.", tag("diffusion", "A fox asleep", prompt="a sleeping fox"),
        "A real one.", tag("search", "A photo of a fox", query="red fox photo"),
        "Counted:", tag("code", "Foxes by year", code="plt.bar(['2023', '2024'], [3, 5])"),
    ])
    with chat_server(draft) as (url, _):
        monkeypatch.setenv("LLMI_MODEL", "llmi-test-model")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("LLMI_IMAGE_LIBRARY", str(empty))
        code = main(["generate", "Foxes", "--out", str(tmp_path / "out")])

    assert code == 0
    said = capsys.readouterr().err
    told = [line for line in said.splitlines() if "left out of the document" in line]
    assert told == ["diffusion images are left out of the document: no diffusion backend is "
                    "configured: set LLMI_DIFFUSION=diffusers:<text-to-image model id or path> "
                    "for a local pipeline, or LLMI_DIFFUSION=openai:<model> for an "
                    "OpenAI-compatible images API"], said
    markdown = (tmp_path / "out" / "document.md").read_text(encoding="utf-8")
    html = (tmp_path / "out" / "document.html").read_text(encoding="utf-8")
    for document in (markdown, html):
        assert "A red fox in deep snow" not in document and "A fox asleep" not in document
        assert "The fox at night" not in document and "In the snow:" in document
        assert "LLMI_DIFFUSION" not in document
        # A search that found nothing is no missing backend: its note stays.
        assert "Image 3 could not be made" in document and "Foxes by year" in document
    assert html.count('class="failed"') == 1
    slots = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["slots"]
    snow, night, asleep, photo, chart = slots
    assert not snow["ok"] and "LLMI_DIFFUSION" in snow["error"]
    assert not asleep["ok"] and "LLMI_DIFFUSION" in asleep["error"]
    assert not night["ok"] and night["error"].startswith("the image it edits (index 0) failed")
    assert not photo["ok"] and "no image in the library" in photo["error"]
    assert chart["ok"]
