"""``llmi export DIR --format pdf,docx``: a written document as PDF and Word files.

Its arguments import nothing heavy: WeasyPrint and python-docx load only when a PDF or Word
file is made (``llmi.export``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from llmi.export import FORMATS, PAPERS, ExportError, export_document, parse_formats

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_FORMATS = "pdf,docx"


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """The ``export`` command's arguments, among ``commands``."""
    export = commands.add_parser(
        "export", help="write a document's PDF and Word files",
        description="Write document.pdf and document.docx beside the document.md and "
        "document.html that `llmi generate` wrote into DIR, and print each asked-for file's "
        "path. Nothing remote is fetched: the only images used are the document's own.",
    )
    export.add_argument("dir", metavar="DIR", help="the folder `llmi generate --out` wrote")
    export.add_argument("--format", type=formats_argument, default=DEFAULT_FORMATS,
                        metavar="FORMATS", help=f"comma-separated, from {', '.join(FORMATS)} "
                        f"(default: {DEFAULT_FORMATS})")
    export.add_argument("--paper", choices=list(PAPERS), default="a4",
                        help="page size of the PDF and Word files (default: a4)")


def formats_argument(text: str) -> tuple[str, ...]:
    """``--format``'s value as format names; an unknown one is an argument error."""
    try:
        return parse_formats(text)
    except ExportError as exc:
        raise argparse.ArgumentTypeError(f"{exc.reason}: {exc.hint}") from None


def export_command(args: argparse.Namespace, console: Console) -> int:
    """Export the document in ``args.dir``; print each file's path on stdout."""
    for path in export_document(args.dir, args.format, paper=args.paper).values():
        print(path)
    return 0
