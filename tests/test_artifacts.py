"""The artifact store serves only files whose bytes hash to their names, and writes atomically."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

import llmi.artifacts
from llmi.artifacts import ArtifactStore, CorruptArtifact

from helpers import gradient_png


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
