"""A written document as PDF and Word files, beside the Markdown and HTML the assembler wrote.

``export_document(folder, formats)`` takes the folder the assembler wrote (document.md,
document.html, manifest.json, assets/) and returns each asked-for format's file: ``md`` and
``html`` are the files already there; ``pdf`` and ``docx`` are made from them, as
``document.pdf`` and ``document.docx`` in the same folder, each written whole or not at all.

The libraries, and why:

- PDF: WeasyPrint lays out the self-contained ``document.html`` with a print style sheet
  (page size and margins, images no wider than the text, captions under their images,
  code blocks wrapped). It is a maintained HTML and CSS layout engine in pure Python (its
  text goes through Pango, a system library), so the PDF is the page a reader already
  knows, with real, searchable text; and every resource it loads passes through one
  ``url_fetcher``, which lets us refuse anything that is not a ``data:`` URL or a file
  inside the document's folder: exporting never fetches anything remote.
- Word: python-docx, the maintained library for writing .docx in pure Python. The
  document is built from ``document.md``, parsed by markdown-it as ``llmi.render`` parses
  it, so headings, lists, tables and code blocks become Word's own styles rather than
  pasted HTML.

Neither module is imported before a PDF or Word file is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llmi.errors import LlmiError, first_line

FORMATS = ("md", "html", "pdf", "docx")
MARKDOWN_FILE = "document.md"
HTML_FILE = "document.html"
# The file each format is, or is made from.
_SOURCES = {"md": MARKDOWN_FILE, "html": HTML_FILE, "pdf": HTML_FILE, "docx": MARKDOWN_FILE}


@dataclass(frozen=True)
class Paper:
    """A page size; both exports leave a margin of ``MARGIN_MM`` on every side."""

    name: str
    width_mm: float
    height_mm: float


MARGIN_MM = 20.0
PAPERS = {"a4": Paper("A4", 210.0, 297.0), "letter": Paper("letter", 215.9, 279.4)}


class ExportError(LlmiError):
    """A document that cannot be exported as asked."""


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """The format names in ``formats`` (``"pdf,docx"`` or a sequence of names), each once,
    in the order given; ExportError for an unknown or missing one."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = tuple(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown or not chosen:
        what = f"unknown format {', '.join(map(repr, unknown))}" if unknown else "no format named"
        raise ExportError(what, f"pick from {', '.join(FORMATS)}, separated by commas")
    return chosen


def export_document(
    folder: str | Path, formats: str | Iterable[str], *, paper: str = "a4"
) -> dict[str, Path]:
    """Each format's file of the document in ``folder``, in the order asked. ``pdf`` and
    ``docx`` are written there (replacing earlier exports) on ``paper``, ``a4`` or
    ``letter``; the formats and the folder are checked before anything is written."""
    chosen = parse_formats(formats)
    if paper not in PAPERS:
        raise ExportError(f"unknown paper size {paper!r}", f"pick from {', '.join(PAPERS)}")
    root = _document_folder(folder, {_SOURCES[name] for name in chosen})
    made = {"pdf": _write_pdf, "docx": _write_docx}
    return {
        name: made[name](root, PAPERS[paper]) if name in made else root / _SOURCES[name]
        for name in chosen
    }


def _document_folder(folder: str | Path, needed: set[str]) -> Path:
    root = Path(folder).expanduser().resolve()
    hint = "pass the folder `llmi generate --out` wrote (it holds document.md and document.html)"
    if not root.is_dir():
        raise ExportError(f"no document folder at {root}", hint)
    missing = sorted(name for name in needed if not (root / name).is_file())
    if missing:
        raise ExportError(f"no document in {root}: {' and '.join(missing)} missing", hint)
    return root


def document_text(root: Path, name: str) -> str:
    """The text of ``root/name``, one of the document's files."""
    try:
        return (root / name).read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"{root / name} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "export the files `llmi generate` wrote, or save yours as UTF-8",
        ) from None


def _write_pdf(root: Path, paper: Paper) -> Path:
    try:
        from llmi.export.pdf import write_pdf
    except OSError as exc:  # WeasyPrint loads Pango and its kin when imported
        raise ExportError(
            f"WeasyPrint cannot load the system libraries it makes PDFs with: "
            f"{first_line(str(exc))}",
            "install Pango: `apt-get install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b` "
            "(Debian, Ubuntu), `dnf install pango` (Fedora), `brew install pango` (macOS); "
            "WeasyPrint's installation guide lists other systems",
        ) from None
    return write_pdf(root, paper)


def _write_docx(root: Path, paper: Paper) -> Path:
    from llmi.export.word import write_docx

    return write_docx(root, paper)
