"""``results.jsonl``: one line per finished item, written as each item ends.

A line is flushed and synced before the next item is counted as done, so a run that
is killed loses at most the items in flight. A line cut short by the kill is dropped
when the file is opened again. An item may have several lines (an error, then a
retry); the last one counts.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from llmi.evaluation.records import ResultLine


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
