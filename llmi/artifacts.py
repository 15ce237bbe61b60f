"""Content-addressed store for image bytes.

Graph state holds only ``ImageRef`` records; the bytes live here, addressed by
their sha256, so a checkpoint of a many-image document stays small. Whatever the
source, an image is stored as a still, upright, 8-bit PNG or JPEG, so every reader
(HTML, Markdown, vision judges, edit backends) gets the same picture and the ref holds
its size as shown.

What the store trusts: only bytes it has checked. A file is served only when it is a
regular file (a symbolic link is not followed) whose bytes hash to the sha256 it is named
by, so a file that something else wrote or replaced in the folder (a tool process, a
half-copied backup) is never handed out as the image of that sha256. ``get`` raises
CorruptArtifact for such a file; ``find`` and ``put`` remove or replace it, with a warning.
Writes go through a temporary file renamed into place, so no reader sees half an image,
and a write that fails (a full disk) leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import math
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from llmi.state import ImageRef

# MPO is how Pillow names the multi-picture JPEGs many cameras write.
_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}


def _registered(formats: tuple[str, ...]) -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in formats if name in Image.OPEN)


IMAGE_FORMATS = _registered(tuple(_MIME))
"""The Pillow plugins that open the images llmi accepts, for ``Image.open(formats=...)``.

Only those this Pillow registers: current Pillow opens MPO files through its JPEG
plugin and has no "MPO" opener, and naming a missing one makes ``Image.open`` raise
KeyError for every image the plugins before it do not open.
"""
IMAGE_SUFFIXES = frozenset(
    suffix for suffix, name in Image.registered_extensions().items() if name in _MIME
)
"""File name suffixes of those formats (``.jpg``, ``.jpeg``, ``.mpo``, ``.webp``, ...)."""

STORED_FORMATS = frozenset({"PNG", "JPEG", "MPO"})
"""The formats the store keeps as they are: every reader of stored images takes them
(browsers, Markdown viewers, the vision judges' data URLs, image edit uploads). WebP is
not among them, as llama.cpp's server does not read it (Ollama transcodes WebP to PNG
before handing it over, ollama/ollama#17755), nor GIF, which Gemini does not take (its
image understanding takes PNG, JPEG, WebP, HEIC and HEIF)."""
_STORED_MODES = frozenset({"1", "L", "P", "RGB", "RGBA"})
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBa"})
JPEG_QUALITY = 90
"""For re-encoding images that were lossy already; lossless ones become PNG."""

# Pixel cap checked from the header before anything decodes the image.
MAX_PIXELS = 64_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
# Keywords of text chunks that Pillow files under the info keys its getexif reads an
# orientation from ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp").
_PNG_ORIENTATION_KEYWORDS = frozenset(
    {b"exif", b"Raw profile type exif", b"XML:com.adobe.xmp", b"xmp"}
)
_PNG_KEYWORD_BYTES = 80  # a keyword is 1 to 79 bytes, then a NUL
# EXIF orientations that turn the image a quarter: its width and height swap.
_TURNING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# O_NONBLOCK: opening a FIFO planted under a stored name returns at once instead of waiting.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_DIGEST = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


class NotAnImage(ValueError):
    """Bytes that do not decode as a supported image."""


class CorruptArtifact(ValueError):
    """A stored file that is not what its name says: a link, not a regular file, or bytes
    that hash to another sha256."""


def is_digest(value: object) -> bool:
    """Whether ``value`` is a sha256 as the store names files: 64 lowercase hex digits."""
    return isinstance(value, str) and bool(_DIGEST.fullmatch(value))


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file at ``path``, without following a symbolic link there.

    Raises FileNotFoundError when there is none, CorruptArtifact when it is a link or not
    a regular file.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptArtifact(f"{path} is a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptArtifact(f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    finally:
        os.close(fd)


OUTPUT_MODE = 0o666
"""A document's files (what the assembler and the exports write) are made as a plain
``open`` makes them: this, less the umask; the store's own files are the user's alone."""


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` whole, or not at all (see ``atomic_file``)."""
    with atomic_file(path, mode=mode) as file:
        file.write(data)


@contextmanager
def atomic_file(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file open for writing that appears at ``path`` whole when the block ends, or not
    at all.

    It is written under a hidden temporary name in the same folder (made when missing) and
    renamed into place, so no reader sees part of it; when the block or a write fails, the
    temporary file is removed. The file gets ``mode`` less the umask: the store's files are
    the user's alone by default. An error that names no file, or the temporary one (a full
    disk, a refused write), is raised naming ``path``.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = _create(temporary, mode)
    except OSError as exc:
        _raise_naming(exc, path, temporary)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
        os.replace(temporary, path)
    except BaseException as exc:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _raise_naming(exc, path, temporary)
        raise


def _create(path: Path, mode: int) -> int:
    """A new file at ``path``, open for writing; its folder is made when missing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, mode)
    except (FileNotFoundError, NotADirectoryError):
        # Made only now, as a mkdir of a folder that is there still locks its parent; it
        # raises as it did before the open for a file where the folder should be.
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, mode)


def _raise_naming(exc: OSError, path: Path, temporary: Path) -> NoReturn:
    """Raise ``exc``, or the same error naming ``path`` where it named no file or
    ``temporary``."""
    if exc.errno is None or exc.filename not in (None, str(temporary)):
        raise exc
    raise OSError(exc.errno, exc.strerror, str(path)) from exc  # the subclass of its errno


def inspect_image(data: bytes, *, decode: bool = False) -> tuple[str, int, int]:
    """Return (mime, width, height) from the image header; raise NotAnImage.

    With ``decode`` the pixels are decoded as well, so that data cut short or broken past
    its header (a truncated PNG or JPEG, whose header alone reads fine) raises NotAnImage
    too. The pixel cap is checked from the header before anything decodes.
    """
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            mime = _MIME[img.format or ""]
            _check_pixels(width, height)
            if decode:
                img.load()
    except NotAnImage:
        raise
    except Exception as exc:  # Pillow raises many exception types on malformed input
        raise _unreadable(exc) from None
    return mime, width, height


def shown_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the image as it is shown: turned by its EXIF orientation, as the
    store keeps it. Raises NotAnImage."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            turned = _orientation(img, data) in _TURNING_ORIENTATIONS
    except Exception as exc:  # Pillow raises many exception types on malformed input
        raise _unreadable(exc) from None
    return (height, width) if turned else (width, height)


def _unreadable(exc: Exception) -> NotAnImage:
    if isinstance(exc, UnidentifiedImageError):  # its message names only a BytesIO object
        return NotAnImage("not a readable image: not PNG, JPEG, WebP or GIF data")
    return NotAnImage(f"not a readable image: {exc}")


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise NotAnImage(f"image too large: {width}x{height} pixels")


@dataclass(frozen=True)
class Normalised:
    """An image as the store keeps it, with its type and size as ``inspect_image`` reads
    them."""

    data: bytes
    mime: str
    width: int
    height: int


def normalise_image(data: bytes, *, max_pixels: int = 0) -> bytes:
    """The image as the store keeps it: a still, upright, 8-bit PNG or JPEG.

    ``data`` comes back unchanged when it already is one (a JPEG is not re-encoded for
    nothing). Otherwise the first frame is turned upright by its EXIF orientation, brought
    to RGB, RGBA or L (CMYK through its ICC profile, 16 bits scaled to 8, palette or grey
    with transparency to RGBA) and saved as PNG, or as JPEG when the source was lossy and
    has no alpha, so a photo stays photo-sized and a lossless image loses nothing.
    With ``max_pixels``, an image of more pixels is also scaled down to at most that many,
    its aspect ratio kept. The pixel cap is checked from the header first. Raises NotAnImage.
    """
    return normalised(data, max_pixels=max_pixels).data


def normalised(data: bytes, *, max_pixels: int = 0) -> Normalised:
    """``normalise_image``, with the type and size of the image it gives: those of ``data``
    when that comes back unchanged, read from its header once."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            _check_pixels(*img.size)
            oversized = 0 < max_pixels < img.width * img.height
            if not oversized and _is_stored_form(img, data):
                return Normalised(data, _MIME[img.format or ""], img.width, img.height)
            encoded = _reencoded(img, lossy=_is_lossy(img, data), max_pixels=max_pixels)
    except NotAnImage:
        raise
    except Exception as exc:  # Pillow raises many exception types on malformed input
        raise _unreadable(exc) from None
    return Normalised(encoded, *inspect_image(encoded))


def _is_stored_form(img: Image.Image, data: bytes) -> bool:
    return (
        img.format in STORED_FORMATS
        and img.mode in _STORED_MODES
        and "transparency" not in img.info
        and not _is_animation(img)
        and _orientation(img, data) == 1
    )


def _orientation(img: Image.Image, data: bytes) -> object:
    """The image's EXIF orientation, 1 (upright) when it has none.

    Pillow's ``getexif`` decodes a whole PNG first, as its EXIF may follow the pixels; a
    PNG with no chunk that ``getexif`` reads is known to be upright without that.
    """
    if img.format == "PNG" and not _png_may_orient(data):
        return 1
    return img.getexif().get(ExifTags.Base.Orientation, 1)


def _png_may_orient(data: bytes) -> bool:
    """Whether the PNG has a chunk Pillow reads an orientation from: ``eXIf``, or a text
    chunk (``tEXt``, ``zTXt``, ``iTXt``) whose keyword Pillow files under the ``info`` keys
    ``getexif`` reads. True also when the chunks cannot be walked to ``IEND``."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND":
            return False
        if kind == b"eXIf":
            return True
        if kind in _PNG_TEXT_CHUNKS:
            keyword = data[pos + 8 : pos + 8 + min(length, _PNG_KEYWORD_BYTES)].split(b"\0", 1)[0]
            if keyword in _PNG_ORIENTATION_KEYWORDS:
                return True
        pos += 12 + length  # length, type, data, CRC
    return True


def _is_animation(img: Image.Image) -> bool:
    # An MPO's further pictures are not frames: JPEG readers show its first picture.
    return getattr(img, "n_frames", 1) > 1 and img.format != "MPO"


def _is_lossy(img: Image.Image, data: bytes) -> bool:
    if img.format in ("JPEG", "MPO"):
        return True
    return img.format == "WEBP" and _webp_first_image_chunk(data) == b"VP8 "


def _webp_first_image_chunk(data: bytes) -> bytes | None:
    """``VP8 `` (lossy) or ``VP8L`` (lossless): the chunk of a WebP's first image."""
    pos = 12  # after "RIFF", the size and "WEBP"
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4]
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc
        if fourcc == b"ANMF":  # an animation frame: 16 bytes of frame header, then its chunks
            pos += 8 + 16
            continue
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)
    return None


def _reencoded(img: Image.Image, *, lossy: bool, max_pixels: int = 0) -> bytes:
    if 0 < max_pixels < img.width * img.height:
        # A JPEG then decodes at a fraction of its size (1/2, 1/4 or 1/8), no smaller than
        # the size it is scaled to; other formats ignore this.
        scale = math.sqrt(max_pixels / (img.width * img.height))
        img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
    frame = ImageOps.exif_transpose(img)  # a copy of the first frame, upright
    icc = frame.info.get("icc_profile")
    if frame.mode == "CMYK":
        frame, icc = _cmyk_to_rgb(frame, icc), None
    frame = _web_mode(frame)
    if 0 < max_pixels < frame.width * frame.height:
        frame = _scaled_down(frame, max_pixels)
    options = {"exif": frame.info.get("exif", b""), "icc_profile": icc}
    out = io.BytesIO()
    if lossy and frame.mode in ("L", "RGB"):
        frame.save(out, "JPEG", quality=JPEG_QUALITY, **options)
    else:
        frame.save(out, "PNG", **options)
    return out.getvalue()


def _scaled_down(frame: Image.Image, max_pixels: int) -> Image.Image:
    """The frame at most ``max_pixels`` large, its aspect ratio kept (to a pixel)."""
    scale = math.sqrt(max_pixels / (frame.width * frame.height))
    size = (max(1, math.floor(frame.width * scale)), max(1, math.floor(frame.height * scale)))
    if frame.mode in ("1", "P"):  # would resize by nearest neighbour
        frame = frame.convert("L" if frame.mode == "1" else "RGB")
    # reducing_gap: a quick integer reduce() first, then Lanczos for the rest.
    return frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _cmyk_to_rgb(frame: Image.Image, icc: bytes | None) -> Image.Image:
    """Through the image's own CMYK profile when it has one, as print files do."""
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(
                frame, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: the plain conversion below
    return frame.convert("RGB")


def _web_mode(frame: Image.Image) -> Image.Image:
    """The frame in one of the stored modes; alpha and transparency become RGBA."""
    if frame.mode in _SIXTEEN_BIT:
        # convert("L") would clip every value over 255 to white instead of scaling.
        return frame.convert("I").point(lambda value: value / 256).convert("L")
    if frame.mode in _ALPHA_MODES or "transparency" in frame.info:
        return frame.convert("RGBA")
    return frame if frame.mode in _STORED_MODES else frame.convert("RGB")


def extension(mime: str) -> str:
    return _EXT.get(mime, ".bin")


class ArtifactStore:
    """A folder of image files named by their sha256."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def put(self, data: bytes, *, max_pixels: int = 0) -> ImageRef:
        """Store the image normalised (see ``normalise_image``); raises NotAnImage."""
        return self.put_normalised(data, max_pixels=max_pixels)[0]

    def put_normalised(self, data: bytes, *, max_pixels: int = 0) -> tuple[ImageRef, bytes]:
        """Store the image normalised; its ref and the bytes as stored."""
        image = normalised(data, max_pixels=max_pixels)
        return self._keep(image), image.data

    def _keep(self, image: Normalised) -> ImageRef:
        digest = hashlib.sha256(image.data).hexdigest()
        path = self._path(digest, image.mime)
        if not self._holds(path, image.data):
            write_atomic(path, image.data)
        return ImageRef(sha256=digest, uri=path.as_uri(), mime=image.mime, width=image.width,
                        height=image.height)

    def _holds(self, path: Path, data: bytes) -> bool:
        """Whether ``path`` holds ``data`` already; a file there that does not is reported,
        as it is about to be replaced."""
        try:
            held = read_regular(path)
        except FileNotFoundError:
            return False
        except CorruptArtifact as exc:
            log.warning("artifact store: replacing %s: %s", path, exc)
            return False
        if held != data:
            log.warning("artifact store: replacing %s: its bytes are not the image named", path)
        return held == data

    def put_file(self, path: str | os.PathLike[str]) -> ImageRef:
        return self.put(Path(path).read_bytes())

    def find(self, digest: str) -> ImageRef | None:
        """The stored image with this sha256, if there is one intact."""
        found = self.load(digest)
        return found[0] if found else None

    def load(self, digest: str) -> tuple[ImageRef, bytes] | None:
        """The stored image with this sha256 and its bytes, checked; None when there is none
        intact (a file that is not the image its name says is removed, with a warning)."""
        if not is_digest(digest):
            return None
        # Any suffix: an image kept before normalisation (a WebP, a GIF) keeps its sha256.
        for path in sorted((self.root / digest[:2]).glob(f"{digest}.*")):
            if found := self._intact(path, digest):
                return found
        return None

    def _intact(self, path: Path, digest: str) -> tuple[ImageRef, bytes] | None:
        try:
            data = self._checked(path, digest)
            mime, width, height = inspect_image(data)
            if path != self._path(digest, mime):
                raise CorruptArtifact(f"{path.name} holds {mime}, stored under another name")
        except FileNotFoundError:
            return None
        except (CorruptArtifact, NotAnImage) as exc:
            self._discard(path, exc)
            return None
        ref = ImageRef(sha256=digest, uri=path.as_uri(), mime=mime, width=width, height=height)
        return ref, data

    def _discard(self, path: Path, problem: Exception) -> None:
        log.warning("artifact store: removing %s, not an image llmi stored there: %s", path,
                    problem)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # a folder under an image's name, say: left, never served
            log.warning("artifact store: cannot remove %s: %s", path, exc)

    def get(self, ref: ImageRef) -> bytes:
        """The image's bytes; raises FileNotFoundError when it is not stored, CorruptArtifact
        when the file under its name is not its image."""
        return self._checked(self.path(ref), ref["sha256"])

    def _checked(self, path: Path, digest: str) -> bytes:
        data = read_regular(path)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise CorruptArtifact(
                f"artifact {digest[:12]} is corrupt: the bytes of {path} hash to {actual[:12]}"
            )
        return data

    def path(self, ref: ImageRef) -> Path:
        return self._path(ref["sha256"], ref["mime"])

    def _path(self, digest: str, mime: str) -> Path:
        return self.root / digest[:2] / f"{digest}{extension(mime)}"
