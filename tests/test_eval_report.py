"""The evaluation report: summary, terminal table, index and item pages."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from PIL import Image
from rich.console import Console

from helpers import gradient_png, html_tags
from llmi.artifacts import ArtifactStore
from llmi.evaluation.records import EvalItem, ItemScore, ResultLine
from llmi.evaluation.report import (
    item_dir,
    safe_name,
    summary_table,
    write_pages,
    write_summary,
)
from llmi.state import ImageResult, failed_result

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ODD_ID = "../../etc/パスワード item"


def _item(item_id: str, prompt: str = "Draw rain", **fields: Any) -> EvalItem:
    return EvalItem(
        id=item_id, prompt=prompt, images=[], image_num=2, tools=["code", "search"],
        split="test", criteria=[], data_source="bench", extra={},
    ) | fields


def _line(item: EvalItem, index: int, **fields: Any) -> ResultLine:
    return ResultLine(
        id=item["id"], index=index, protocol="llmi", status="ok", error=None, seconds=2.5,
        item=item,
        document={}, scores={},
    ) | fields


def _made(slot: int, ref: Any) -> ImageResult:
    return ImageResult(
        slot=slot, source="code", description="Monthly rainfall", ok=True, image=ref, error=None,
        tool="code", backend="fake", provenance={}, seconds=1.0, attempt=0,
    )


def _scores() -> dict[str, ItemScore]:
    rubric = {
        "criteria": [
            {"criterion": "Shows rain", "score": 2, "justification": f"Yes {SCRIPT}",
             "error": None},
            {"criterion": "Has a chart", "score": 1, "justification": "Partly", "error": None},
            {"criterion": "Cites sources", "score": None, "justification": "",
             "error": "judge timed out"},
        ],
        "points": 3,
        "max_points": 4,
    }
    reward = {
        "reward": 0.8125,
        "rules": {"tag_validity": 1.0, "image_count": 1.0, "tool_success": 0.5},
        "llm": {"text": 4, "image": None},
        "vision": {"quality": 3},
        "unknown": ["llm.image"],
        "infrastructure_failures": 1,
    }
    tool_use = {
        "sources": {
            "code": {"attempts": 1, "successes": 1, "rate": 1.0, "infrastructure_failures": 0},
            "search": {"attempts": 1, "successes": 0, "rate": 0.0, "infrastructure_failures": 1},
        },
        "invalid_tags": 0, "used": ["code", "search"], "required": ["code"], "agreement": 0.5,
        "missing": [], "unexpected": ["search"],
    }
    return {
        "rubric": ItemScore(score=0.75, details=rubric, errors=["criterion 3: judge timed out"]),
        "reward": ItemScore(score=0.8125, details=reward, errors=[]),
        "tool_use": ItemScore(score=0.5, details=tool_use, errors=[]),
        "novel": ItemScore(score=None, details={"note": SCRIPT}, errors=[]),
    }


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def lines(store: ArtifactStore, tmp_path: Path) -> list[ResultLine]:
    chart = store.put(gradient_png(1))
    given = store.put(gradient_png(2, size=(40, 30)))
    draft = f"# Rain {SCRIPT}\n\nIt rains.\n\n<imgen>...</imgen>\n\nMore.\n\n<imgen>...</imgen>"
    ok = _line(
        _item("rain-1", prompt=f"Explain rain {SCRIPT}"),
        0,
        document={
            "draft": draft,
            "segments": [
                {"kind": "text", "text": f"# Rain {SCRIPT}\n\nIt rains."},
                {"kind": "slot", "slot": 0},
                {"kind": "text", "text": "More."},
                {"kind": "slot", "slot": 1},
            ],
            "results": [
                _made(0, chart),
                failed_result(1, "search", "Photo of rain", f"no images {SCRIPT}"),
            ],
            "inputs": [given],
        },
        scores=_scores(),
    )
    failed = _line(
        _item("rain-2", split="dev"), 1, status="error", error=f"planner crashed {SCRIPT}",
    )
    missing_input = str(tmp_path / "nowhere.png")
    odd = _line(_item(ODD_ID, images=[missing_input]), 2, document={"segments": []})
    return [ok, failed, odd]


@pytest.fixture
def out(tmp_path: Path, lines: list[ResultLine], store: ArtifactStore) -> Path:
    folder = tmp_path / "eval"
    write_pages(folder, lines, store)
    return folder


def _page(out: Path, item_id: str) -> str:
    return (item_dir(out, item_id) / "report.html").read_text(encoding="utf-8")


def _assert_inert(html: str) -> None:
    for tag, attrs in html_tags(html):
        assert tag not in {"script", "iframe", "object", "embed", "svg", "base", "form"}, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/"), attrs["src"][:40]
    assert "default-src 'none'" in html


def test_safe_name_keeps_plain_ids_and_hashes_the_rest() -> None:
    assert safe_name("rain-1") == "rain-1"
    for item_id in [ODD_ID, "..", ".", "", "con", "A", "x" * 300, "a/b", "a b", "é"]:
        name = safe_name(item_id)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._~-]*", name), name
        assert name not in {".", ".."} and len(name) <= 64, name
    assert safe_name(ODD_ID).startswith("etc-")


def test_safe_name_never_merges_ids_that_slug_alike() -> None:
    ids = ["a/b", "a b", "a-b", "a\\b", "A-B", "a--b", "../a/b", "a/b/", safe_name("a/b"),
           "x" * 100, "x" * 101, "", "é", "e"]
    names = [safe_name(item_id) for item_id in ids]
    assert len({name.lower() for name in names}) == len(ids), names


def test_index_links_every_item_page(out: Path, lines: list[ResultLine]) -> None:
    index = (out / "index.html").read_text(encoding="utf-8")
    links = [attrs["href"] for tag, attrs in html_tags(index) if tag == "a"]

    assert len(links) == len(lines)
    for link in links:
        assert not link.startswith(("/", "http")) and ".." not in link
        assert (out / unquote(link)).is_file()
    assert sorted(p.name for p in (out / "items").iterdir()) == sorted(
        safe_name(line["id"]) for line in lines
    )
    assert ODD_ID in index and "0.75" in index and "2.5" in index
    back = [a["href"] for t, a in html_tags(_page(out, "rain-1")) if t == "a"][0]
    assert (item_dir(out, "rain-1") / back).resolve() == (out / "index.html").resolve()


def test_untrusted_text_is_never_live(out: Path, lines: list[ResultLine]) -> None:
    for html in [(out / "index.html").read_text(encoding="utf-8")] + [
        _page(out, line["id"]) for line in lines
    ]:
        _assert_inert(html)
        assert "<script" not in html
    page = _page(out, "rain-1")
    assert f"Explain rain {ESCAPED}" in page
    assert f"Yes {ESCAPED}" in page
    assert f"no images {ESCAPED}" in page
    assert ESCAPED in _page(out, "rain-2")


def test_item_page_embeds_inputs_and_the_document_in_order(out: Path) -> None:
    page = _page(out, "rain-1")
    images = [attrs for tag, attrs in html_tags(page) if tag == "img"]

    assert [(img["width"], img["height"]) for img in images] == [("40", "30"), ("96", "80")]
    payload = images[1]["src"].split(",", 1)[1]
    with Image.open(io.BytesIO(base64.b64decode(payload))) as decoded:
        assert decoded.size == (96, 80)
    assert page.index("It rains.") < page.index(images[1]["src"]) < page.index("More.")
    assert page.index("More.") < page.index("Image 1 could not be made")


def test_item_page_shows_every_score(out: Path) -> None:
    page = _page(out, "rain-1")

    assert "Total: 3 / 4 points" in page
    assert '<td class="num error">error</td><td class="error">judge timed out</td>' in page
    assert "criterion 3: judge timed out" in page
    assert "<td>rules</td><td>tool_success</td><td class=\"num\">0.50</td>" in page
    assert "<td>llm</td><td>image</td><td class=\"num\">-</td>" in page
    assert "could not be judged" in page and "llm.image" in page
    assert "<td>search</td><td class=\"num\">1</td><td class=\"num\">0</td>" in page
    assert "agreement with the tools the item needs: 0.50" in page
    assert "novel: -" in page and f"&quot;note&quot;: &quot;{ESCAPED}&quot;" in page


def test_errored_and_odd_items_still_get_pages(out: Path) -> None:
    failed = _page(out, "rain-2")
    odd = _page(out, ODD_ID)

    assert f"planner crashed {ESCAPED}" in failed and "could not be made" not in failed
    assert "Input image 0 cannot be shown" in odd
    assert "パスワード" in odd


def test_summary_is_written_and_tabulated(tmp_path: Path) -> None:
    summary = {
        "dataset": "bench[x]", "graph": "document", "protocol": "llm-i", "items": 3, "ok": 2,
        "errors": 1,
        "scorers": {
            "rubric": {"score": 0.75, "items": 2, "points": 6, "by_criterion": {"r1": 0.5}},
            "tool_use": {"score": 0.5, "items": 2, "sources": {"code": {"rate": 1.0}}},
            "reward": {"score": None, "items": 0},
        },
        "splits": {"test": {"rubric": {"score": 1.0, "items": 1}}, "dev": {}},
    }
    path = write_summary(tmp_path / "eval", summary)

    assert path == tmp_path / "eval" / "summary.json"
    assert json.loads(path.read_text(encoding="utf-8")) == summary
    console = Console(record=True, width=100)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "bench[x] (document, llm-i): 3 items, 2 ok, 1 errors" in text
    assert re.search(r"rubric\s+│\s+0\.75\s+│\s+2\s+│\s+points 6", text), text
    assert "by_criterion: r1 0.50" in text and "sources: code (rate 1.00)" in text
    assert re.search(r"test\s+│\s+1\.00", text) and re.search(r"reward\s+│\s+-", text)
