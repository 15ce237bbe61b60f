"""The artifact store serves only files whose bytes hash to their names, and writes atomically;
images are checked whole where asked, scaled down to a cap, and turned upright."""

from __future__ import annotations

import hashlib
import io
import logging
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, PngImagePlugin

import llmi.artifacts
from llmi.artifacts import (
    ArtifactStore,
    CorruptArtifact,
    NotAnImage,
    inspect_image,
    normalise_image,
    shown_size,
)

from helpers import gradient_png
from image_kinds import BLUE, HEIGHT, LOSSY_TOLERANCE, RED, WIDTH, encode, halves


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def warnings_about(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and str(path) in r.getMessage()]


def test_get_of_a_corrupted_artifact_raises_a_clear_error(store: ArtifactStore) -> None:
    ref = store.put(gradient_png(1))
    store.path(ref).write_bytes(gradient_png(2))  # a valid image, under another's name
    with pytest.raises(CorruptArtifact, match=f"artifact {ref['sha256'][:12]} is corrupt"):
        store.get(ref)
    # Readers of the store catch ValueError for an image they cannot use.
    assert issubclass(CorruptArtifact, ValueError)


def test_find_does_not_serve_a_poisoned_file_and_removes_it(
    store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    ref = store.put(gradient_png(1))
    path = store.path(ref)
    path.write_bytes(gradient_png(2))
    assert store.find(ref["sha256"]) is None
    assert not path.exists()
    assert len(warnings_about(caplog, path)) == 1
    # Gone, so a second look is a quiet miss.
    assert store.find(ref["sha256"]) is None
    assert len(warnings_about(caplog, path)) == 1


def test_a_symlinked_artifact_is_not_followed(store: ArtifactStore, tmp_path: Path) -> None:
    data = gradient_png(1)
    ref = store.put(data)
    path = store.path(ref)
    # Even to the right bytes: what a link points at can change after the check.
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(data)
    path.unlink()
    path.symlink_to(elsewhere)
    with pytest.raises(CorruptArtifact, match="symbolic link"):
        store.get(ref)
    assert store.find(ref["sha256"]) is None
    assert not path.is_symlink() and elsewhere.read_bytes() == data


def test_a_folder_under_an_artifacts_name_is_not_read(store: ArtifactStore) -> None:
    ref = store.put(gradient_png(1))
    path = store.path(ref)
    path.unlink()
    path.mkdir()
    with pytest.raises(CorruptArtifact, match="not a regular file"):
        store.get(ref)


def test_an_image_under_the_wrong_suffix_is_not_found(store: ArtifactStore) -> None:
    ref = store.put(gradient_png(1))
    path = store.path(ref)
    misnamed = path.with_suffix(".jpg")
    path.rename(misnamed)  # the right bytes, but a reader would look for the .png
    assert store.find(ref["sha256"]) is None
    assert not misnamed.exists()


def test_put_replaces_a_poisoned_file(store: ArtifactStore, caplog: pytest.LogCaptureFixture,
                                      tmp_path: Path) -> None:
    data = gradient_png(1)
    ref = store.put(data)
    path = store.path(ref)
    path.write_bytes(gradient_png(2))
    assert store.put(data) == ref
    assert store.get(ref) == data
    assert len(warnings_about(caplog, path)) == 1
    # A link under the name is replaced too, and what it pointed at is left alone.
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(b"theirs")
    path.unlink()
    path.symlink_to(elsewhere)
    store.put(data)
    assert not path.is_symlink() and store.get(ref) == data
    assert elsewhere.read_bytes() == b"theirs"


def test_find_serves_an_intact_image_with_its_bytes(store: ArtifactStore) -> None:
    data = gradient_png(1)
    ref = store.put(data)
    assert store.find(ref["sha256"]) == ref
    assert store.load(ref["sha256"]) == (ref, data)
    assert hashlib.sha256(data).hexdigest() == ref["sha256"]
    assert store.find("*") is None and store.find("0" * 64) is None


def test_a_failed_write_leaves_no_temporary_file(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(llmi.artifacts.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        store.put(gradient_png(1))
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


# --- whole-image checks, downscaling, orientation --------------------------------------


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decoding_finds_a_truncated_image_that_its_header_hides(fmt: str) -> None:
    whole = encode(halves("RGB", RED, BLUE), fmt)
    assert inspect_image(_cut(whole)) == (f"image/{fmt.lower()}", WIDTH, HEIGHT)
    assert inspect_image(whole, decode=True) == (f"image/{fmt.lower()}", WIDTH, HEIGHT)
    with pytest.raises(NotAnImage, match="truncated"):
        inspect_image(_cut(whole), decode=True)


def test_a_large_image_is_scaled_down_to_the_cap_its_aspect_kept() -> None:
    photo = encode(halves("RGB", RED, BLUE, size=(3000, 2000)), "JPEG")
    stored = normalise_image(photo, max_pixels=1_000_000)
    with Image.open(io.BytesIO(stored)) as img:
        assert img.format == "JPEG"  # lossy stays lossy
        assert img.width * img.height <= 1_000_000
        assert (img.width, img.height) == (1224, 816)
    # Within the cap, or with none, it is kept as it came.
    assert normalise_image(photo, max_pixels=6_000_000) is photo
    assert normalise_image(photo) is photo


def test_a_turned_photo_is_scaled_upright() -> None:
    turned = encode(halves("RGB", RED, BLUE).transpose(Image.Transpose.ROTATE_90), "JPEG",
                    exif=_exif(6))
    assert inspect_image(turned)[1:] == (HEIGHT, WIDTH)
    assert shown_size(turned) == (WIDTH, HEIGHT)
    stored = normalise_image(turned, max_pixels=WIDTH * HEIGHT // 4)
    with Image.open(io.BytesIO(stored)) as img:
        assert img.size == (WIDTH // 2, HEIGHT // 2)
        assert _near(img.convert("RGB").getpixel((75, 10)), RED)
        assert _near(img.convert("RGB").getpixel((75, 190)), BLUE)


def test_a_palette_image_is_scaled_smoothly_not_by_nearest_neighbour() -> None:
    stripes = Image.new("P", (400, 400))
    stripes.putpalette([0, 0, 0, 255, 255, 255])
    stripes.putdata([x % 2 for _ in range(400) for x in range(400)])
    stored = normalise_image(encode(stripes, "PNG"), max_pixels=200 * 200)
    with Image.open(io.BytesIO(stored)) as img:
        assert img.format == "PNG" and img.size == (200, 200)
        grey = img.convert("L").getpixel((100, 100))
    assert 100 < grey < 155  # one-pixel stripes average to grey


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


def _near(seen: object, rgb: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= LOSSY_TOLERANCE for a, b in zip(seen, rgb))  # type: ignore[call-overload]


def _chunk_before_end(png: bytes, kind: bytes, body: bytes) -> bytes:
    """The PNG with one more chunk after its pixels, just before ``IEND``."""
    chunk = len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    assert png[-12:-8] == b"\0\0\0\0" and png[-8:-4] == b"IEND"
    return png[:-12] + chunk + png[-12:]


_TURNED_PNG = encode(halves("RGB", RED, BLUE).transpose(Image.Transpose.ROTATE_90), "PNG")
_EXIF_6 = _exif(6).tobytes()  # "Exif\0\0" and the TIFF structure
_XMP_6 = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'


@pytest.mark.parametrize("kind, body", [
    (b"eXIf", _EXIF_6[6:]),
    (b"tEXt", b"Raw profile type exif\0\nexif\n" + f"{len(_EXIF_6):8}\n".encode()
     + _EXIF_6.hex().encode() + b"\n"),
    (b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(
        b"\nexif\n" + f"{len(_EXIF_6):8}\n".encode() + _EXIF_6.hex().encode() + b"\n")),
    (b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + _XMP_6),
], ids=["eXIf", "raw-profile-tEXt", "raw-profile-zTXt", "xmp-iTXt"])
def test_a_png_is_turned_by_an_orientation_written_after_its_pixels(kind: bytes, body: bytes) -> None:
    turned = _chunk_before_end(_TURNED_PNG, kind, body)
    assert shown_size(turned) == (WIDTH, HEIGHT)
    with Image.open(io.BytesIO(normalise_image(turned))) as img:
        assert img.size == (WIDTH, HEIGHT)
        assert _near(img.convert("RGB").getpixel((150, 10)), RED)


def test_a_png_without_orientation_chunks_is_stored_without_decoding_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As matplotlib writes charts: text chunks, none of them one getexif reads.
    chart = _chunk_before_end(encode(halves("RGB", RED, BLUE), "PNG"), b"tEXt",
                              b"Software\0Matplotlib version3.9")
    decoded = []
    real_load = PngImagePlugin.PngImageFile.load

    def load(self: PngImagePlugin.PngImageFile) -> object:
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    assert normalise_image(chart) is chart
    assert decoded == []
    # One that may carry an orientation is read as Pillow reads it, pixels and all.
    assert normalise_image(_chunk_before_end(chart, b"eXIf", _exif(1).tobytes()[6:]))
    assert decoded == [(WIDTH, HEIGHT)]


def test_an_atomic_write_makes_its_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "file.bin"
    llmi.artifacts.write_atomic(path, b"data")
    llmi.artifacts.write_atomic(path, b"again")
    assert path.read_bytes() == b"again"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_an_atomic_write_under_a_file_names_the_file_where_its_folder_should_be(
    tmp_path: Path,
) -> None:
    (tmp_path / "out").write_bytes(b"not a folder")
    with pytest.raises(FileExistsError) as raised:
        llmi.artifacts.write_atomic(tmp_path / "out" / "document.md", b"text")
    assert raised.value.filename == str(tmp_path / "out")
    with pytest.raises(NotADirectoryError) as raised:
        llmi.artifacts.write_atomic(tmp_path / "out" / "assets" / "image.png", b"data")
    assert raised.value.filename == str(tmp_path / "out" / "assets")
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]
