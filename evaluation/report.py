"""What a reader looks at after an evaluation: ``summary.json``, a terminal table, HTML pages.

``DIR/index.html`` lists every item and links to ``DIR/items/<safe name>/report.html``,
which shows the item's prompt, input images, document and scores. Everything a model or
a dataset wrote is untrusted: the document goes through the project's renderer (Markdown
without raw HTML, sanitized, images as data: URIs); every other string is escaped where
it is placed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.table import Table
from rich.text import Text

from llmi.artifacts import ArtifactStore, inspect_image
from llmi.evaluation.records import ItemScore, ResultLine
from llmi.nodes.assembler import collect_figures
from llmi.render import html_body, html_page
from llmi.state import ImageRef, Segment

ITEMS = "items"
"""The folder of ``DIR`` that holds one folder per item."""
REPORT = "report.html"
INDEX = "index.html"
SUMMARY = "summary.json"

_MAX_SLUG = 48
_HASH_CHARS = 12
# A name kept as the id itself: lower case (so case-insensitive file systems cannot merge
# two of them) and without "~", which only hashed names contain.
_PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com\d|lpt\d)(\..*)?")

_CSS = """
body{max-width:62rem}
.muted{color:#666}
.error{color:#b33}
.prompt{white-space:pre-wrap;padding:.75rem;background:#f4f4f4}
.document{padding-left:1rem;border-left:3px solid #ddd}
.inputs figure{display:inline-block;margin:.5rem}
.inputs img{max-height:14rem;width:auto}
td.num{text-align:right;white-space:nowrap}
""".strip()


def safe_name(item_id: str) -> str:
    """A folder name for an item: the id itself when that is safe, else a slug and a hash.

    Different ids never share a name: a hashed name holds "~", which a kept id never does.
    """
    if _PLAIN_NAME.fullmatch(item_id) and not _reserved(item_id):
        return item_id
    ascii_id = unicodedata.normalize("NFKD", item_id).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("-", ascii_id)[:_MAX_SLUG].strip("._-") or "item"
    digest = hashlib.sha256(item_id.encode()).hexdigest()
    return f"{slug}~{digest[:_HASH_CHARS]}"


def _reserved(name: str) -> bool:
    return name.endswith(".") or bool(_WINDOWS_DEVICES.fullmatch(name))


def item_dir(out: Path, item_id: str) -> Path:
    """Where an item's document and page go: ``out/items/<safe name>``."""
    return out / ITEMS / safe_name(item_id)


def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    path = out / SUMMARY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def summary_table(summary: Mapping[str, Any]) -> Table:
    """One row per scorer (and per split under it, when there are several)."""
    table = Table("scorer", "score", "items", "figures", title=_summary_title(summary))
    splits = _mapping(summary.get("splits"))
    for name, figures in _mapping(summary.get("scorers")).items():
        figures = _mapping(figures)
        table.add_row(
            Text(name, style="bold"),
            Text(_shown(figures.get("score"))),
            Text(_shown(figures.get("items"))),
            Text("\n".join(_figure_lines(_rest(figures, ("score", "items"))))),
        )
        for split, by_scorer in splits.items():
            if name in _mapping(by_scorer):
                figures = _mapping(by_scorer[name])
                table.add_row(
                    Text(f"  {split}", style="dim"),
                    Text(_shown(figures.get("score")), style="dim"),
                    Text(_shown(figures.get("items")), style="dim"),
                    "",
                )
        table.add_section()
    return table


def _summary_title(summary: Mapping[str, Any]) -> Text:
    errors = summary.get("errors") or 0
    title = Text(
        f"{summary.get('dataset', '')} ({summary.get('graph', '')}, "
        f"{summary.get('protocol', '')}): "
        f"{summary.get('items', 0)} items, {summary.get('ok', 0)} ok, "
    )
    title.append(f"{errors} errors", style="red" if errors else "")
    return title


def _figure_lines(figures: Mapping[str, Any]) -> list[str]:
    """One line per figure; a group of figures (say, per source) stays on its line."""
    return [
        f"{key}: {_inline(value)}" if isinstance(value, Mapping) else f"{key} {_shown(value)}"
        for key, value in figures.items()
    ]


def _inline(figures: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{key} ({_inline(value)})" if isinstance(value, Mapping) else f"{key} {_shown(value)}"
        for key, value in figures.items()
    )


def write_pages(out: Path, lines: Sequence[ResultLine], store: ArtifactStore) -> Path:
    """An HTML page per item and ``out/index.html`` linking to them; returns the index."""
    for line in lines:
        folder = item_dir(out, line["id"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / REPORT).write_text(_item_page(line, store), encoding="utf-8")
    index = out / INDEX
    index.write_text(_index_page(lines), encoding="utf-8")
    return index


def _index_page(lines: Sequence[ResultLine]) -> str:
    scorers = list(dict.fromkeys(name for line in lines for name in line["scores"]))
    header = "".join(
        f"<th>{escape(name)}</th>" for name in ["id", "split", "status", *scorers, "seconds"]
    )
    rows = "\n".join(_index_row(line, scorers) for line in lines)
    errors = sum(line["status"] != "ok" for line in lines)
    error_count = f'<span class="error">{errors} errors</span>' if errors else "0 errors"
    protocols = ", ".join(sorted({line["protocol"] for line in lines}))
    body = (
        "<h1>Evaluation</h1>"
        f"<p>protocol {escape(protocols)}: {len(lines)} items, {len(lines) - errors} ok, "
        f"{error_count}</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>\n{rows}\n</tbody></table>"
    )
    return html_page("Evaluation", body, _CSS)


def _index_row(line: ResultLine, scorers: Sequence[str]) -> str:
    href = f"{ITEMS}/{quote(safe_name(line['id']))}/{REPORT}"
    scores = "".join(
        f'<td class="num">{_score(line["scores"].get(name))}</td>' for name in scorers
    )
    return (
        f'<tr><td><a href="{escape(href)}">{escape(line["id"])}</a></td>'
        f'<td>{escape(line["item"].get("split") or "")}</td>'
        f"<td>{_status(line)}</td>{scores}"
        f'<td class="num">{line["seconds"]:.1f}</td></tr>'
    )


def _item_page(line: ResultLine, store: ArtifactStore) -> str:
    item = line["item"]
    sections = [
        f'<p><a href="../../{INDEX}">All items</a></p>',
        f"<h1>{escape(line['id'])}</h1>",
        f'<p class="muted">{_facts(line)}</p>',
        f'<h2>Prompt</h2><div class="prompt">{escape(item.get("prompt") or "")}</div>',
        f"<h2>Input images</h2>{_inputs(line, store)}",
        f"<h2>Document</h2>{_document(line, store)}",
        "<h2>Scores</h2>",
        *(_scorer_section(name, score) for name, score in line["scores"].items()),
    ]
    return html_page(f"{line['id']} (evaluation)", "\n".join(sections), _CSS)


def _facts(line: ResultLine) -> str:
    item = line["item"]
    facts = [
        f"split {item.get('split') or '-'}",
        f"{line['seconds']:.1f} s",
        f"images asked {_shown(item.get('image_num'))}",
        f"tools {_shown(item.get('tools'))}",
        f"source {item.get('data_source') or '-'}",
        f"protocol {line['protocol']}",
    ]
    return " · ".join([_status(line), *map(escape, facts)])


def _status(line: ResultLine) -> str:
    return "ok" if line["status"] == "ok" else '<span class="error">error</span>'


def _inputs(line: ResultLine, store: ArtifactStore) -> str:
    refs = line["document"].get("inputs") or []
    sources: Sequence[ImageRef | str] = refs or line["item"].get("images") or []
    if not sources:
        return '<p class="muted">None.</p>'
    figures = "".join(_input_figure(n, source, store) for n, source in enumerate(sources))
    return f'<div class="inputs">{figures}</div>'


def _input_figure(number: int, source: ImageRef | str, store: ArtifactStore) -> str:
    caption = f"<figcaption>Input {number}</figcaption>"
    try:
        data = store.get(source) if isinstance(source, Mapping) else Path(source).read_bytes()
        mime, width, height = inspect_image(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        note = f'<p class="error">Input image {number} cannot be shown: {escape(str(exc))}</p>'
        return f'<figure class="failed">{note}</figure>'
    src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    image = f'<img src="{src}" alt="Input {number}" width="{width}" height="{height}">'
    return f"<figure>{image}{caption}</figure>"


def _document(line: ResultLine, store: ArtifactStore) -> str:
    if line["status"] != "ok":
        return f'<pre class="error">{escape(line.get("error") or "unknown error")}</pre>'
    document = line["document"]
    draft = document.get("draft") or ""
    segments: Sequence[Segment] = document.get("segments") or [{"kind": "text", "text": draft}]
    results = {result["slot"]: result for result in document.get("results") or []}
    figures = collect_figures(segments, results, {}, store)
    return (
        f'<div class="document">{html_body(segments, figures)}</div>'
        f"<details><summary>The draft as the model wrote it</summary>"
        f"<pre>{escape(draft)}</pre></details>"
    )


def _scorer_section(name: str, score: ItemScore) -> str:
    details = _mapping(score.get("details"))
    render = _DETAILS.get(name, _generic_details)
    errors = "".join(f"<li>{escape(str(error))}</li>" for error in score.get("errors") or [])
    return (
        f"<h3>{escape(name)}: {_score(score)}</h3>"
        + (f'<ul class="error">{errors}</ul>' if errors else "")
        + render(details)
    )


def _rubric_details(details: Mapping[str, Any]) -> str:
    rows = "".join(_criterion_row(_mapping(c)) for c in details.get("criteria") or [])
    total = f"{_number(details.get('points'))} / {_number(details.get('max_points'))}"
    return (
        "<table><thead><tr><th>criterion</th><th>score</th><th>justification</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><p><strong>Total: {total} points</strong></p>"
        + _generic_details(_rest(details, ("criteria", "points", "max_points")))
    )


def _criterion_row(criterion: Mapping[str, Any]) -> str:
    name = f"<td>{escape(str(criterion.get('criterion') or ''))}</td>"
    if criterion.get("error"):
        verdict = (
            '<td class="num error">error</td>'
            f'<td class="error">{escape(str(criterion["error"]))}</td>'
        )
    else:
        verdict = (
            f'<td class="num">{_number(criterion.get("score"))}</td>'
            f"<td>{escape(str(criterion.get('justification') or ''))}</td>"
        )
    return f"<tr>{name}{verdict}</tr>"


def _opening_details(details: Mapping[str, Any]) -> str:
    rows = "".join(_criterion_row(_mapping(c)) for c in details.get("criteria") or [])
    return (
        "<table><thead><tr><th>criterion</th><th>score (0-10)</th><th>justification</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        f"<p><strong>Overall: {_number(details.get('overall'))} / 10</strong></p>"
    )


def _reward_details(details: Mapping[str, Any]) -> str:
    rows = [("reward", "", details.get("reward"))]
    for group in ("rules", "llm", "vision"):
        rows += [(group, key, value) for key, value in _mapping(details.get(group)).items()]
    if "unknown" in details:
        rows.append(("could not be judged", "", details["unknown"]))
    if "infrastructure_failures" in details:
        rows.append(("infrastructure failures", "", details["infrastructure_failures"]))
    body = "".join(
        f"<tr><td>{escape(group)}</td><td>{escape(str(key))}</td>"
        f'<td class="num">{_number(value)}</td></tr>'
        for group, key, value in rows
    )
    known = ("reward", "rules", "llm", "vision", "unknown", "infrastructure_failures")
    return (
        "<table><thead><tr><th>component</th><th>part</th><th>value</th></tr></thead>"
        f"<tbody>{body}</tbody></table>" + _generic_details(_rest(details, known))
    )


def _tool_use_details(details: Mapping[str, Any]) -> str:
    columns = ("attempts", "successes", "rate", "infrastructure_failures")
    rows = "".join(
        f"<tr><td>{escape(str(source))}</td>"
        + "".join(f'<td class="num">{_number(_mapping(counts).get(c))}</td>' for c in columns)
        + "</tr>"
        for source, counts in _mapping(details.get("sources")).items()
    )
    facts = "".join(
        f"<li>{label}: {_number(details.get(key))}</li>"
        for key, label in (
            ("agreement", "agreement with the tools the item needs"),
            ("used", "used"),
            ("required", "required"),
            ("missing", "missing"),
            ("unexpected", "unexpected"),
            ("invalid_tags", "invalid tags"),
        )
        if key in details
    )
    known = ("sources", "agreement", "used", "required", "missing", "unexpected", "invalid_tags")
    return (
        "<table><thead><tr><th>source</th><th>attempts</th><th>successes</th><th>rate</th>"
        f"<th>infrastructure failures</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<ul>{facts}</ul>" + _generic_details(_rest(details, known))
    )


def _generic_details(details: Mapping[str, Any]) -> str:
    if not details:
        return ""
    text = json.dumps(details, ensure_ascii=False, indent=2, default=str)
    return f"<pre>{escape(text)}</pre>"


_DETAILS = {"rubric": _rubric_details, "reward": _reward_details, "tool_use": _tool_use_details,
            "opening": _opening_details}


def _score(score: ItemScore | None) -> str:
    return _number((score or {}).get("score"))


def _number(value: Any) -> str:
    """A figure as HTML."""
    return escape(_shown(value))


def _shown(value: Any) -> str:
    """A figure as text: floats to two places, lists joined, nothing as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rest(details: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    return {key: value for key, value in details.items() if key not in known}
