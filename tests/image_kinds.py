"""Real image files of every kind web search and photo folders bring, written by Pillow.

Each is 300x400 when upright, its top half one colour and its bottom half another, so a
test can see that the stored image is upright, in the right colours and the first frame.
EXIF orientations follow the EXIF 2.3 specification (tag 0x0112): 6 is shown turned 90°
clockwise, 8 turned 90° counter-clockwise. Pillow writes CMYK JPEGs the Adobe way, with
inverted CMYK and an APP14 marker, as print workflows do.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import ExifTags, Image

from llmi.artifacts import ArtifactStore, inspect_image

WIDTH, HEIGHT = 300, 400
RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)
GREEN_INK = (0, 255, 0)
"""What red ink becomes through ``print_profile``."""
LOSSY_TOLERANCE = 40

RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class Kind:
    name: str
    suffix: str
    content_type: str
    data: bytes
    mime: str
    """Of the stored image."""
    top: RGBA
    bottom: RGBA
    """Expected colours; a colour with alpha 0 is checked for its alpha only."""
    kept: bool = False
    """Stored byte for byte as it came."""

    @property
    def file_name(self) -> str:
        return f"{self.name}{self.suffix}"


def halves(mode: str, top: object, bottom: object, size: tuple[int, int] = (WIDTH, HEIGHT)
           ) -> Image.Image:
    image = Image.new(mode, size, top)
    image.paste(Image.new(mode, (size[0], size[1] - size[1] // 2), bottom), (0, size[1] // 2))
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _opaque(rgb: tuple[int, int, int]) -> RGBA:
    return (*rgb, 255)


def _rotated_jpeg(orientation: int) -> bytes:
    """An upright picture stored turned, with the EXIF tag that turns it back."""
    undo = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(halves("RGB", RED, BLUE).transpose(undo), "JPEG", exif=exif, quality=95)


def _animation(fmt: str) -> bytes:
    first, second = halves("RGB", RED, BLUE), Image.new("RGB", (WIDTH, HEIGHT), GREEN)
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


def _sixteen_bit_png() -> bytes:
    grey = halves("I;16", 0xC000, 0x4000)
    return encode(grey, "PNG")


def _palette_png_with_transparency() -> bytes:
    image = halves("P", 0, 1)
    image.putpalette([*RED, *BLUE])
    return encode(image, "PNG", transparency=1)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


_D50 = b"".join(_s15(v) for v in (0.9642, 1.0, 0.8249))
# CIELAB of each corner of the CMY cube at no black; red ink (magenta and yellow) prints green.
_INKS_LAB = {
    (0, 0, 0): (100, 0, 0), (1, 0, 0): (91, -48, -14), (0, 1, 0): (60, 98, -61),
    (0, 0, 1): (97, -22, 94), (1, 1, 0): (32, 79, -108), (1, 0, 1): (88, -86, 83),
    (0, 1, 1): (88, -86, 83), (1, 1, 1): (0, 0, 0),
}


def print_profile() -> bytes:
    """A CMYK printer profile (ICC.1:2001-04, version 2) whose red ink prints green.

    Its A2B0 tag is a lut8Type (``mft1``) with identity curves and a 2-point CLUT to
    8-bit CIELAB, the C input varying slowest; full black ink is black. A converter
    that follows the profile turns red ink green, one that ignores it keeps it red.
    """
    clut = b"".join(
        bytes([0, 128, 128]) if k else _lab8(*_INKS_LAB[(c, m, y)])
        for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)
    )
    identity = bytes(range(256))
    matrix = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + matrix + identity * 4 + clut + identity * 3
    tags = [(b"wtpt", b"XYZ " + bytes(4) + _D50), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000)
        + b"prtrCMYKLab " + bytes(12) + b"acsp" + bytes(28) + _D50 + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + table + body


def _lab8(lightness: int, a: int, b: int) -> bytes:
    return bytes([round(lightness * 255 / 100), a + 128, b + 128])


def _cmyk_jpeg_with_profile() -> bytes:
    red_ink, black_ink = (0, 255, 255, 0), (0, 0, 0, 255)
    return encode(halves("CMYK", red_ink, black_ink), "JPEG", icc_profile=print_profile())


def _mpo() -> bytes:
    second = Image.new("RGB", (WIDTH, HEIGHT), GREEN)
    return encode(halves("RGB", RED, BLUE), "MPO", save_all=True, append_images=[second])


def kinds() -> list[Kind]:
    red, blue, clear = _opaque(RED), _opaque(BLUE), (0, 0, 0, 0)
    png, jpeg = "image/png", "image/jpeg"
    return [
        Kind("plain-png", ".png", png, encode(halves("RGB", RED, BLUE), "PNG"), png, red, blue,
             kept=True),
        Kind("plain-jpeg", ".jpg", jpeg, encode(halves("RGB", RED, BLUE), "JPEG"), jpeg, red,
             blue, kept=True),
        Kind("camera-mpo", ".mpo", jpeg, _mpo(), jpeg, red, blue, kept=True),
        Kind("lossy-webp", ".webp", "image/webp", encode(halves("RGB", RED, BLUE), "WEBP"),
             jpeg, red, blue),
        Kind("lossless-webp", ".webp", "image/webp",
             encode(halves("RGB", RED, BLUE), "WEBP", lossless=True), png, red, blue),
        Kind("animated-gif", ".gif", "image/gif", _animation("GIF"), png, red, blue),
        Kind("animated-webp", ".webp", "image/webp", _animation("WEBP"), jpeg, red, blue),
        Kind("cmyk-jpeg", ".jpg", jpeg,
             encode(halves("CMYK", (0, 255, 255, 0), (255, 255, 0, 0)), "JPEG"),
             jpeg, (255, 0, 0, 255), (0, 0, 255, 255)),
        Kind("cmyk-jpeg-with-print-profile", ".jpg", jpeg, _cmyk_jpeg_with_profile(), jpeg,
             _opaque(GREEN_INK), (0, 0, 0, 255)),
        Kind("sixteen-bit-png", ".png", png, _sixteen_bit_png(), png, (192, 192, 192, 255),
             (64, 64, 64, 255)),
        Kind("palette-png-with-transparency", ".png", png, _palette_png_with_transparency(),
             png, red, clear),
        Kind("grey-alpha-png", ".png", png,
             encode(halves("LA", (200, 255), (200, 0)), "PNG"), png, (200, 200, 200, 255), clear),
        Kind("exif-orientation-6", ".jpg", jpeg, _rotated_jpeg(6), jpeg, red, blue),
        Kind("exif-orientation-8", ".jpg", jpeg, _rotated_jpeg(8), jpeg, red, blue),
    ]


KINDS = kinds()


def check_stored(store: ArtifactStore, data: bytes, kind: Kind) -> None:
    """``data`` stores as a still, upright, 8-bit PNG or JPEG of the kind's picture."""
    ref, stored = store.put_normalised(data)
    assert (ref["mime"], ref["width"], ref["height"]) == (kind.mime, WIDTH, HEIGHT)
    assert store.get(ref) == stored
    assert inspect_image(stored) == (kind.mime, WIDTH, HEIGHT)  # what the manifest records
    assert (stored == kind.data) is kind.kept
    assert store.put(stored) == ref  # the stored form is kept as it is
    with Image.open(io.BytesIO(stored)) as image:
        assert image.mode in {"L", "P", "RGB", "RGBA"}
        assert ExifTags.Base.Orientation not in image.getexif()
        assert image.format == "MPO" or getattr(image, "n_frames", 1) == 1
        assert image.info.get("icc_profile", b"")[16:20] != b"CMYK"  # no profile of the source
        pixels = image.convert("RGBA")
    tolerance = LOSSY_TOLERANCE if kind.mime == "image/jpeg" or "webp" in kind.name else 0
    _assert_colour(pixels.getpixel((WIDTH // 2, HEIGHT // 4)), kind.top, tolerance)
    _assert_colour(pixels.getpixel((WIDTH // 2, HEIGHT * 3 // 4)), kind.bottom, tolerance)


def _assert_colour(seen: object, expected: RGBA, tolerance: int) -> None:
    assert isinstance(seen, tuple)
    compared = range(3, 4) if expected[3] == 0 else range(4)
    assert all(abs(seen[i] - expected[i]) <= tolerance for i in compared), (seen, expected)
