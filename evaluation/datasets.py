"""Reading evaluation datasets into ``EvalItem`` records.

Three file forms: JSONL (one item per line), JSON (a list of items, as LLMI-Bench ships
``text_only.json`` and ``mm_input.json``) and Parquet (as verl trains LLM-I). Five item
layouts:

- OpenING (``test_data.jsonl`` as published): ``total_uid`` and ``conversations``, told
  apart by those two fields (or named with ``format="opening"``);
- UEval (its Hub Parquet as published): told apart by ``text_rubrics`` and
  ``image_rubrics`` (or named with ``format="ueval"``), read by ``llmi.evaluation.ueval``;
- ISG-Bench (``ISG-Bench.jsonl`` as published): told apart by ``Query`` and ``Golden``
  (or named with ``format="isg"``), read by ``llmi.evaluation.isg``;

and two told apart by the shape of ``prompt``:

- LLM-I / verl: ``prompt`` is a list of chat messages; ``data_source``; ``extra_info``
  with ``image_num``, ``tools``, ``split`` and ``index``; input images in an ``images``
  column and/or as image parts of the messages.
- plain: ``prompt`` is a string; ``images``, ``criteria`` (or LLMI-Bench's ``r1``...``r10``),
  ``id``, ``image_num``, ``tools``, ``split``.

Every input image is checked and copied into ``image_dir`` as ``<sha256>.<ext>``, so an
item's images are always paths of real image files, whatever the dataset held.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit
from urllib.request import url2pathname

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from llmi.artifacts import NotAnImage, extension, inspect_image
from llmi.evaluation import prompts
from llmi.evaluation.records import ISG, OPENING, UEVAL, EvalItem

_IMAGE_TOKEN = "<image>"
# OpenING marks where the given content starts, after the instruction.
_BEGIN = re.compile(r"[ \t]*<BEGIN>[ \t]*")
_PLACEHOLDER = re.compile(r"[ \t]*<image>")
_BARE_IMAGE: dict[str, Any] = {"type": "image"}
# A real image's base64 is never this short, and a path this long is rarely free of dots.
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]{64,}")
_RUBRIC = re.compile(r"r(\d+)")
_SETTINGS = ("image_num", "tools", "split")
_OWN_FIELDS = frozenset({"id", "prompt", "images", "criteria", "data_source", "extra_info",
                         *_SETTINGS})


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file, the item and what is wrong."""


class ItemError(ValueError):
    """What is wrong with one prompt, image or field, in one line."""


def load_items(path: str | os.PathLike[str], *, image_dir: str | os.PathLike[str],
               format: str | None = None) -> list[EvalItem]:
    """Read every item of a ``.jsonl``, ``.json`` or ``.parquet`` dataset, in file order.

    ``format`` ``"opening"`` reads every item as OpenING's, ``"ueval"`` as UEval's,
    ``"isg"`` as ISG-Bench's; None tells it from the first item.

    Items are not filtered by split here; the runner does that. An item's id is its
    ``id``, else its ``extra_info.index``, else its 0-based position; ids must be unique.
    ``image_num``, ``tools`` and ``split`` may stand at the top level or inside
    ``extra_info``; the top level wins, since that is where a person editing a file puts
    an override. The item's other fields go, JSON-safe, into ``extra`` (bytes as a note of
    their size). Errors name items by line (JSONL) or by 0-based position (JSON, Parquet).
    """
    path = Path(path)
    records = _records(path)
    if not records:
        raise DatasetError(f"{path}: the dataset has no items")
    read = _reader(format, records[0][1])
    base_dir, image_dir = path.resolve().parent, Path(image_dir)
    items: list[EvalItem] = []
    first_seen: dict[str, str] = {}
    for position, (where, record) in enumerate(records):
        try:
            item = read(record, position, base_dir=base_dir, image_dir=image_dir)
        except ItemError as exc:
            raise DatasetError(f"{path}: {where}: {exc}") from None
        if item["id"] in first_seen:
            raise DatasetError(f"{path}: {where}: duplicate id {item['id']!r} "
                               f"(first at {first_seen[item['id']]})")
        first_seen[item["id"]] = where
        items.append(item)
    return items


def _reader(format: str | None, first: dict[str, Any]) -> Callable[..., EvalItem]:
    # Imported here: UEval's and ISG's readers raise this module's ItemError.
    from llmi.evaluation.isg import is_isg, isg_item
    from llmi.evaluation.ueval import RUBRIC_FIELDS, ueval_item

    if format is None:
        if {"total_uid", "conversations"} <= first.keys():
            return _opening_item
        if is_isg(first):
            return isg_item
        return ueval_item if set(RUBRIC_FIELDS) <= first.keys() else _item
    if format == OPENING:
        return _opening_item
    if format == UEVAL:
        return ueval_item
    if format == ISG:
        return isg_item
    raise DatasetError(f"unknown dataset format {format!r} (known: {OPENING}, {UEVAL}, {ISG})")


def _opening_item(record: dict[str, Any], position: int, *, base_dir: Path,
                  image_dir: Path) -> EvalItem:
    """An OpenING item, read as its own generation script frames the task.

    The prompt is the input steps' text, ``<BEGIN>`` and ``<image>`` removed, each step's
    image labelled where it follows the step's text, after OpenING's sentence that asks
    for as many text-image pairs as the reference output has; those pairs are the images
    asked for. Image paths resolve against the dataset's folder, as its scripts resolve
    them against ``OpenING-benchmark/``. An image that cannot be read gives the item an
    ``error`` rather than stopping the dataset.
    """
    if record.get("total_uid") is None:
        raise ItemError("no total_uid")
    steps, reference = _opening_steps(record, 0, "input"), _opening_steps(record, 1, "output")
    texts, shown = [], 0
    for step in steps:
        text = opening_text(step)
        if step.get("image") is not None:
            text = f"{text} {prompts.OPENING_INPUT_IMAGE.format(index=shown)}".strip()
            shown += 1
        texts.append(text)
    images, errors = save_images([step["image"] for step in steps if step.get("image") is not None],
                                 "input", base_dir=base_dir, image_dir=image_dir)
    item = EvalItem(
        id=str(record["total_uid"]),
        prompt=prompts.OPENING_PAIRS.format(count=len(reference)) + "\n\n".join(texts),
        images=images,
        image_num=len(reference),
        tools=[],
        split="",
        criteria=[],
        data_source=OPENING,
        extra={key: _json_safe(value) for key, value in record.items() if key != "total_uid"},
    )
    if errors:
        item["error"] = "; ".join(errors)
    return item


def opening_text(step: dict[str, Any]) -> str:
    """An OpenING step's text without its ``<BEGIN>`` and ``<image>`` marks, as OpenING's
    judge scripts read it."""
    return _PLACEHOLDER.sub("", _BEGIN.sub(" ", _string(step.get("text")))).strip()


def _opening_steps(record: dict[str, Any], turn: int, key: str) -> list[dict[str, Any]]:
    """``conversations[turn][key]``: a list of ``{text, image}`` steps."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or len(conversations) <= turn \
            or not isinstance(conversations[turn], dict):
        raise ItemError(f"conversations[{turn}] is missing")
    steps = conversations[turn].get(key)
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise ItemError(f"conversations[{turn}].{key} must be a list of {{text, image}} steps")
    return steps


def prompt_text(value: Any) -> str:
    """The text a prompt asks, from a string or a list of chat messages.

    For messages it is the text of the last user message, its text parts joined by a
    blank line. System messages are ignored: llmi's planner brings its own system prompt,
    which replaces LLM-I's. ``<image>`` placeholders are removed; the images they stand
    for are input images. Raises ItemError.
    """
    messages = _messages(value)
    users = [message for message in messages if message.get("role") == "user"]
    if not users:
        raise ItemError("the prompt has no user message")
    text = "\n\n".join(part.strip() for part in _parts(users[-1].get("content"))
                       if isinstance(part, str) and part.strip())
    if not text:
        raise ItemError("the prompt has no text")
    return text


def image_bytes(value: Any, *, base_dir: Path) -> bytes:
    """The bytes of an image given in any form a dataset uses, checked to be an image.

    ``value`` may be a file path (relative paths resolve against ``base_dir``), a
    ``file://`` URI, raw bytes, a base64 string, a ``data:`` URL, a ``PIL.Image.Image``
    (encoded as PNG), a Hugging Face Image dict ``{"bytes": ..., "path": ...}``, or a chat
    message image part (``{"type": "image_url", "image_url": {"url": ...}}``,
    ``{"type": "image", "image": ...}``). Remote URLs are refused: evaluations run offline.
    Raises ItemError.
    """
    data = _raw_bytes(_plain(value), base_dir)
    try:
        inspect_image(data)
    except NotAnImage as exc:
        raise ItemError(str(exc)) from None
    return data


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The file's items, each with where it is (``line N`` or ``item N``) for messages."""
    readers: dict[str, Callable[[Path], list[tuple[str, Any]]]] = {
        ".jsonl": _jsonl, ".json": _json, ".parquet": _parquet,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path}: unknown dataset format {path.suffix!r} "
                           "(use .jsonl, .json or .parquet)")
    rows = reader(path)
    for where, record in rows:
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: {where}: an item must be an object, "
                               f"not {type(record).__name__}")
    return rows


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None


def _jsonl(path: Path) -> list[tuple[str, Any]]:
    rows = []
    # Not splitlines(): JSON strings may hold U+2028 and other characters it splits on.
    for number, line in enumerate(_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {number}: bad JSON: {exc.msg} "
                               f"(column {exc.colno})") from None
    return rows


def _json(path: Path) -> list[tuple[str, Any]]:
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: bad JSON: {exc.msg} (line {exc.lineno}, "
                           f"column {exc.colno})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of items, not {type(data).__name__}")
    return [(f"item {index}", record) for index, record in enumerate(data)]


def _parquet(path: Path) -> list[tuple[str, Any]]:
    """Rows as plain Python; pyarrow keeps a missing int as None where pandas makes NaN."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from None
    # pandas keeps an unnamed index that is not a range as a column; it is not part of the items.
    table = table.drop_columns([name for name in table.column_names
                                if name.startswith("__index_level_")])
    return [(f"item {index}", record) for index, record in enumerate(table.to_pylist())]


def _item(record: dict[str, Any], position: int, *, base_dir: Path,
          image_dir: Path) -> EvalItem:
    extra_info = record.get("extra_info")
    if extra_info is None:
        extra_info = {}
    if not isinstance(extra_info, dict):
        raise ItemError(f"extra_info must be an object, not {type(extra_info).__name__}")
    settings = {name: _setting(record, extra_info, name) for name in _SETTINGS}
    if record.get("prompt") is None:
        raise ItemError("no prompt")
    criteria, rubric_keys = _criteria(record)
    return EvalItem(
        id=_item_id(record, extra_info, position),
        prompt=prompt_text(record["prompt"]),
        images=[_save(data, image_dir) for data in _input_images(record, base_dir)],
        image_num=_image_num(settings["image_num"]),
        tools=_tools(settings["tools"]),
        split=_string(settings["split"]),
        criteria=criteria,
        data_source=_string(record.get("data_source")),
        extra=_extra(record, extra_info, rubric_keys),
    )


def _setting(record: dict[str, Any], extra_info: dict[str, Any], name: str) -> Any:
    value = record.get(name)
    return extra_info.get(name) if value is None else value


def _item_id(record: dict[str, Any], extra_info: dict[str, Any], position: int) -> str:
    value = record.get("id")
    if value is None:
        value = extra_info.get("index")
    return str(position if value is None else value)


def _image_num(value: Any) -> int:
    """LLM-I's count: -1 none, 0 any (also when the item does not say), 99 at least one."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ItemError(f"image_num must be an integer, not {value!r}")
    if value < -1:
        raise ItemError(f"image_num must be -1 (none), 0 (any), 99 (at least one) "
                        f"or a count, not {value}")
    return value


def _tools(value: Any) -> list[str]:
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ItemError(f"tools must be a list of source names or a comma-separated string, "
                        f"not {value!r}")
    return [name.strip() for name in names if name.strip()]


def _string(value: Any) -> str:
    return "" if value is None else str(value)


def _criteria(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The rubric, and the ``rN`` keys it came from (none when there is a ``criteria`` list).

    Empty ``rN`` values are skipped: a Parquet table gives every row all the columns.
    """
    listed = record.get("criteria")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
            raise ItemError("criteria must be a list of strings")
        return listed, []
    numbered = sorted((int(match[1]), key) for key in record
                      if (match := _RUBRIC.fullmatch(key)))
    keys = [key for _, key in numbered]
    return [str(record[key]) for key in keys if record[key] not in (None, "")], keys


def _input_images(record: dict[str, Any], base_dir: Path) -> Iterator[bytes]:
    for index, value in enumerate(_image_values(record)):
        try:
            yield image_bytes(value, base_dir=base_dir)
        except ItemError as exc:
            raise ItemError(f"input image {index}: {exc}") from None


def _image_values(record: dict[str, Any]) -> list[Any]:
    """The item's input images in the order the prompt shows them.

    Image parts of the messages are taken where they stand; each ``<image>`` placeholder
    (or bare ``{"type": "image"}`` part) takes the next entry of the ``images`` column, as
    verl does; entries no placeholder took follow, in column order.
    """
    column = record.get("images")
    column = [] if column is None else column if isinstance(column, list) else [column]
    values, taken = [], 0
    for message in _messages(record["prompt"]):
        for part in _parts(message.get("content")):
            if isinstance(part, str):
                continue
            if part.get("type") == "image" and part.get("image") is None:
                if taken == len(column):
                    raise ItemError(f"the prompt has more image placeholders than the "
                                    f"{len(column)} entries of its images column")
                values.append(column[taken])
                taken += 1
            else:
                values.append(part)
    return values + column[taken:]


def _messages(value: Any) -> list[dict[str, Any]]:
    """A prompt as chat messages; a string is one user message."""
    value = _plain(value)
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(message, dict) for message in value):
        return value
    raise ItemError("the prompt must be a string or a list of chat messages "
                    f"({{'role': ..., 'content': ...}}), not {_kind(value)}")


def _parts(content: Any) -> Iterator[str | dict[str, Any]]:
    """A message's content as text parts (placeholders removed) and image parts."""
    if isinstance(content, str):
        yield from _split_text(content)
    elif isinstance(content, list):
        for part in content:
            yield from _part(part)
    else:
        raise ItemError(f"message content must be text or a list of parts, not {_kind(content)}")


def _part(part: Any) -> Iterator[str | dict[str, Any]]:
    if isinstance(part, str):
        yield from _split_text(part)
    elif isinstance(part, dict) and part.get("type") == "text":
        yield from _split_text(_string(part.get("text")))
    elif isinstance(part, dict) and part.get("type") in ("image", "image_url"):
        yield part
    else:
        kind = part.get("type") if isinstance(part, dict) else _kind(part)
        raise ItemError(f"unsupported message part {kind!r} (use text, image or image_url)")


def _split_text(text: str) -> Iterator[str | dict[str, Any]]:
    """The text without its placeholders, then a bare image part for each placeholder."""
    yield _PLACEHOLDER.sub("", text)
    for _ in range(text.count(_IMAGE_TOKEN)):
        yield _BARE_IMAGE


def _raw_bytes(value: Any, base_dir: Path) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Image.Image):
        return _png(value)
    if isinstance(value, dict):
        return _raw_bytes(_dict_image(value), base_dir)
    if isinstance(value, str):
        return _string_image(value.strip(), base_dir)
    raise ItemError(f"not an image value: {_kind(value)}")


def _dict_image(value: dict[str, Any]) -> Any:
    """What an image dict holds: HF Image feature, or a chat message image part."""
    url = value.get("image_url")
    for found in (value.get("bytes"), value.get("image"),
                  url.get("url") if isinstance(url, dict) else url, value.get("path")):
        if found is not None:
            return found
    raise ItemError(f"an image object with no image in it (keys: {', '.join(map(str, value))})")


def _string_image(value: str, base_dir: Path) -> bytes:
    if value.startswith("data:"):
        return _data_url(value)
    if value.startswith(("http://", "https://")):
        raise ItemError(f"remote images are not fetched ({value[:80]}): "
                        "download it and give its path")
    if value.startswith("file://"):
        return _file(Path(url2pathname(urlsplit(value).path)), base_dir)
    if _BASE64.fullmatch(value):
        return _base64(value)
    return _file(Path(value), base_dir)


def _data_url(value: str) -> bytes:
    header, comma, payload = value.partition(",")
    if not comma:
        raise ItemError("bad data URL: no comma before the data")
    return _base64(payload) if header.endswith(";base64") else unquote_to_bytes(payload)


def _base64(value: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error as exc:
        raise ItemError(f"bad base64: {exc}") from None


def _file(path: Path, base_dir: Path) -> bytes:
    """A relative path is looked for next to the dataset, then in the working folder
    (LLMI-Bench's scripts open theirs from where they are run)."""
    path = path.expanduser()
    found = base_dir / path
    if not found.exists() and not path.is_absolute() and path.exists():
        found = path
    try:
        return found.read_bytes()
    except FileNotFoundError:
        raise ItemError(f"image file not found: {found}") from None
    except OSError as exc:
        raise ItemError(f"cannot read image file {found}: {exc.strerror or exc}") from None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    try:
        image.save(buffer, "PNG")
    except OSError:
        # Modes PNG cannot hold, such as CMYK.
        buffer = io.BytesIO()
        image.convert("RGBA").save(buffer, "PNG")
    return buffer.getvalue()


def save_images(values: Sequence[Any], what: str, *, base_dir: Path,
                image_dir: Path) -> tuple[list[str], list[str]]:
    """Checked copies in ``image_dir`` of images given in any form ``image_bytes`` reads:
    the paths of those that could be read, and for each that could not, an error naming it
    as ``what``'s image."""
    saved, errors = [], []
    for value in values:
        try:
            saved.append(_save(image_bytes(value, base_dir=base_dir), image_dir))
        except ItemError as exc:
            errors.append(f"{what} image {value!r}: {exc}")
    return saved, errors


def _save(data: bytes, image_dir: Path) -> str:
    """Write the image as ``<sha256>.<ext>`` (once) and return its path."""
    mime, _, _ = inspect_image(data)
    image_dir = image_dir.resolve()
    path = image_dir / f"{hashlib.sha256(data).hexdigest()}{extension(mime)}"
    if not path.exists():
        image_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=image_dir, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
    return str(path)


def _extra(record: dict[str, Any], extra_info: dict[str, Any],
           rubric_keys: list[str]) -> dict[str, Any]:
    """The fields the item has beyond ``EvalItem``'s own, JSON-safe."""
    used = _OWN_FIELDS | set(rubric_keys)
    extra = {key: _json_safe(value) for key, value in record.items() if key not in used}
    rest = {key: value for key, value in extra_info.items() if key not in (*_SETTINGS, "index")}
    if rest:
        extra["extra_info"] = _json_safe(rest)
    return extra


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (as verl and pandas hand out cells) as plain Python."""
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray | list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, list) and value:
        return "a list of " + ", ".join(sorted({type(item).__name__ for item in value}))
    return type(value).__name__
