"""The check every made image passes: it decodes, is big enough and is not one flat colour.

Dispatch runs it on each image as the image arrives, on a pool of its own: the check
overlaps the tools still running, and an edit of the image starts without waiting for
it. An image that fails is its slot's failure, of kind ``check``.
"""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import Future, wait

from PIL import Image, UnidentifiedImageError

from llmi.state import ImageResult, failed_check
from llmi.workers import WORKERS

MIN_SIDE = 64
# Largest per-channel spread still counted as one flat colour (JPEG noise on a blank frame).
FLAT_SPREAD = 3


def image_problem(data: bytes) -> str | None:
    """Why an image is unusable ("is too small ..."), or None when it passes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if min(img.size) < MIN_SIDE:
                return f"is too small ({img.width}x{img.height}, needs {MIN_SIDE}x{MIN_SIDE})"
            # A JPEG decodes whole at an eighth of its size, which is all the checks need.
            img.draft("RGB", (img.width // 8, img.height // 8))
            img.load()
            flat = _is_flat(img if img.mode == "RGB" else img.convert("RGB"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return f"does not decode ({exc})"
    return "is one flat colour" if flat else None


def _is_flat(img: Image.Image) -> bool:
    """Whether no channel of the RGB image spreads more than FLAT_SPREAD."""
    # Most images spread that much along their middle row already, which spares them a
    # pass over every pixel.
    middle = img.crop((0, img.height // 2, img.width, img.height // 2 + 1))
    return _spreads_little(middle) and _spreads_little(img)


def _spreads_little(img: Image.Image) -> bool:
    return all(high - low <= FLAT_SPREAD for low, high in img.getextrema())


class ImageChecks:
    """One round's checks: each starts as its image is made and is read when the round ends.

    At most as many run at once as there are processors; the round ends when they have.
    """

    def __init__(self) -> None:
        self._decoding = threading.BoundedSemaphore(os.cpu_count() or 1)
        self._found: dict[int, Future[str | None]] = {}
        self._over = False

    def __enter__(self) -> ImageChecks:
        return self

    def __exit__(self, *exc: object) -> None:
        self._over = True
        wait(list(self._found.values()))

    def start(self, slot: int, data: bytes) -> None:
        """Check the image just made for ``slot``."""
        # After the round (a slot that overran its deadline) nothing is checked: the
        # abandoned slot's result is read by no one.
        if not self._over:
            self._found[slot] = WORKERS.submit(self._check, data)

    def _check(self, data: bytes) -> str | None:
        with self._decoding:
            return image_problem(data)

    def outcome(self, result: ImageResult) -> ImageResult:
        """``result`` as its image's check left it: failed when the image did not pass."""
        found = self._found.get(result["slot"]) if result["ok"] else None
        problem = found.result() if found else None
        return failed_check(result, problem) if problem else result
