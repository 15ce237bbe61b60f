"""Content-addressed store for image bytes.

Graph state holds only ``ImageRef`` records; the bytes live here, addressed by
their sha256, so a checkpoint of a many-image document stays small.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from PIL import Image

from llmi.state import ImageRef

# MPO is how Pillow names the multi-picture JPEGs many cameras write.
_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
IMAGE_FORMATS = tuple(_MIME)
"""Pillow format names of the images llmi accepts."""
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}

# Pixel cap checked from the header before anything decodes the image.
MAX_PIXELS = 64_000_000


class NotAnImage(ValueError):
    """Bytes that do not decode as a supported image."""


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """Return (mime, width, height) from the image header; raise NotAnImage."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            mime = _MIME.get(img.format or "")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise NotAnImage(f"not a readable image: {exc}") from None
    if mime is None:
        raise NotAnImage("unsupported image format (use PNG, JPEG, WebP or GIF)")
    if width * height > MAX_PIXELS:
        raise NotAnImage(f"image too large: {width}x{height} pixels")
    return mime, width, height


def extension(mime: str) -> str:
    return _EXT.get(mime, ".bin")


class ArtifactStore:
    """A folder of image files named by their sha256."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def put(self, data: bytes) -> ImageRef:
        mime, width, height = inspect_image(data)
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest, mime)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
        return ImageRef(sha256=digest, uri=path.as_uri(), mime=mime, width=width, height=height)

    def put_file(self, path: str | os.PathLike[str]) -> ImageRef:
        return self.put(Path(path).read_bytes())

    def find(self, digest: str) -> ImageRef | None:
        """The stored image with this sha256, if there is one."""
        stored = next((self.root / digest[:2]).glob(f"{digest}.*"), None) if digest else None
        return self.put_file(stored) if stored else None

    def get(self, ref: ImageRef) -> bytes:
        data = self.path(ref).read_bytes()
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise ValueError(f"artifact {ref['sha256'][:12]} is corrupt")
        return data

    def path(self, ref: ImageRef) -> Path:
        return self._path(ref["sha256"], ref["mime"])

    def _path(self, digest: str, mime: str) -> Path:
        return self.root / digest[:2] / f"{digest}{extension(mime)}"
