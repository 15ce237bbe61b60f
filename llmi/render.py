"""Markdown and HTML renderings of an assembled document.

Model text is untrusted. Every string rendered here loses its control characters first
(``clean_text``): this is the one place all of it passes, whichever node wrote it (the
planner, a repair, the polisher, a planner of one's own) and whatever it is (the text,
descriptions, tools' errors). In Markdown, every model string we place ourselves
(descriptions, sources, errors) is collapsed to one line and backslash-escaped.
In HTML, the model's Markdown is rendered with raw HTML off and then sanitized
with nh3; figures are built afterwards from escaped strings and data: URIs, so
the sanitizer never sees (and never strips) them.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

from llmi.state import Segment

_SHOWN_ERROR_CHARS = 300
_SHOWN_TITLE_CHARS = 120
_URL_SCHEMES = ("http:", "https:", "mailto:")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
# C0 and C1 control characters and DEL, but tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Where a slot goes in the rendered body: a nonce, then its number; see _render_body.
_SLOT_MARK = re.compile(r"(?:<p>)?llmislot([0-9a-f]{16})n(\d+)(?:</p>)?")

MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
"""How llmi reads a document's Markdown: CommonMark with tables and strikethrough, raw
HTML left as text. The HTML page and the Word export both parse with it."""

_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "em", "strong", "s", "del",
    "code", "pre", "blockquote", "ul", "ol", "li", "a",
    "table", "thead", "tbody", "tr", "th", "td",
}


def _keep_safe_href(tag: str, attr: str, value: str) -> str | None:
    # ammonia passes relative URLs through; we allow absolute http(s)/mailto only.
    if attr == "href" and not value.strip().lower().startswith(_URL_SCHEMES):
        return None
    return value


_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    attribute_filter=_keep_safe_href,
    url_schemes={"http", "https", "mailto"},
)

_CSS = """
body{max-width:46rem;margin:2rem auto;padding:0 1rem;font:17px/1.6 system-ui,sans-serif;color:#222}
h1,h2,h3{line-height:1.25}
img{max-width:100%;height:auto}
figure{margin:1.5rem 0;text-align:center}
figcaption{font-size:.9em;font-style:italic;color:#555}
figure.failed{padding:.75rem 1rem;border:1px dashed #b33;background:#fff5f5;text-align:left}
pre{overflow:auto;padding:.75rem;background:#f4f4f4}
code{font-size:.9em}
blockquote{margin-left:0;padding-left:1rem;border-left:3px solid #ccc;color:#555}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25rem .5rem}
""".strip()

_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
{body}
</body>
</html>
"""


@dataclass(frozen=True)
class Figure:
    """One slot as the renderers see it: an image, or the reason there is none."""

    slot: int
    source: str
    description: str
    error: str | None = None
    asset: str | None = None
    """Path of the image file relative to the output folder (posix)."""
    data: bytes = b""
    mime: str = ""
    width: int = 0
    height: int = 0
    left_out: bool = False
    """A failed slot that the reader's document leaves out, because no backend is
    configured for its tool (see ``llmi.nodes.assembler``); the manifest keeps it."""

    @property
    def ok(self) -> bool:
        return self.error is None


def clean_text(text: str) -> str:
    """``text`` without control characters: a CR or CRLF becomes a newline, tab and
    newline stay, and every other C0 or C1 control character (NUL, ESC, BEL...) and DEL
    is removed. Models do write them, and a viewer shows each as garbage or not at all."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def markdown_document(segments: Sequence[Segment], figures: Mapping[int, Figure]) -> str:
    """The reader's document in Markdown: its text, images and failure notes, without the
    slots it leaves out."""
    return _join(reader_segments(segments, figures), lambda slot: _markdown_figure(figures[slot]))


def html_document_parts(
    prompt: str, segments: Sequence[Segment], figures: Mapping[int, Figure]
) -> list[str]:
    """The reader's document as one self-contained HTML page (no external resources, no
    scripts), without the slots it leaves out, in pieces, so a page holding megabytes of
    images is written without first being joined."""
    tokens, body = _render_body(reader_segments(segments, figures), figures)
    title = _first_heading(tokens) or _one_line(prompt)[:_SHOWN_TITLE_CHARS] or "Document"
    head, tail = _page_around(title)
    return [head, *body, tail]


def html_body(segments: Sequence[Segment], figures: Mapping[int, Figure]) -> str:
    """The document as safe HTML without the page around it: sanitized text and figures,
    every slot included, as reports show it."""
    return "".join(_render_body(segments, figures)[1])


def html_page(title: str, body: str, css: str = "") -> str:
    """A self-contained page around ``body``, which must already be safe HTML.

    ``css`` is added after the document's own style sheet.
    """
    head, tail = _page_around(title, css)
    return head + body.strip() + tail


def reader_segments(segments: Sequence[Segment], figures: Mapping[int, Figure]) -> list[Segment]:
    """The segments a reader's document shows: all but the slots it leaves out."""
    return [s for s in segments if s["kind"] != "slot" or not figures[s["slot"]].left_out]


def _page_around(title: str, css: str = "") -> tuple[str, str]:
    head, tail = _PAGE.split("{body}")
    return head.format(title=escape(_one_line(title)), css=f"{_CSS}\n{css}".strip()), tail


def _render_body(
    segments: Sequence[Segment], figures: Mapping[int, Figure]
) -> tuple[list[Token], list[str]]:
    # The nonce keeps model text from forging a placeholder.
    nonce = secrets.token_hex(8)
    tokens = MARKDOWN.parse(_join(segments, lambda slot: f"llmislot{nonce}n{slot}"))
    body = _CLEANER.clean(MARKDOWN.renderer.render(tokens, MARKDOWN.options, {})).strip()
    # Text and slot numbers alternate; each slot becomes its figure's pieces.
    pieces = _split_at_slots(body, nonce)
    parts: list[str] = []
    for index, piece in enumerate(pieces):
        parts += _html_figure(figures[int(piece)]) if index % 2 else [piece]
    return tokens, parts


def _split_at_slots(body: str, nonce: str) -> list[str]:
    """``body`` cut at the marks of ``nonce``, as ``re.split`` cuts it: text, then slot
    number and text in turn. Marks of another nonce, which model text may hold, stay text;
    one pattern for every nonce spares compiling one for each document."""
    pieces: list[str] = []
    start = 0
    for mark in _SLOT_MARK.finditer(body):
        if mark[1] == nonce:
            pieces += [body[start : mark.start()], mark[2]]
            start = mark.end()
    return [*pieces, body[start:]]


def _join(segments: Sequence[Segment], block: Callable[[int], str]) -> str:
    """Text segments as written, each slot as a block of its own."""
    parts = [
        block(segment["slot"])
        if segment["kind"] == "slot"
        else clean_text(segment["text"]).strip("\n")
        for segment in segments
    ]
    return "\n\n".join(part for part in parts if part.strip()) + "\n"


def _markdown_figure(figure: Figure) -> str:
    caption = f"*{_md_inline(figure.description)}*" if figure.description.strip() else ""
    if figure.ok:
        image = f"![{_md_inline(figure.description)}]({figure.asset})"
        return f"{image}\n{caption}".rstrip()
    note = (
        f"> **Image {figure.slot} could not be made** ({_md_inline(figure.source)}): "
        f"{_md_inline(_shown_error(figure))}"
    )
    return f"{note}\n>\n> {caption}" if caption else note


def _html_figure(figure: Figure) -> list[str]:
    """The figure's HTML in pieces: the image's base64 is one piece of its own."""
    description = _one_line(figure.description)
    caption = f"<figcaption>{escape(description)}</figcaption>" if description else ""
    if figure.ok:
        return [
            f'<figure><img src="data:{figure.mime};base64,',
            base64.b64encode(figure.data).decode("ascii"),
            f'" alt="{escape(description)}" width="{figure.width}" height="{figure.height}">'
            f"{caption}</figure>",
        ]
    reason = (
        f"<p><strong>Image {figure.slot} could not be made</strong> "
        f"({escape(_one_line(figure.source))}): {escape(_shown_error(figure))}</p>"
    )
    return [f'<figure class="failed" role="note">{reason}{caption}</figure>']


def _first_heading(tokens: Sequence[Token]) -> str:
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open":
            return _one_line(_plain_text(inline))
    return ""


def _plain_text(inline: Token) -> str:
    return "".join(
        child.content if child.type in ("text", "code_inline") else " "
        for child in inline.children or []
        if child.type in ("text", "code_inline", "softbreak", "hardbreak")
    )


def _shown_error(figure: Figure) -> str:
    error = _one_line(figure.error or "")
    if len(error) > _SHOWN_ERROR_CHARS:
        return error[: _SHOWN_ERROR_CHARS - 1] + "…"
    return error


def _one_line(text: str) -> str:
    return " ".join(clean_text(text).split())


def _md_inline(text: str) -> str:
    """Text that stays literal inside one line of Markdown."""
    return _MD_SPECIAL.sub(r"\\\1", _one_line(text))
