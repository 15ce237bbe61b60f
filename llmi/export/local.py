"""The one rule both exports follow for what a document may load: a file inside its folder."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("llmi.export")


def local_file(root: Path, path: Path) -> Path | None:
    """``path`` (relative to ``root``, or absolute) as a regular file inside ``root`` once
    every link is followed, else None."""
    try:
        resolved = (root / path).resolve()
    except (OSError, RuntimeError):  # a loop of links
        return None
    inside = resolved.is_relative_to(root.resolve())
    return resolved if inside and resolved.is_file() else None


def refused(export: str, reference: str, root: Path) -> None:
    """Say that ``export`` left out ``reference``: it is neither data nor a file in ``root``."""
    log.warning("%s: left out %s: a document may only use its own files (in %s)",
                export, reference[:200], root)
