"""``document.docx``: ``document.md`` as a Word document, built with python-docx.

The Markdown is parsed by markdown-it with the options ``llmi.render`` uses, and each block
becomes Word's own: headings in the Heading styles, lists in List Bullet and List Number
(each numbered list counting from its own start), tables in Table Grid with a bold header
row, code blocks in a monospace Code style, bold, italic, struck and inline code as run
formatting, http(s) and mailto links as hyperlinks. A paragraph that opens with one of the
document's images is a figure: the picture, as wide as the text at most and never wider
than the image itself (one image pixel is one CSS pixel, as the HTML shows it), then its
caption in the Caption style. A failed slot's note is a quoted block, which is indented
text here. Images from anywhere but the document's folder are left out, as the HTML leaves
out images the model wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from docx import Document
from docx.document import Document as WordDocument
from docx.enum.style import WD_STYLE_TYPE
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.image.exceptions import UnrecognizedImageError
from docx.image.image import Image
from docx.opc.constants import RELATIONSHIP_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Emu, Mm, Pt, RGBColor
from docx.text.paragraph import Paragraph
from markdown_it.tree import SyntaxTreeNode

from llmi.artifacts import OUTPUT_MODE, atomic_file
from llmi.export import MARGIN_MM, MARKDOWN_FILE, Paper, document_text
from llmi.export.local import local_file, refused
from llmi.render import MARKDOWN, clean_text

DOCX_FILE = "document.docx"
CODE_STYLE = "Code"
_LINK_SCHEMES = ("http", "https", "mailto")
_EMU_PER_CSS_PIXEL = 914400 // 96
_MONOSPACE = "Courier New"
_LINK_BLUE = RGBColor(0x05, 0x63, 0xC1)
_INDENT = Mm(10)
# Word's built-in list styles go three levels deep; deeper items take the third.
_LIST_LEVELS = 3
_MAX_PICTURE_SHARE_OF_PAGE = 0.85


@dataclass(frozen=True)
class _Format:
    """How a run of text is set."""

    bold: bool = False
    italic: bool = False
    strike: bool = False
    code: bool = False


@dataclass(frozen=True)
class _Where:
    """The block a paragraph belongs to: a list (kind and depth), a quote."""

    list_kind: str = ""
    depth: int = 0
    quoted: bool = False
    first_in_item: bool = False
    number_id: int | None = None


def write_docx(root: Path, paper: Paper) -> Path:
    """Write ``root/document.docx`` from ``root/document.md`` on ``paper``."""
    target = root / DOCX_FILE
    tree = SyntaxTreeNode(MARKDOWN.parse(document_text(root, MARKDOWN_FILE)))
    word = _Word(root, paper)
    word.blocks(tree.children, _Where())
    with atomic_file(target, mode=OUTPUT_MODE) as file:
        word.document.save(file)
    return target


class _Word:
    """A Word document being written, block by block."""

    def __init__(self, root: Path, paper: Paper) -> None:
        self.root = root
        self.document: WordDocument = Document()
        section = self.document.sections[0]
        section.page_width, section.page_height = Mm(paper.width_mm), Mm(paper.height_mm)
        for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
            setattr(section, side, Mm(MARGIN_MM))
        self.text_width = Mm(paper.width_mm - 2 * MARGIN_MM)
        self.picture_height = Mm((paper.height_mm - 2 * MARGIN_MM) * _MAX_PICTURE_SHARE_OF_PAGE)
        _add_code_style(self.document)
        properties = self.document.core_properties
        properties.author, properties.comments = "llmi", ""

    def blocks(self, nodes: Iterable[SyntaxTreeNode], where: _Where) -> None:
        for node in nodes:
            self.block(node, where)
            where = replace(where, first_in_item=False)

    def block(self, node: SyntaxTreeNode, where: _Where) -> None:
        kind = node.type
        if kind == "heading":
            paragraph = self.document.add_paragraph(style=f"Heading {int(node.tag[1:])}")
            self.inline(paragraph, node.children[0])
            if not self.document.core_properties.title:
                self.document.core_properties.title = _plain(node)[:255]
        elif kind == "paragraph":
            self.paragraph(node, where)
        elif kind in ("bullet_list", "ordered_list"):
            self.list(node, where)
        elif kind == "blockquote":
            self.blocks(node.children, replace(where, quoted=True))
        elif kind in ("fence", "code_block"):
            paragraph = self.document.add_paragraph(style=CODE_STYLE)
            paragraph.add_run(clean_text(node.content).rstrip("\n"))
            self.indent(paragraph, where)
        elif kind == "table":
            self.table(node)
        elif kind == "hr":
            _bottom_border(self.document.add_paragraph())

    def paragraph(self, node: SyntaxTreeNode, where: _Where) -> None:
        inline = node.children[0]
        first = inline.children[0] if inline.children else None
        picture = self.picture_file(first) if first is not None and first.type == "image" else None
        if picture is not None:
            self.figure(picture, inline.children[1:], where)
            return
        paragraph = self.document.add_paragraph()
        self.inline(paragraph, inline)
        self.place(paragraph, where)

    def place(self, paragraph: Paragraph, where: _Where) -> None:
        """Give a text paragraph its list style and numbering, and its quote's indent."""
        if not where.list_kind:
            self.indent(paragraph, where)
            return
        suffix = _level_suffix(where.depth)
        if where.first_in_item:
            paragraph.style = self.document.styles[f"List {where.list_kind}{suffix}"]
            if where.number_id is not None:
                _number_with(paragraph, where.number_id)
        else:
            paragraph.style = self.document.styles[f"List Continue{suffix}"]
        if where.quoted:
            paragraph.paragraph_format.left_indent = _INDENT * (where.depth + 1)

    def indent(self, paragraph: Paragraph, where: _Where) -> None:
        """Indent a code block or figure as deep as the list or quote it is in."""
        depth = where.depth + where.quoted
        if depth:
            paragraph.paragraph_format.left_indent = _INDENT * depth

    def list(self, node: SyntaxTreeNode, where: _Where) -> None:
        ordered = node.type == "ordered_list"
        kind = "Number" if ordered else "Bullet"
        depth = where.depth + 1
        number_id = None
        if ordered:
            number_id = _restarted_numbering(self.document, f"List Number{_level_suffix(depth)}",
                                             int(node.attrs.get("start", 1)))
        inner = replace(where, list_kind=kind, depth=depth, number_id=number_id)
        for item in node.children:
            self.blocks(item.children, replace(inner, first_in_item=True))

    def table(self, node: SyntaxTreeNode) -> None:
        rows = [row for section in node.children for row in section.children]
        columns = max(len(row.children) for row in rows)
        table = self.document.add_table(rows=len(rows), cols=columns, style="Table Grid")
        for row, cells in zip(table.rows, rows):
            for cell, content in zip(row.cells, cells.children):
                for inline in content.children:
                    self.inline(cell.paragraphs[0], inline, _Format(bold=content.type == "th"))
        self.document.add_paragraph()  # Word runs a table into the next one without it

    def figure(self, picture: Path, caption: list[SyntaxTreeNode], where: _Where) -> None:
        paragraph = self.document.add_paragraph()
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
        self.indent(paragraph, where)
        try:
            width, height = self.picture_size(picture)
            paragraph.add_run().add_picture(str(picture), width=width, height=height)
        except (UnrecognizedImageError, OSError, ValueError):
            paragraph.add_run(f"[{picture.relative_to(self.root.resolve()).as_posix()} "
                              "is not a readable image]")
        words = [child for child in caption if child.type not in ("softbreak", "hardbreak")]
        if words:
            line = self.document.add_paragraph(style="Caption")
            line.alignment = WD_ALIGN_PARAGRAPH.CENTER
            for child in words:
                self.run(line, child, _Format())

    def picture_size(self, picture: Path) -> tuple[Emu, Emu]:
        """The picture's size in the document: its own at one CSS pixel a pixel, made
        smaller to fit the text's width and most of a page's height, never larger."""
        image = Image.from_file(str(picture))
        width, height = image.px_width * _EMU_PER_CSS_PIXEL, image.px_height * _EMU_PER_CSS_PIXEL
        scale = min(1.0, self.text_width / width, self.picture_height / height)
        return Emu(int(width * scale)), Emu(int(height * scale))

    def picture_file(self, image: SyntaxTreeNode) -> Path | None:
        """The file an image node shows, when it is one inside the document's folder."""
        source = str(image.attrs.get("src", ""))
        parts = urlsplit(source)
        remote = parts.scheme or parts.netloc
        return None if remote else local_file(self.root, Path(unquote(parts.path)))

    def inline(self, paragraph: Paragraph, inline: SyntaxTreeNode,
               form: _Format = _Format()) -> None:
        for child in inline.children:
            self.run(paragraph, child, form)

    def run(self, paragraph: Paragraph, node: SyntaxTreeNode, form: _Format) -> None:
        kind = node.type
        if kind in ("text", "code_inline"):
            code = form.code or kind == "code_inline"
            _styled(paragraph.add_run(clean_text(node.content)), replace(form, code=code))
        elif kind == "softbreak":
            paragraph.add_run(" ")
        elif kind == "hardbreak":
            paragraph.add_run().add_break()
        elif kind in ("strong", "em", "s"):
            flag = {"strong": "bold", "em": "italic", "s": "strike"}[kind]
            for child in node.children:
                self.run(paragraph, child, replace(form, **{flag: True}))
        elif kind == "link":
            self.link(paragraph, node, form)
        elif kind == "image" and self.picture_file(node) is None:
            # Left out, as the HTML leaves out images in the text; one from elsewhere is said.
            refused(DOCX_FILE, str(node.attrs.get("src", "")), self.root)

    def link(self, paragraph: Paragraph, node: SyntaxTreeNode, form: _Format) -> None:
        href = str(node.attrs.get("href", ""))
        start = len(paragraph._p.r_lst)
        for child in node.children:
            self.run(paragraph, child, form)
        if urlsplit(href).scheme.lower() not in _LINK_SCHEMES:
            return
        link = OxmlElement("w:hyperlink")
        link.set(qn("r:id"), paragraph.part.relate_to(href, RELATIONSHIP_TYPE.HYPERLINK,
                                                       is_external=True))
        for run in paragraph.runs[start:]:
            run.font.underline = True
            run.font.color.rgb = _LINK_BLUE
            link.append(run._r)
        paragraph._p.append(link)


def _level_suffix(depth: int) -> str:
    """The suffix of Word's list style names for a list ``depth`` deep: "", " 2", " 3"."""
    level = min(depth, _LIST_LEVELS)
    return f" {level}" if level > 1 else ""


def _styled(run, form: _Format) -> None:
    run.bold, run.italic = form.bold or None, form.italic or None
    run.font.strike = form.strike or None
    if form.code:
        run.font.name = _MONOSPACE


def _plain(node: SyntaxTreeNode) -> str:
    if node.type in ("text", "code_inline"):
        return clean_text(node.content)
    return " ".join(_plain(child) for child in node.children).strip()


def _add_code_style(document: WordDocument) -> None:
    style = document.styles.add_style(CODE_STYLE, WD_STYLE_TYPE.PARAGRAPH)
    style.base_style = document.styles["Normal"]
    style.font.name = _MONOSPACE
    style.font.size = Pt(9)
    style.paragraph_format.space_after = Pt(8)


def _restarted_numbering(document: WordDocument, style: str, start: int) -> int:
    """A numbering of ``style``'s kind that counts from ``start``: without one, every
    numbered list in a Word document continues the count of the one before it."""
    numbering = document.part.numbering_part.element
    style_number = document.styles[style].element.pPr.numPr.numId.val
    abstract = numbering.num_having_numId(style_number).abstractNumId.val
    number = numbering.add_num(abstract)
    number.add_lvlOverride(ilvl=0).add_startOverride(start)
    return number.numId


def _number_with(paragraph: Paragraph, number_id: int) -> None:
    paragraph._p.get_or_add_pPr().get_or_add_numPr().get_or_add_numId().val = number_id


def _bottom_border(paragraph: Paragraph) -> None:
    """A thematic break: a line under an empty paragraph."""
    borders = OxmlElement("w:pBdr")
    bottom = OxmlElement("w:bottom")
    for name, value in (("val", "single"), ("sz", "6"), ("space", "1"), ("color", "auto")):
        bottom.set(qn(f"w:{name}"), value)
    borders.append(bottom)
    paragraph._p.get_or_add_pPr().append(borders)
