"""``document.pdf``: the self-contained ``document.html`` laid out for print by WeasyPrint.

Every resource WeasyPrint loads (images, style sheets, fonts, objects) is asked of the
document's ``url_fetcher`` (WeasyPrint's "URL Fetchers" documentation); ours answers only
``data:`` URLs and files inside the document's folder. A remote URL, or a file elsewhere, is
refused without being opened: WeasyPrint then leaves that resource out, as it does any it
cannot load, and the rest of the page is laid out as usual.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from PIL import ImageFile

# WeasyPrint's import lets Pillow load truncated images, for every image of the process;
# llmi's checks refuse them (``llmi.artifacts.inspect_image``), so the setting is put back.
_TRUNCATED = ImageFile.LOAD_TRUNCATED_IMAGES
from weasyprint import CSS, HTML  # noqa: E402
from weasyprint.urls import URLFetcher, URLFetcherResponse  # noqa: E402

ImageFile.LOAD_TRUNCATED_IMAGES = _TRUNCATED

from llmi.artifacts import OUTPUT_MODE, atomic_file
from llmi.export import HTML_FILE, MARGIN_MM, Paper, document_text
from llmi.export.local import local_file, refused

PDF_FILE = "document.pdf"

# A user style sheet, so its declarations are !important to win over the page's own: the
# screen layout's column, padding and scrolling code give way to the page and wrapped lines.
_PRINT_CSS = """
@page {{ size: {size}; margin: {margin}mm }}
body {{ max-width: none !important; margin: 0 !important; padding: 0 !important;
        font-size: 11pt !important }}
img {{ width: auto !important; height: auto !important; max-width: 100% !important;
       max-height: {max_height}mm !important }}
figure {{ margin: 1em 0 !important; break-inside: avoid }}
figcaption {{ margin-top: .4em }}
pre {{ overflow: visible !important; white-space: pre-wrap !important;
       overflow-wrap: anywhere !important; font-size: 9pt !important }}
table {{ max-width: 100% }}
td, th {{ overflow-wrap: anywhere }}
h1, h2, h3, h4, h5, h6 {{ break-after: avoid }}
"""


class FolderFetcher(URLFetcher):
    """WeasyPrint's fetcher, for ``data:`` URLs and the files inside ``root`` only."""

    def __init__(self, root: Path) -> None:
        super().__init__(allowed_protocols={"data"}, allow_redirects=False)
        self.root = root

    def fetch(self, url: str, headers: dict[str, str] | None = None) -> URLFetcherResponse:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "data":
            return super().fetch(url, headers)
        path = local_file(self.root, Path(url2pathname(parts.path))) if (
            scheme == "file" and parts.netloc in ("", "localhost")) else None
        if path is None:
            refused(PDF_FILE, url, self.root)
            raise ValueError(f"not fetched: {url[:200]}")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return URLFetcherResponse(path.as_uri(), path.read_bytes(), {"Content-Type": kind})


def write_pdf(root: Path, paper: Paper) -> Path:
    """Write ``root/document.pdf`` from ``root/document.html`` on ``paper``."""
    target = root / PDF_FILE
    fetcher = FolderFetcher(root)
    page = HTML(string=document_text(root, HTML_FILE), base_url=root.as_uri() + "/",
                url_fetcher=fetcher)
    # Images keep their proportions, and none is taller than most of a page.
    usable_height = paper.height_mm - 2 * MARGIN_MM
    css = _PRINT_CSS.format(size=paper.name, margin=MARGIN_MM, max_height=0.85 * usable_height)
    with atomic_file(target, mode=OUTPUT_MODE) as file:
        page.write_pdf(file, stylesheets=[CSS(string=css, url_fetcher=fetcher)])
    return target
