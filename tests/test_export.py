"""PDF and Word exports of a document the graph wrote, read back with pypdf and python-docx."""

from __future__ import annotations

import argparse
import logging
import math
import subprocess
import sys
from pathlib import Path

import docx
import pytest
from docx.shared import Mm
from pypdf import PdfReader
from pypdf.generic import ContentStream

from llmi.cli.export import add_export_parser, export_command
from llmi.context import Context
from llmi.export import ExportError, export_document
from llmi.graphs.document import build_graph
from llmi.tools.base import ToolCall, ToolError

from helpers import FakeTool, fake_tools, gradient_png, model, tag
from http_standins import png, serve, standin_server


def _weasyprint_loads() -> bool:
    try:
        import llmi.export.pdf  # noqa: F401 - WeasyPrint, as llmi imports it
    except OSError:
        return False
    return True


needs_pango = pytest.mark.skipif(not _weasyprint_loads(), reason="WeasyPrint cannot load Pango")

IMAGE_SIZE = (96, 80)
DRAFT = "\n".join([
    "# Kyoto in spring",
    "",
    "Kyoto is **lovely** in *early April*; see [the city's guide](https://example.com/kyoto).",
    "",
    "## Three days",
    "",
    "- Temples in the east",
    "- Gardens in the west",
    "",
    "1. Pack light",
    "2. Buy a bus pass",
    "",
    "| Day | Place |",
    "|---|---|",
    "| One | Ginkaku-ji |",
    "| Two | Arashiyama |",
    "",
    "```python",
    "print('sakura')",
    "```",
    "",
    tag("diffusion", "A fox under cherry blossoms", prompt="fox"),
    "The blossoms last a week.",
    tag("code", "Visitors by month", code="plt.bar([1], [2])"),
    tag("search", "The Philosopher's Path", query="philosopher's path"),
    "Come back in autumn.",
])
HEADINGS = ["Kyoto in spring", "Three days"]
CAPTIONS = ["A fox under cherry blossoms", "Visitors by month"]
FAILED_NOTE = "Image 2 could not be made"


def _no_photo(call: ToolCall) -> None:
    raise ToolError("no such photo")


def write_document(context: Context, make=None) -> Path:
    """A document the graph wrote: two images made, one slot failed."""
    made = make or (lambda call: gradient_png(call.request["slot"], IMAGE_SIZE))
    tools = fake_tools(
        search=FakeTool("search", ("query",), behaviour=_no_photo),
        diffusion=FakeTool("diffusion", ("prompt",), make=made),
        code=FakeTool("code", ("code",), make=made),
    )
    graph = build_graph(model=model(DRAFT), tools=tools).compile()
    out = graph.invoke({"prompt": "p", "images": []}, context=context)
    return Path(out["outputs"]["dir"])


def pdf_image_count(path: Path) -> int:
    """Image XObjects in the PDF, each counted once however many pages share it."""
    seen = set()
    for page in PdfReader(path).pages:
        objects = page["/Resources"].get_object().get("/XObject") or {}
        for ref in objects.get_object().values():
            if ref.get_object()["/Subtype"] == "/Image":
                seen.add(ref.idnum)
    return len(seen)


def pdf_image_sizes(path: Path) -> list[tuple[float, float]]:
    """Each drawn image's width and height in points, from the pages' transformation
    matrices as the PDF reference defines them (q, Q, cm; an image fills the unit square)."""
    sizes = []
    for page in PdfReader(path).pages:
        matrix, saved = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0], []
        for operands, operator in ContentStream(page.get_contents(), page.pdf).operations:
            if operator == b"q":
                saved.append(matrix)
            elif operator == b"Q":
                matrix = saved.pop()
            elif operator == b"cm":
                matrix = _times([float(x) for x in operands], matrix)
            elif operator == b"Do":
                a, b, c, d = matrix[:4]
                sizes.append((round(math.hypot(a, b), 1), round(math.hypot(c, d), 1)))
    return sizes


def _times(m: list[float], n: list[float]) -> list[float]:
    """The product m x n of two PDF matrices [a b c d e f]."""
    return [m[0] * n[0] + m[1] * n[2], m[0] * n[1] + m[1] * n[3],
            m[2] * n[0] + m[3] * n[2], m[2] * n[1] + m[3] * n[3],
            m[4] * n[0] + m[5] * n[2] + n[4], m[4] * n[1] + m[5] * n[3] + n[5]]


def pdf_text(path: Path) -> str:
    return " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(path).pages)


@needs_pango
def test_pdf_keeps_the_text_the_images_and_the_failed_slots_note(context: Context) -> None:
    folder = write_document(context)
    paths = export_document(folder, "pdf")
    assert paths == {"pdf": folder / "document.pdf"}
    text = pdf_text(paths["pdf"])
    for words in [*HEADINGS, "Kyoto is lovely in early April; see the city's guide.",
                  "Temples in the east", "Buy a bus pass", "Ginkaku-ji", "print('sakura')",
                  *CAPTIONS, FAILED_NOTE, "no such photo", "Come back in autumn."]:
        assert words in text, words
    assert pdf_image_count(paths["pdf"]) == 2
    # Never larger than the image itself: 96 CSS pixels are 72 points.
    assert pdf_image_sizes(paths["pdf"]) == [(72.0, 60.0)] * 2
    page = PdfReader(paths["pdf"]).pages[0]
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (595, 842)


@needs_pango
def test_pdf_on_letter_paper(context: Context) -> None:
    folder = write_document(context)
    page = PdfReader(export_document(folder, ["pdf"], paper="letter")["pdf"]).pages[0]
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (612, 792)


def test_word_keeps_headings_lists_tables_code_images_and_captions(context: Context) -> None:
    folder = write_document(context)
    path = export_document(folder, "docx")["docx"]
    assert path == folder / "document.docx"
    word = docx.Document(str(path))
    by_style: dict[str, list[str]] = {}
    for paragraph in word.paragraphs:
        by_style.setdefault(paragraph.style.name, []).append(paragraph.text)
    assert by_style["Heading 1"] == HEADINGS[:1] and by_style["Heading 2"] == HEADINGS[1:]
    assert by_style["List Bullet"] == ["Temples in the east", "Gardens in the west"]
    assert by_style["List Number"] == ["Pack light", "Buy a bus pass"]
    assert by_style["Code"] == ["print('sakura')"]
    assert word.styles["Code"].font.name == "Courier New"
    assert by_style["Caption"] == CAPTIONS
    normal = by_style["Normal"]
    assert "Kyoto is lovely in early April; see the city's guide." in normal
    assert any(text.startswith(f"{FAILED_NOTE} (search): no such photo") for text in normal)
    assert "The Philosopher's Path" in normal and "Come back in autumn." in normal
    [table] = word.tables
    assert [[cell.text for cell in row.cells] for row in table.rows] == [
        ["Day", "Place"], ["One", "Ginkaku-ji"], ["Two", "Arashiyama"]]
    assert all(run.bold for run in table.rows[0].cells[0].paragraphs[0].runs)
    [link] = [link for paragraph in word.paragraphs for link in paragraph.hyperlinks]
    assert (link.address, link.text) == ("https://example.com/kyoto", "the city's guide")
    # Never larger than the image itself: 96 pixels are one inch.
    assert [(shape.width.inches, shape.height.inches) for shape in word.inline_shapes] == [
        (1.0, 80 / 96)] * 2
    assert word.core_properties.title == "Kyoto in spring"


def test_a_large_image_fits_the_text_width_in_word(context: Context) -> None:
    def wide(call: ToolCall) -> bytes:
        return gradient_png(call.request["slot"], (2400, 600))

    folder = write_document(context, make=wide)
    word = docx.Document(str(export_document(folder, "docx")["docx"]))
    text_width = Mm(210 - 2 * 20)
    for shape in word.inline_shapes:
        assert abs(shape.width - text_width) <= 1
        assert abs(shape.height / shape.width - 600 / 2400) < 1e-3


@needs_pango
def test_large_images_fit_the_text_width_and_the_page_in_the_pdf(context: Context) -> None:
    def large(call: ToolCall) -> bytes:
        slot = call.request["slot"]
        return gradient_png(slot, (2400, 600) if slot else (300, 3000))

    folder = write_document(context, make=large)
    text_width, text_height = (210 - 2 * 20) / 25.4 * 72, (297 - 2 * 20) / 25.4 * 72
    [(tall_width, tall_height), (wide_width, wide_height)] = pdf_image_sizes(
        export_document(folder, "pdf")["pdf"])
    assert abs(wide_width - text_width) < 0.5 and abs(wide_height * 4 - wide_width) < 0.5
    assert tall_height < text_height and abs(tall_height - tall_width * 10) < 0.5


def test_numbered_lists_each_count_from_their_own_start(tmp_path: Path) -> None:
    (tmp_path / "document.md").write_text("3. three\n4. four\n\nBetween.\n\n1. one\n2. two\n")
    word = docx.Document(str(export_document(tmp_path, "docx")["docx"]))
    numbered = [p for p in word.paragraphs if p.style.name == "List Number"]
    ids = [p._p.pPr.numPr.numId.val for p in numbered]
    assert ids[0] == ids[1] != ids[2] == ids[3]
    numbering = word.part.numbering_part.element
    starts = [numbering.num_having_numId(i).xpath("./w:lvlOverride/w:startOverride/@w:val")
              for i in (ids[0], ids[2])]
    assert starts == [["3"], ["1"]]


@needs_pango
def test_exports_fetch_nothing_remote_nor_any_file_outside_the_folder(
    context: Context, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    folder = write_document(context)
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(40, 30))
    routes = {path: serve(png(40, 30)) for path in ("/x.png", "/y.png", "/z.png")}
    routes["/style.css"] = serve(b"body { color: red }", "text/css")
    with standin_server(routes) as server:
        remote = (f'<img src="{server.url("/x.png")}" alt="remote">'
                  f'<link rel="stylesheet" href="{server.url("/style.css")}">'
                  f'<style>@import url("{server.url("/style.css")}"); '
                  f'p {{ background: url("{server.url("/z.png")}") }}</style>'
                  f'<img src="../{outside.name}"><img src="{outside.as_uri()}">')
        html = folder / "document.html"
        html.write_text(html.read_text().replace("<body>", "<body>" + remote))
        markdown = folder / "document.md"
        markdown.write_text(f"![remote]({server.url('/y.png')})\n\n"
                            f"![outside](../{outside.name})\n\n{markdown.read_text()}")
        with caplog.at_level(logging.WARNING, logger="llmi.export"):
            paths = export_document(folder, "pdf,docx")
        assert server.seen == []
        # The stand-in answers whoever asks: WeasyPrint's own fetcher would have.
        import weasyprint

        weasyprint.HTML(string=f'<img src="{server.url("/x.png")}">').write_pdf()
        assert [hit["path"] for hit in server.seen] == ["/x.png"]
    assert pdf_image_count(paths["pdf"]) == 2
    assert len(docx.Document(str(paths["docx"])).inline_shapes) == 2
    said = caplog.text
    for left_out in ("/x.png", "/y.png", "/z.png", "/style.css", outside.as_uri()):
        assert left_out in said, left_out


def test_md_and_html_are_the_files_already_there(context: Context) -> None:
    folder = write_document(context)
    paths = export_document(folder, "html,md")
    assert paths == {"html": folder / "document.html", "md": folder / "document.md"}
    assert not (folder / "document.pdf").exists() and not (folder / "document.docx").exists()


def test_an_unknown_format_is_a_clear_error(context: Context) -> None:
    folder = write_document(context)
    with pytest.raises(ExportError) as caught:
        export_document(folder, "pdf,odt")
    assert caught.value.reason == "unknown format 'odt'"
    assert "md, html, pdf, docx" in caught.value.hint
    assert not (folder / "document.pdf").exists()


@pytest.mark.parametrize("made", [False, True], ids=["no-folder", "empty-folder"])
def test_a_folder_without_a_document_is_a_clear_error(tmp_path: Path, made: bool) -> None:
    folder = tmp_path / "nothing"
    if made:
        folder.mkdir()
    with pytest.raises(ExportError) as caught:
        export_document(folder, "pdf,docx")
    assert str(folder) in caught.value.reason and "no document" in caught.value.reason
    assert "llmi generate --out" in caught.value.hint


def test_an_unreadable_image_leaves_a_note_and_the_rest(context: Context) -> None:
    folder = write_document(context)
    (folder / "assets" / "image-00.png").write_bytes(b"not a png")
    word = docx.Document(str(export_document(folder, "docx")["docx"]))
    assert len(word.inline_shapes) == 1
    texts = [paragraph.text for paragraph in word.paragraphs]
    assert "[assets/image-00.png is not a readable image]" in texts
    assert "Come back in autumn." in texts


def test_a_document_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "document.md").write_bytes("Caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(ExportError) as caught:
        export_document(tmp_path, "docx")
    assert "document.md is not UTF-8 text" in caught.value.reason
    assert not (tmp_path / "document.docx").exists()


def test_exports_replace_earlier_ones_and_leave_no_temporary_file(context: Context) -> None:
    folder = write_document(context)
    (folder / "document.docx").write_bytes(b"an old export")
    export_document(folder, "docx")
    assert docx.Document(str(folder / "document.docx")).paragraphs
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_without_pango_the_error_says_what_to_install(
    context: Context, monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Unloadable:
        """WeasyPrint as it imports where Pango is missing: cffi's dlopen raises OSError."""

        def __getattr__(self, name: str) -> object:
            raise OSError("cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot "
                          "open shared object file: No such file or directory")

    folder = write_document(context)
    monkeypatch.delitem(sys.modules, "llmi.export.pdf", raising=False)
    monkeypatch.setitem(sys.modules, "weasyprint", Unloadable())
    with pytest.raises(ExportError) as caught:
        export_document(folder, "pdf")
    assert "libpango-1.0-0" in caught.value.reason
    assert "apt-get install libpango-1.0-0" in caught.value.hint
    assert not (folder / "document.pdf").exists()


def _export_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmi")
    add_export_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export", *argv])


def test_export_command_prints_each_file(context: Context, capsys: pytest.CaptureFixture) -> None:
    folder = write_document(context)
    assert export_command(_export_args(str(folder), "--format", "docx,md"), console=None) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(folder / "document.docx"), str(folder / "document.md")]


def test_export_command_defaults_and_argument_errors(capsys: pytest.CaptureFixture) -> None:
    args = _export_args("somewhere")
    assert (args.dir, args.format, args.paper) == ("somewhere", ("pdf", "docx"), "a4")
    with pytest.raises(SystemExit) as exited:
        _export_args("somewhere", "--format", "pdf,epub")
    assert exited.value.code == 2
    assert "argument --format: unknown format 'epub'" in capsys.readouterr().err


def test_exporting_a_pdf_leaves_pillow_refusing_truncated_images() -> None:
    pytest.importorskip("weasyprint")
    # A fresh interpreter: importing WeasyPrint elsewhere in the tests changes the setting.
    code = ("import llmi.export.pdf; from PIL import ImageFile; "
            "print(ImageFile.LOAD_TRUNCATED_IMAGES)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"
