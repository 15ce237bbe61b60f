"""Control characters in model text never reach the rendered document."""

from __future__ import annotations

import re
from pathlib import Path

from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.render import clean_text
from llmi.tools.base import ToolCall, ToolError

from helpers import FakeTool, fake_tools, model, tag

# Every C0 and C1 control character and DEL, but tab and newline.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _fail(call: ToolCall) -> None:
    raise ToolError("the server said \x1b[31mno\x1b[0m\x00")


def test_model_text_descriptions_and_errors_lose_their_control_characters(
    context: Context,
) -> None:
    draft = (
        "# Kyo\x00to\r\n\r\nRain\x07 falls\x1b[2J in\x85 June;\x9b the\x7f river\trises.\r\n\r\n"
        # The NUL stands in the tag as written, not as an escape.
        + "<imgen>{'source': 'code', 'description': 'Rain\x00fall by month', "
        "'params': {'code': 'plt.bar([1], [2])'}}</imgen>"
        + "\r\n\r\n"
        + tag("search", "Temple\x1b in rain", query="temple")
    )
    tools = fake_tools(search=FakeTool("search", ("query",), behaviour=_fail))
    build_graph(model=model(draft), tools=tools).compile().invoke(
        {"prompt": "Rain\x00 in Kyoto"}, context=context
    )
    out = Path(context.out_dir)
    markdown = (out / "document.md").read_text(encoding="utf-8")
    html = (out / "document.html").read_text(encoding="utf-8")
    for text in (markdown, html):
        assert CONTROL.findall(text) == []
        assert "\r" not in text
    assert "# Kyoto\n\nRain falls[2J in June; the river\trises." in markdown
    assert "*Rainfall by month*" in markdown and "*Temple in rain*" in markdown
    assert "<h1>Kyoto</h1>" in html and "<title>Kyoto</title>" in html
    assert "the server said [31mno[0m" in html


def test_clean_text_normalises_line_ends_and_keeps_tabs_and_other_scripts() -> None:
    assert clean_text("a\r\nb\rc\td\x00e\x1bf\x9cg") == "a\nb\nc\tdefg"
    assert clean_text("Zürich — 東京 — \u200b") == "Zürich — 東京 — \u200b"
