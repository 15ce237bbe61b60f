"""``results.jsonl``: one line per finished item, written as each item ends.

A line is flushed and synced before the next item is counted as done, so a run that
is killed loses at most the items in flight. A line cut short by the kill is dropped
when the file is opened again. An item may have several lines (an error, then a
retry); the last one counts.

An OpenING evaluation also writes ``predictions.jsonl``: its documents in OpenING's own
output shape, for its judge scripts and IntJudge.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from llmi.artifacts import OUTPUT_MODE, ArtifactStore, write_atomic
from llmi.evaluation.protocols import LLMI
from llmi.evaluation.records import Document, OutputStep, ResultLine
from llmi.evaluation.report import safe_name
from llmi.state import ImageRef

PREDICTIONS = "predictions.jsonl"


class ResultsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_line(path)

    def read(self) -> dict[str, ResultLine]:
        """The last line of every item, by id."""
        if not self.path.exists():
            return {}
        lines: dict[str, ResultLine] = {}
        with open(self.path, encoding="utf-8") as file:
            for number, text in enumerate(file, 1):
                if text.strip():
                    line = _parse(text, self.path, number)
                    lines[line["id"]] = line
        return lines

    def append(self, line: ResultLine) -> None:
        text = json.dumps(line, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())


class ResultsError(ValueError):
    """``results.jsonl`` holds something other than results lines."""


def _parse(text: str, path: Path, number: int) -> ResultLine:
    try:
        line = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path}, line {number}, is not JSON: {exc}") from None
    if not isinstance(line, dict) or not isinstance(line.get("id"), str):
        raise ResultsError(f"{path}, line {number}, is not a results line (no item id)")
    # Lines written before protocols were recorded are llmi's.
    line.setdefault("protocol", LLMI)
    missing = [key for key in ResultLine.__annotations__ if key not in line]
    if missing:
        raise ResultsError(f"{path}, line {number}, is not a results line "
                           f"(no {', '.join(missing)})")
    return line  # type: ignore[return-value]


def _drop_torn_line(path: Path) -> None:
    """Cut a last line that has no newline: its writer was killed in the middle of it."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)


def output_steps(document: Document) -> list[OutputStep]:
    """The document as OpenING's steps: each image ends a step that holds the text before
    it; text after the last image is a step of its own."""
    results = {result["slot"]: result for result in document.get("results", [])}
    steps: list[OutputStep] = []
    text: list[str] = []
    for segment in document.get("segments", []):
        if segment["kind"] == "text":
            text.append(segment["text"])
        else:
            steps.append(OutputStep(text=_joined(text), result=results.get(segment["slot"])))
            text = []
    if _joined(text):
        steps.append(OutputStep(text=_joined(text), result=None))
    return steps


def image_of(step: OutputStep) -> ImageRef | None:
    result = step["result"]
    return result["image"] if result and result["ok"] else None


def write_predictions(out: Path, lines: Sequence[ResultLine], store: ArtifactStore) -> Path:
    """``out/predictions.jsonl``: each finished document in OpenING's output shape.

    As OpenING's ``gen_outputs`` hold them, every line is its item with the output
    replaced, and its images lie beside it as ``<total_uid>-o-<step>.jpg``; each item is
    also ``<total_uid>.json``, the file OpenING's judge scripts open.
    """
    path = out / PREDICTIONS
    records = [_prediction(out, line, store) for line in lines if line["status"] == "ok"]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_atomic(path, text.encode("utf-8"), mode=OUTPUT_MODE)
    return path


def jpeg(data: bytes, size: tuple[int, int] | None = None, *, quality: int = 95) -> bytes:
    """The image as JPEG, resized to ``size`` if given."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if size:
            image = image.resize(size)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _prediction(out: Path, line: ResultLine, store: ArtifactStore) -> dict[str, Any]:
    uid, extra = line["id"], line["item"]["extra"]
    name = safe_name(uid)
    outputs = []
    for index, step in enumerate(output_steps(line["document"])):
        ref, image = image_of(step), None
        if ref is not None:
            image = f"{name}-o-{index}.jpg"
            (out / image).write_bytes(jpeg(store.get(ref)))
        outputs.append({"text": step["text"], "image": image})
    record = {"total_uid": uid, **extra,
              "conversations": [extra["conversations"][0], {"output": outputs}]}
    (out / f"{name}.json").write_text(json.dumps(record, ensure_ascii=False, indent=4),
                                      encoding="utf-8")
    return record


def _joined(texts: Sequence[str]) -> str:
    return "\n\n".join(text.strip() for text in texts if text.strip())
