"""The assembler node: assets, Markdown, self-contained HTML, manifest."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.runtime import Runtime
from markdown_it import MarkdownIt
from helpers import html_tags
from PIL import Image

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.machine_paths import without_machine_paths
from llmi.nodes.assembler import assemble
from llmi.state import ImageRef, ImageRequest, ImageResult, Repair, failed_result
from llmi.tools.base import REFERENCES_IGNORED

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    '"><svg onload=alert(1)>',
    "]![y](http://evil.example/t.png)\n# <script>alert(2)</script>",
]
_URL_ATTRIBUTES = {"href", "src", "action", "formaction", "srcset", "poster", "data"}


def _image(store: ArtifactStore, fmt: str = "PNG", shade: int = 0) -> ImageRef:
    img = Image.new("RGB", (128, 96))
    img.putdata([(x * 2, y * 2, shade) for y in range(96) for x in range(128)])
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return store.put(buf.getvalue())


def _ok(slot: int, source: str, description: str, ref: ImageRef, attempt: int = 0) -> ImageResult:
    return ImageResult(
        slot=slot,
        source=source,
        description=description,
        ok=True,
        image=ref,
        error=None,
        tool=source,
        backend="fake",
        provenance={"query": description},
        seconds=1.5,
        attempt=attempt,
    )


def _text(text: str) -> dict[str, Any]:
    return {"kind": "text", "text": text}


def _slot(slot: int) -> dict[str, Any]:
    return {"kind": "slot", "slot": slot}


def _run(context: Context, **state: Any) -> dict[str, Path]:
    outputs = assemble(state, Runtime(context=context))["outputs"]
    return {name: Path(path) for name, path in outputs.items()}


def _assert_harmless(html: str, image_prefix: str = "data:image/") -> None:
    for tag, attrs in html_tags(html):
        assert tag not in {"script", "iframe", "object", "embed", "svg", "base", "form"}, tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in _URL_ATTRIBUTES:
                assert "javascript:" not in value.lower().replace(" ", ""), (tag, name, value)
        if tag == "img":
            assert attrs["src"].startswith(image_prefix), attrs["src"][:40]


@pytest.fixture
def store(context: Context) -> ArtifactStore:
    return ArtifactStore(context.artifact_dir)


@pytest.fixture
def mixed(store: ArtifactStore) -> dict[str, Any]:
    """A document with two images, one failed slot and one slot without a result."""
    return {
        "prompt": "Rain in Kyoto",
        "segments": [
            _text("# Rainfall in Kyoto\n\nKyoto gets rain. "),
            _slot(0),
            _text("\nIn June it pours:\n"),
            _slot(1),
            _text("\nA painting of it:\n"),
            _slot(2),
            _slot(3),
            _text("\nThe end."),
        ],
        "requests": [
            ImageRequest(
                slot=3, source="edit", description="Darker", params={}, depends_on=2, attempt=0
            )
        ],
        "results": [
            _ok(0, "code", "Monthly rainfall", _image(store)),
            failed_result(1, "search", "Photo of rain", "no images found", attempt=2),
            _ok(2, "diffusion", "Rainy temple", _image(store, "JPEG"), attempt=1),
        ],
    }


def test_manifest_records_every_slot_and_stats(context: Context, mixed: dict[str, Any]) -> None:
    outputs = _run(context, **mixed)
    manifest = json.loads(outputs["manifest"].read_text(encoding="utf-8"))

    assert set(manifest) == {"prompt", "inputs", "slots", "text", "stats"}
    assert manifest["inputs"] == []
    assert manifest["prompt"] == "Rain in Kyoto"
    assert [s["index"] for s in manifest["slots"]] == [0, 1, 2, 3]
    for entry in manifest["slots"]:
        assert set(entry) == {
            "index", "source", "description", "ok", "error", "image", "provenance", "cached",
            "seconds", "attempts", "repairs",
        }
        assert entry["cached"] is False
    chart, photo, painting, missing = manifest["slots"]
    assert chart["ok"] and chart["error"] is None and chart["attempts"] == 1
    assert chart["image"]["path"] == "assets/image-00.png"
    assert (chart["image"]["width"], chart["image"]["height"]) == (128, 96)
    assert chart["image"]["sha256"] == mixed["results"][0]["image"]["sha256"]
    assert chart["provenance"] == {"query": "Monthly rainfall"} and chart["seconds"] == 1.5
    assert painting["image"]["path"] == "assets/image-02.jpg" and painting["attempts"] == 2
    assert photo == {
        "index": 1, "source": "search", "description": "Photo of rain", "ok": False,
        "error": "no images found", "image": None, "provenance": {}, "cached": False,
        "seconds": 0.0, "attempts": 3, "repairs": [],
    }
    assert missing["ok"] is False and missing["error"] == "no result"
    assert (missing["source"], missing["description"], missing["image"]) == ("edit", "Darker", None)
    assert manifest["stats"] == {
        "code": {"total": 1, "success": 1},
        "search": {"total": 1, "success": 0},
        "diffusion": {"total": 1, "success": 1},
        "edit": {"total": 1, "success": 0},
    }
    assert manifest["text"] == (
        "# Rainfall in Kyoto\n\nKyoto gets rain. \n\n<image>\n\n\nIn June it pours:\n\n\n"
        "<fail_to_generate_image>\n\n\nA painting of it:\n\n\n<image>\n\n<fail_to_generate_image>"
        "\n\n\nThe end."
    )


def test_images_are_not_decoded_again(
    context: Context, mixed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image's type and size come from its ref, which the store made from the bytes."""

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the assembler opened an image")

    monkeypatch.setattr(Image, "open", no_decoding)
    outputs = _run(context, **mixed)
    chart, _, painting, _ = json.loads(outputs["manifest"].read_text(encoding="utf-8"))["slots"]
    assert (chart["image"]["path"], chart["image"]["width"], chart["image"]["height"]) == (
        "assets/image-00.png", 128, 96)
    assert painting["ok"] and painting["image"]["path"] == "assets/image-02.jpg"
    assert 'src="data:image/jpeg;base64,' in outputs["html"].read_text(encoding="utf-8")


def test_manifest_records_each_slots_repairs(context: Context, mixed: dict[str, Any]) -> None:
    repairs = [
        Repair(slot=1, attempt=2, kind="diffusion", failed="search: none again",
               tried="a diffusion image instead of search: 'rain'"),
        Repair(slot=1, attempt=1, kind="query", failed="search: none",
               tried="a reformulated search query: 'rain street'"),
        Repair(slot=2, attempt=1, kind="seed", failed="diffusion: blank",
               tried="diffusion again with a new seed (5)"),
    ]
    outputs = _run(context, **mixed, repairs=repairs)
    slots = json.loads(outputs["manifest"].read_text(encoding="utf-8"))["slots"]

    chart, photo, painting, missing = slots
    assert chart["repairs"] == [] and missing["repairs"] == []
    assert photo["repairs"] == [
        {"attempt": 1, "failed": "search: none",
         "tried": "a reformulated search query: 'rain street'", "worked": False},
        {"attempt": 2, "failed": "search: none again",
         "tried": "a diffusion image instead of search: 'rain'", "worked": False},
    ]
    assert painting["repairs"] == [
        {"attempt": 1, "failed": "diffusion: blank", "tried": "diffusion again with a new seed (5)",
         "worked": True},
    ]


def test_manifest_records_references_subjects_and_verdicts(
    context: Context, store: ArtifactStore
) -> None:
    mira = {"name": "Mira", "description": "a girl in a red scarf", "slots": [0, 1, 2]}
    reason = "dall-e-3 takes no reference images"
    kept = {**_ok(1, "diffusion", "Mira by the sea", _image(store, shade=1), attempt=1),
            "refs": [0], "subject": "Mira",
            "consistency": {"verdict": "different", "reason": "another face"}}
    ignored = _ok(2, "diffusion", "Mira asleep", _image(store, shade=2))
    ignored |= {"refs": [0], "subject": "Mira",
                "provenance": {"model": "dall-e-3", REFERENCES_IGNORED: reason},
                "consistency": {"verdict": "unchecked", "reason": "no answer"}}
    repairs = [Repair(slot=1, attempt=1, kind="consistency", failed="diffusion: another face",
                      tried="diffusion again with a new seed (3), from the same references")]
    outputs = _run(context, prompt="Mira", segments=[_slot(0), _slot(1), _slot(2)],
                   results=[{**_ok(0, "diffusion", "Mira", _image(store)), "subject": "Mira"},
                            kept, ignored],
                   subjects=[mira], repairs=repairs)
    manifest = json.loads(outputs["manifest"].read_text(encoding="utf-8"))

    assert manifest["subjects"] == [mira]
    first, second, third = manifest["slots"]
    assert first["subject"] == "Mira"
    assert not {"refs", "consistency", REFERENCES_IGNORED} & set(first)
    assert (second["refs"], second["subject"]) == ([0], "Mira")
    assert second["consistency"] == {"verdict": "different", "reason": "another face"}
    assert REFERENCES_IGNORED not in second
    # The repair made an image, but not one of the same subject.
    assert [r["worked"] for r in second["repairs"]] == [False]
    assert third["references_ignored"] == reason and third["refs"] == [0]
    assert third["consistency"]["verdict"] == "unchecked"
    assert third["provenance"] == {"model": "dall-e-3"}


def test_manifest_has_no_subjects_where_none_were_linked(
    context: Context, mixed: dict[str, Any]
) -> None:
    outputs = _run(context, **mixed, subjects=[])
    assert "subjects" not in json.loads(outputs["manifest"].read_text(encoding="utf-8"))


def test_outputs_are_absolute_paths_that_exist(context: Context, mixed: dict[str, Any]) -> None:
    outputs = _run(context, **mixed)

    assert set(outputs) == {"dir", "markdown", "html", "manifest"}
    assert outputs["dir"] == Path(context.out_dir).resolve()
    assert all(path.is_absolute() and path.exists() for path in outputs.values())


def test_markdown_links_existing_assets_and_notes_failures(
    context: Context, mixed: dict[str, Any]
) -> None:
    outputs = _run(context, **mixed)
    markdown = outputs["markdown"].read_text(encoding="utf-8")

    assert "![Monthly rainfall](assets/image-00.png)\n*Monthly rainfall*" in markdown
    assert "![Rainy temple](assets/image-02.jpg)" in markdown
    assert "> **Image 1 could not be made** (search): no images found" in markdown
    assert "> **Image 3 could not be made** (edit): no result" in markdown
    assert "<imgen" not in markdown and "image-01" not in markdown
    assert markdown.startswith("# Rainfall in Kyoto\n\nKyoto gets rain.")
    assert sorted(p.name for p in (outputs["dir"] / "assets").iterdir()) == [
        "image-00.png", "image-02.jpg",
    ]
    rendered = MarkdownIt("commonmark").render(markdown)
    for tag, attrs in html_tags(rendered):
        if tag == "img":
            assert (outputs["dir"] / attrs["src"]).is_file()


def test_html_is_self_contained(context: Context, mixed: dict[str, Any]) -> None:
    outputs = _run(context, **mixed)
    html = outputs["html"].read_text(encoding="utf-8")

    assert 'src="http' not in html and "href=\"http" not in html
    assert "default-src 'none'; img-src data:" in html
    assert "<title>Rainfall in Kyoto</title>" in html
    images = [attrs for tag, attrs in html_tags(html) if tag == "img"]
    assert [img["alt"] for img in images] == ["Monthly rainfall", "Rainy temple"]
    header, payload = images[0]["src"].split(",", 1)
    assert header == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(payload))) as decoded:
        assert decoded.size == (128, 96)
    failed = [attrs for tag, attrs in html_tags(html) if attrs.get("class") == "failed"]
    assert len(failed) == 2
    assert "<strong>Image 1 could not be made</strong> (search): no images found" in html


def test_title_falls_back_to_the_escaped_prompt(context: Context) -> None:
    outputs = _run(context, prompt="<b>Rain</b>\n& snow", segments=[_text("No heading.")])

    assert "<title>&lt;b&gt;Rain&lt;/b&gt; &amp; snow</title>" in outputs["html"].read_text()


def test_hostile_model_text_cannot_script_the_html(
    context: Context, store: ArtifactStore
) -> None:
    hostile = "\n\n".join(HOSTILE)
    outputs = _run(
        context,
        prompt=hostile,
        segments=[_text(hostile), _slot(0), _text(hostile), _slot(1)],
        results=[
            _ok(0, "code", hostile, _image(store)),
            failed_result(1, hostile, hostile, hostile),
        ],
    )
    html = outputs["html"].read_text(encoding="utf-8")

    _assert_harmless(html)
    assert 'src="http' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_model_text_that_mimics_a_slot_mark_stays_text(
    context: Context, store: ArtifactStore
) -> None:
    forged = "llmislot0123456789abcdef0123456789n0"
    outputs = _run(
        context,
        segments=[_text(f"{forged}\n\nSee {forged} here."), _slot(0), _text(forged)],
        results=[_ok(0, "code", "Chart", _image(store))],
    )
    html = outputs["html"].read_text(encoding="utf-8")

    assert html.count(forged) == 3
    assert html.count("<img") == 1
    assert html.index(f"See {forged} here.") < html.index("<img") < html.rindex(forged)


def test_hostile_descriptions_stay_inside_their_markdown_figure(
    context: Context, store: ArtifactStore
) -> None:
    hostile = " ".join(HOSTILE)
    outputs = _run(
        context,
        prompt="p",
        segments=[_slot(0), _slot(1)],
        results=[
            _ok(0, "code", hostile, _image(store)),
            failed_result(1, hostile, hostile, hostile),
        ],
    )
    markdown = outputs["markdown"].read_text(encoding="utf-8")
    rendered = MarkdownIt("commonmark", {"html": True}).render(markdown)

    _assert_harmless(rendered, image_prefix="assets/")
    tags = html_tags(rendered)
    assert [tag for tag, _ in tags].count("img") == 1
    assert not any(tag == "a" or tag.startswith("h") for tag, _ in tags)
    assert "<script>" not in rendered


def test_non_ascii_text_survives_everywhere(context: Context, store: ArtifactStore) -> None:
    words = "京都の雨 — Kyōto ☔"
    outputs = _run(
        context,
        prompt=words,
        segments=[_text(f"## {words}\n\n{words}"), _slot(0), _slot(1)],
        results=[
            _ok(0, "search", words, _image(store)),
            failed_result(1, "search", words, f"keine Bilder für {words}"),
        ],
    )

    for name in ("markdown", "html", "manifest"):
        assert words in outputs[name].read_text(encoding="utf-8"), name
    manifest = json.loads(outputs["manifest"].read_text(encoding="utf-8"))
    assert manifest["slots"][1]["error"] == f"keine Bilder für {words}"
    assert f"<title>{words}</title>" in outputs["html"].read_text(encoding="utf-8")


def test_missing_artifact_fails_only_its_slot(context: Context, store: ArtifactStore) -> None:
    gone = _image(store, shade=200)
    store.path(gone).unlink()
    outputs = _run(
        context,
        prompt="p",
        segments=[_text("Before."), _slot(0), _text("Between."), _slot(1), _text("After.")],
        results=[_ok(0, "search", "Gone", gone), _ok(1, "code", "Here", _image(store))],
    )
    manifest = json.loads(outputs["manifest"].read_text(encoding="utf-8"))
    markdown = outputs["markdown"].read_text(encoding="utf-8")

    assert manifest["slots"][0]["ok"] is False and manifest["slots"][0]["image"] is None
    assert "missing" in manifest["slots"][0]["error"]
    assert manifest["slots"][1]["ok"] is True
    assert manifest["text"] == "Before.\n\n<fail_to_generate_image>\n\nBetween.\n\n<image>\n\nAfter."
    assert "Image 0 could not be made" in markdown and "After." in markdown
    assert [p.name for p in (outputs["dir"] / "assets").iterdir()] == ["image-01.png"]
    assert "After." in outputs["html"].read_text(encoding="utf-8")


def test_corrupt_artifact_fails_only_its_slot(context: Context, store: ArtifactStore) -> None:
    ref = _image(store)
    store.path(ref).write_bytes(b"not an image")
    outputs = _run(context, prompt="p", segments=[_slot(0)], results=[_ok(0, "code", "C", ref)])
    manifest = json.loads(outputs["manifest"].read_text(encoding="utf-8"))

    assert manifest["slots"][0]["ok"] is False
    assert "unreadable" in manifest["slots"][0]["error"]


def test_rerun_replaces_files_and_removes_stale_assets(
    context: Context, store: ArtifactStore
) -> None:
    first = _run(
        context,
        prompt="p",
        segments=[_slot(0), _slot(1)],
        results=[_ok(0, "code", "A", _image(store)), _ok(1, "code", "B", _image(store, shade=9))],
    )
    (first["dir"] / "notes.txt").write_text("mine")
    second = _run(
        context,
        prompt="q",
        segments=[_slot(0), _slot(1)],
        results=[
            _ok(0, "diffusion", "A", _image(store, "JPEG")),
            failed_result(1, "code", "B", "boom"),
        ],
    )

    assert second == first
    assert [p.name for p in (second["dir"] / "assets").iterdir()] == ["image-00.jpg"]
    assert (second["dir"] / "notes.txt").read_text() == "mine"
    assert json.loads(second["manifest"].read_text(encoding="utf-8"))["prompt"] == "q"


def test_errors_keep_chart_frames_and_packages_but_no_path_of_the_machine(
    context: Context, tmp_path: Path
) -> None:
    home = Path.home()  # tests/conftest.py gives each test its own
    library = Path(sys.modules["markdown_it.main"].__file__)
    standard = Path(sys.modules["json.decoder"].__file__)
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "<chart>", line 3, in <module>\n'
        f'  File "{library}", line 10, in render\n'
        f'  File "{standard}", line 20, in decode\n'
        f"FileNotFoundError: [Errno 2] No such file or directory: '{home / 'sales.csv'}'"
    )
    state = {
        "prompt": "p",
        "segments": [_slot(0)],
        "results": [failed_result(0, "code", "Sales", traceback, attempt=1)],
        "repairs": [Repair(slot=0, attempt=1, kind="code", failed=traceback, tried="code")],
        "candidates": [{"id": "c0", "error": f"OSError: cannot read {tmp_path / 'cache' / 'x'}"}],
        "winner": None,
    }
    outputs = _run(context, **state)
    manifest = outputs["manifest"].read_text(encoding="utf-8")
    error = json.loads(manifest)["slots"][0]["error"]
    assert 'File "<chart>", line 3, in <module>' in error
    assert 'File "markdown_it/main.py", line 10, in render' in error
    assert 'File "json/decoder.py", line 20, in decode' in error
    assert "No such file or directory: '…/sales.csv'" in error
    assert json.loads(manifest)["slots"][0]["repairs"][0]["failed"] == error
    for name in ("manifest", "markdown", "html"):
        text = outputs[name].read_text(encoding="utf-8")
        for place in (str(tmp_path), str(home), sys.prefix, sys.base_prefix, "site-packages"):
            assert place not in text, (name, place)


@pytest.mark.parametrize("text", [
    "see https://example.com/a/b.png and http://host:8000/v1/images",
    "3/4 of the sales, and/or more",
    "./data/sales.csv and ~/data/sales.csv and data/sales.csv",
    'File "<chart>", line 3, in <module>',
    "/ alone, and /tmp alone",
])
def test_text_that_is_no_path_of_the_machine_is_left_alone(text: str) -> None:
    assert without_machine_paths(text) == text


def test_llmis_own_frames_are_named_from_its_package() -> None:
    frame = f'File "{sys.modules["llmi.nodes.assembler"].__file__}", line 5, in assemble'
    assert without_machine_paths(frame) == 'File "llmi/nodes/assembler.py", line 5, in assemble'


def test_a_slot_without_a_configured_backend_is_left_out_of_the_document(
    context: Context, store: ArtifactStore
) -> None:
    """So is an edit of its image; an edit of an image that failed otherwise keeps its note."""
    unconfigured = "no diffusion backend is configured: set LLMI_DIFFUSION=..."
    outputs = _run(
        context,
        prompt="p",
        segments=[_text("# Foxes"), _slot(0), _text("At night:"), _slot(1), _slot(2), _slot(3),
                  _slot(4)],
        requests=[
            ImageRequest(slot=1, source="edit", description="Night", params={}, depends_on=0,
                         attempt=0),
            ImageRequest(slot=4, source="edit", description="Warmer", params={}, depends_on=3,
                         attempt=0),
        ],
        results=[
            failed_result(0, "diffusion", "Snow fox", unconfigured, failure="config",
                          infrastructure=True),
            failed_result(1, "edit", "Night", f"the image it edits (index 0) failed: {unconfigured}",
                          failure="source_failed", infrastructure=True),
            _ok(2, "code", "Chart", _image(store)),
            failed_result(3, "search", "Photo", "no images found", failure="no_result"),
            failed_result(4, "edit", "Warmer", "the image it edits (index 3) failed: no images "
                          "found", failure="source_failed"),
        ],
    )
    markdown = outputs["markdown"].read_text(encoding="utf-8")
    html = outputs["html"].read_text(encoding="utf-8")
    manifest = json.loads(outputs["manifest"].read_text(encoding="utf-8"))

    for document in (markdown, html):
        assert "Snow fox" not in document and "Night" not in document
        assert "LLMI_DIFFUSION" not in document and "At night:" in document
        assert "Image 0 could not be made" not in document
        assert "Image 1 could not be made" not in document
        assert "Image 3 could not be made" in document and "Image 4 could not be made" in document
    assert markdown.startswith("# Foxes\n\nAt night:\n\n![Chart](assets/image-02.png)\n*Chart*\n\n")
    assert [attrs.get("class") for tag, attrs in html_tags(html) if tag == "figure"] == [
        None, "failed", "failed"]
    snow, night = manifest["slots"][:2]
    assert (snow["ok"], snow["error"], snow["source"]) == (False, unconfigured, "diffusion")
    assert (night["ok"], night["source"]) == (False, "edit") and unconfigured in night["error"]
    assert manifest["stats"]["diffusion"] == {"total": 1, "success": 0}
    assert manifest["text"].startswith("# Foxes\n\n<fail_to_generate_image>\n\nAt night:")
