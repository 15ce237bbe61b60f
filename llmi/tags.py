"""Parser for the ``<imgen>{...}</imgen>`` tag protocol.

Model output is untrusted and messy: dict or JSON literals, code with raw
newlines, tags inside code fences, a missing brace or closing tag. The parser
repairs what it safely can and never raises: every tag becomes either an
``ImageRequest`` or a failed ``ImageResult`` whose error says why.
"""

from __future__ import annotations

import ast
import codecs
import json
import re
import warnings
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmi.errors import first_line
from llmi.state import ImageRequest, ImageResult, Segment, failed_result

OPEN, CLOSE = "<imgen>", "</imgen>"
PARSER = "parser"
"""The ``tool`` of a slot whose tag the parser could not read: a broken tag, not a tool
failure."""
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`+\s*(<imgen>.*?</imgen>)\s*`+", re.DOTALL)
_PAIRS = {"{": "}", "[": "]", "(": ")"}
# The one shape LLM-I's parser reads before trying a literal (``parse_image_tag`` in its
# verl/utils/reward_score/llmi_rm.py), because its models write code strings with quotes
# left unescaped, as its training prompt's example does: the code runs to the closing
# "'}}", escapes still written out, and the description is taken as written.
_CODE_TAG = re.compile(
    r"\s*\{'source': 'code', 'description': '([^']*)', 'params': \{'code': '(.*)'\}\}\s*",
    re.DOTALL,
)
REFERENCE_SOURCES = frozenset({"diffusion", "edit"})
"""Sources whose tags may carry ``refs``: the built-in tools that take reference images."""
_BACKSLASHES_BEFORE_NON_ASCII = re.compile(r"\\+(?=[^\x00-\x7f])")
_COMMON_ESCAPES = (("\\n", "\n"), ("\\t", "\t"), ('\\"', '"'), ("\\'", "'"))


@dataclass
class Plan:
    """What the parser makes of one draft."""

    segments: list[Segment] = field(default_factory=list)
    requests: list[ImageRequest] = field(default_factory=list)
    failures: list[ImageResult] = field(default_factory=list)


class TagError(ValueError):
    """A tag that cannot become a request; the message is the slot's error."""


def parse_draft(
    draft: str,
    required_params: Mapping[str, tuple[str, ...]],
    *,
    n_inputs: int = 0,
    max_images: int | None = None,
    reference_sources: Collection[str] = REFERENCE_SOURCES,
) -> Plan:
    """Split a draft into text segments and image slots.

    Slot numbers are image indices: the ``n_inputs`` input images come first,
    then the tags of the draft in order. The ``refs`` of a tag whose source is in
    ``reference_sources`` become its request's ``refs``.
    """
    plan = Plan()
    rules = _Rules(required_params, reference_sources, n_inputs, max_images)
    for ordinal, (text, body) in enumerate(_split(_unwrap_fences(draft))):
        _add_text(plan, text)
        if body is None:
            continue
        plan.segments.append({"kind": "slot", "slot": n_inputs + ordinal})
        outcome = _numbered_slot(ordinal, body, rules)
        (plan.failures if "ok" in outcome else plan.requests).append(outcome)  # type: ignore[arg-type]
    return plan


class TagScanner:
    """The requests of a draft that arrives in pieces, each read as soon as its tag closes.

    ``feed`` takes the next piece of the draft and returns the requests of the tags that
    piece closed, numbered and read as ``parse_draft`` numbers and reads them; tags that
    cannot be read are left to ``parse_draft``. The plan is ``parse_draft``'s of the whole
    draft: a request read here is in it unless later text changes how the draft splits
    (a fence closed around an earlier tag is the same tag; a tag left unclosed is not).
    """

    def __init__(self, required_params: Mapping[str, tuple[str, ...]], *, n_inputs: int = 0,
                 max_images: int | None = None,
                 reference_sources: Collection[str] = REFERENCE_SOURCES) -> None:
        self._rules = _Rules(required_params, reference_sources, n_inputs, max_images)
        self._draft = ""
        self._tags = 0

    def feed(self, piece: str) -> list[ImageRequest]:
        searched_from = max(0, len(self._draft) - len(CLOSE))
        self._draft += piece
        if self._draft.find(CLOSE, searched_from) == -1:
            return []
        closed = self._draft[: self._draft.rfind(CLOSE) + len(CLOSE)]
        bodies = [body for _, body in _split(_unwrap_fences(closed)) if body is not None]
        outcomes = [_numbered_slot(ordinal, bodies[ordinal], self._rules)
                    for ordinal in range(self._tags, len(bodies))]
        self._tags = len(bodies)
        return [outcome for outcome in outcomes if "ok" not in outcome]  # type: ignore[misc]

    def restart(self) -> None:
        """Forget the draft so far: it was not the draft (see ``llmi.reasoning.Delta``)."""
        self._draft, self._tags = "", 0


@dataclass(frozen=True)
class _Rules:
    """How the tags of one draft are read."""

    required_params: Mapping[str, tuple[str, ...]]
    reference_sources: Collection[str]
    n_inputs: int
    max_images: int | None


def _numbered_slot(ordinal: int, body: str, rules: _Rules) -> ImageRequest | ImageResult:
    """The slot of the draft's tag number ``ordinal``: input images come first."""
    slot = rules.n_inputs + ordinal
    tag: dict[str, Any] = {}
    try:
        tag = read_body(body)
        if rules.max_images is not None and ordinal >= rules.max_images:
            raise TagError(f"more than {rules.max_images} images in one document")
        return _request(slot, tag, rules)
    except TagError as exc:
        source, description = _label(tag, body)
        return failed_result(slot, source, description, f"bad tag: {exc}", tool=PARSER)


def read_body(body: str) -> dict[str, Any]:
    """A tag's body read as the dict it writes, repaired where that is safe; TagError says
    why it cannot be read."""
    return _code_tag(body) or _literal(body)


def read_tag(slot: int, tag: Mapping[str, Any], required_params: Mapping[str, tuple[str, ...]],
             *, reference_sources: Collection[str] = REFERENCE_SOURCES) -> ImageRequest:
    """The request of one tag already read as a dict, for image ``slot``, by the rules
    ``parse_draft`` reads a draft's tags with (source known, params present, ``img_index``
    and ``refs`` pointing at earlier images); TagError says why it cannot be one."""
    return _request(slot, dict(tag), _Rules(required_params, reference_sources, 0, None))


def tag_bodies(draft: str) -> list[str]:
    """The raw body of each tag of a draft, in order: what the model wrote for each slot."""
    return [body for _, body in _split(_unwrap_fences(draft)) if body is not None]


def _unwrap_fences(draft: str) -> str:
    """Drop code fences and backticks that wrap tags, keeping the tags."""

    def unwrap(match: re.Match[str]) -> str:
        inner = match.group(1)
        return inner if OPEN in inner else match.group(0)

    return _INLINE_CODE.sub(r"\1", _FENCE.sub(unwrap, draft))


def _split(draft: str) -> list[tuple[str, str | None]]:
    """Pairs of (text before a tag, tag body); the last pair's body is None."""
    pieces: list[tuple[str, str | None]] = []
    rest = draft
    while (start := rest.find(OPEN)) != -1:
        text, rest = rest[:start], rest[start + len(OPEN) :]
        end = rest.find(CLOSE)
        following = rest.find(OPEN)
        if end != -1 and (following == -1 or end < following):
            body, rest = rest[:end], rest[end + len(CLOSE) :]
        else:
            body = _unclosed_body(rest if following == -1 else rest[:following])
            rest = rest[len(body) :]
        pieces.append((text, body))
    pieces.append((rest, None))
    return pieces


def _unclosed_body(rest: str) -> str:
    """The body of a tag whose closing tag is missing: its balanced literal."""
    start = rest.find("{")
    if start == -1 or rest[:start].strip():
        line_end = rest.find("\n")
        return rest if line_end == -1 else rest[:line_end]
    end = _balanced_end(rest, start)
    if end is None:
        paragraph_end = rest.find("\n\n")
        return rest if paragraph_end == -1 else rest[:paragraph_end]
    return rest[:end]


def _outside_strings(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """The characters of ``text`` from ``start`` that stand outside quoted strings."""
    quote: str | None = None
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if quote is None:
            if ch in "'\"":
                quote = ch
            else:
                yield i, ch
        elif escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == quote:
            quote = None


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket that closes ``text[start]``, outside strings."""
    depth = 0
    for i, ch in _outside_strings(text, start):
        if ch in _PAIRS:
            depth += 1
        elif ch in _PAIRS.values():
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _add_text(plan: Plan, text: str) -> None:
    text = text.replace(CLOSE, "").strip("\n")
    if text.strip():
        plan.segments.append({"kind": "text", "text": text})


def _code_tag(body: str) -> dict[str, Any] | None:
    """A tag in LLM-I's exact code-tag shape, read as LLM-I reads it; None for any other body."""
    match = _CODE_TAG.fullmatch(body)
    if match is None:
        return None
    description, code = match.groups()
    code = _unescape(code.strip())
    return {"source": "code", "description": description, "params": {"code": code}}


def _unescape(code: str) -> str:
    """``code`` with its backslash escapes read, as LLM-I reads them before it runs code
    (``sanitize_code`` in its imageutils/code_exec.py).

    LLM-I decodes the text with ``unicode_escape``, which garbles every character beyond
    ASCII (its UTF-8 bytes come out as Latin-1 characters); here they stay as written.
    Where the escapes do not decode (a lone final backslash, a short ``\\x``), only the
    common four are read, as there.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown escape such as \d stays as written
            return codecs.decode(_ascii_escaped(code), "unicode_escape")
    except UnicodeDecodeError:
        for escape, char in _COMMON_ESCAPES:
            code = code.replace(escape, char)
        return code


def _ascii_escaped(code: str) -> bytes:
    """``code`` as ASCII that ``unicode_escape`` decodes to its own non-ASCII characters.

    A backslash right before such a character is an unknown escape, which stays as written;
    it is doubled so that it cannot join the escape the character becomes.
    """
    def doubled(match: re.Match[str]) -> str:
        run = match.group()
        return run + "\\" * (len(run) % 2)

    return _BACKSLASHES_BEFORE_NON_ASCII.sub(doubled, code).encode("ascii", "backslashreplace")


def _literal(body: str) -> dict[str, Any]:
    """Read a tag body as a dict, repairing raw newlines and missing closers."""
    body = body.strip()
    error = "empty tag"
    for candidate in _repairs(body):
        for reader in (json.loads, ast.literal_eval):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value = reader(candidate)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                error = _first_line(exc)
                continue
            if not isinstance(value, dict):
                raise TagError(f"the tag holds a {type(value).__name__}, not a dict")
            return value
    raise TagError(f"the tag is not a readable dict ({error})")


def _repairs(body: str) -> Iterator[str]:
    """``body``, then ``body`` repaired further; each repair made only when it is needed."""
    yield body
    escaped = _escape_raw_newlines(body)
    yield escaped
    yield _close_brackets(escaped)


def _escape_raw_newlines(body: str) -> str:
    """Escape newlines and tabs that stand raw inside quoted strings."""
    out: list[str] = []
    quote: str | None = None
    escaped = False
    i = 0
    while i < len(body):
        ch = body[i]
        if quote is None:
            if body.startswith(("'''", '"""'), i):
                end = body.find(body[i : i + 3], i + 3)
                end = len(body) if end == -1 else end + 3
                out.append(body[i:end])
                i = end
                continue
            if ch in "'\"":
                quote = ch
            out.append(ch)
        elif escaped:
            escaped = False
            out.append(ch)
        elif ch == "\\":
            escaped = True
            out.append(ch)
        elif ch == quote:
            quote = None
            out.append(ch)
        else:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, ch))
        i += 1
    return "".join(out)


def _close_brackets(body: str) -> str:
    """Append the closers of brackets left open outside strings."""
    stack: list[str] = []
    for _, ch in _outside_strings(body):
        if ch in _PAIRS:
            stack.append(_PAIRS[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
    return body + "".join(reversed(stack))


def _request(slot: int, tag: dict[str, Any], rules: _Rules) -> ImageRequest:
    source = tag.get("source")
    if not isinstance(source, str) or not source.strip():
        raise TagError("the tag has no source")
    source = source.strip().lower()
    required_params = rules.required_params
    if source not in required_params:
        raise TagError(f"unknown source {source!r} (known: {', '.join(required_params)})")
    params = tag.get("params")
    if not isinstance(params, dict):
        raise TagError(f"the {source} tag has no params")
    missing = [key for key in required_params[source] if _blank(params.get(key))]
    if missing:
        raise TagError(f"the {source} tag's params lack {', '.join(map(repr, missing))}")
    depends_on = None
    if "img_index" in required_params[source]:
        params = {**params, "img_index": _image_index(params["img_index"], slot)}
        depends_on = params["img_index"]
    refs: list[int] = []
    if source in rules.reference_sources and params.get("refs") is not None:
        refs = _refs(params["refs"], slot, depends_on)
        params = {**params, "refs": refs}
    description = tag.get("description")
    request = ImageRequest(
        slot=slot,
        source=source,
        description=description.strip() if isinstance(description, str) else "",
        params=params,
        depends_on=depends_on,
        attempt=0,
    )
    if refs:
        request["refs"] = refs
    return request


def _refs(value: Any, slot: int, edited: int | None) -> list[int]:
    """The images a tag's ``refs`` names, each once, in order; the image an edit changes
    is its source already, not a reference."""
    items = value if isinstance(value, list | tuple) else [value]
    refs: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise TagError(f"refs holds {item!r}, not an image index")
        try:
            index = _image_index(item, slot)
        except TagError as exc:
            raise TagError(f"refs: {exc}") from None
        if index != edited and index not in refs:
            refs.append(index)
    return refs


def _image_index(value: Any, slot: int) -> int:
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise TagError(f"img_index {value!r} is not a number") from None
    if not 0 <= index < slot:
        valid = f"0-{slot - 1}" if slot else "none: nothing comes before it"
        raise TagError(
            f"img_index {index} does not point at an input image or an earlier image "
            f"(valid here: {valid})"
        )
    return index


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _label(tag: dict[str, Any], body: str) -> tuple[str, str]:
    """Source and description of a failed tag, read loosely from the raw body if needed."""
    found = {}
    for key in ("source", "description"):
        value = tag.get(key)
        if not isinstance(value, str):
            match = re.search(rf"""['"]{key}['"]\s*:\s*(['"])(.*?)(?<!\\)\1""", body, re.DOTALL)
            value = match.group(2) if match else ""
        found[key] = value.strip()
    return found["source"].lower() or "unknown", found["description"]


def _first_line(exc: BaseException) -> str:
    return (first_line(str(exc)) or type(exc).__name__)[:200]
