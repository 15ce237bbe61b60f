"""The local image library: ranking, the search backend, refreshing, links out."""

from __future__ import annotations

import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from image_kinds import KINDS, Kind, check_stored
from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools.base import ToolCall, ToolError
from llmi.tools.library import ImageLibrary, library_backend, tokenize
from llmi.tools.making import make_image
from llmi.tools.search import search

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF"}


@pytest.fixture(autouse=True)
def _cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.delenv("LLMI_IMAGE_LIBRARY", raising=False)


def image(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", size, (9, 99, 199)).save(buf, FORMATS[path.suffix])
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    image(root / "kyoto" / "kiyomizu.jpg")
    (root / "kyoto" / "kiyomizu.txt").write_text("Kiyomizu-dera temple at sunrise")
    image(root / "kyoto" / "IMG_2041.jpg")
    (root / "kyoto" / "IMG_2041.json").write_text(json.dumps({
        "title": "Philosopher's Path in spring",
        "caption": "Cherry trees in full bloom along the canal",
        "tags": ["cherry blossom", "sakura", "Kyoto"],
    }))
    image(root / "byd-seal-electric-sedan.jpg")
    image(root / "seal-on-beach.png")
    (root / "seal-on-beach.txt").write_text("A harbor seal resting on the beach")
    image(root / "golden-pavilion.webp")
    (root / "golden-pavilion.json").write_text(json.dumps({
        "caption": "Kinkaku-ji, the golden pavilion temple in Kyoto", "tags": ["zen temple"],
    }))
    image(root / "tokyoTowerNight.png")
    image(root / "red-sports-car.gif")
    image(root / "sunset.jpg")
    (root / "sunset.jpg.txt").write_text("Sunset over the Pacific ocean")
    return root


@pytest.fixture
def library(folder: Path, tmp_path: Path) -> ImageLibrary:
    return ImageLibrary(folder, cache_dir=tmp_path / "index-cache")


def top(library: ImageLibrary, query: str, **kwargs: str) -> str | None:
    matches = library.search(query, **kwargs)
    return matches[0].path if matches else None


def call_for(query: str, library: str | None, *, min_side: int = 32) -> ToolCall:
    request = ImageRequest(slot=0, source="search", description=f"a photo of {query}",
                           params={"query": query}, depends_on=None, attempt=0)
    context = Context(image_library=library, min_image_side=min_side)
    return ToolCall(request=request, context=context, deadline_s=10.0)


def test_plural_and_singular_and_file_names_share_tokens() -> None:
    assert tokenize("cherry blossoms") == tokenize("cherry-blossom") == ["cherri", "blossom"]
    assert tokenize("Philosopher's Path") == tokenize("the philosophers path")
    assert tokenize("sunrises") == tokenize("Sunrise")
    assert set(tokenize("tokyoTowerNight")) >= set(tokenize("tokyo tower night"))
    assert tokenize("covid19") == tokenize("COVID-19")


@pytest.mark.parametrize(("query", "expected"), [
    ("Kiyomizu-dera temple", "kyoto/kiyomizu.jpg"),
    ("sunrise over Kiyomizu", "kyoto/kiyomizu.jpg"),
    ("cherry blossoms on the Philosopher's Path", "kyoto/IMG_2041.jpg"),
    ("path of the philosophers", "kyoto/IMG_2041.jpg"),
    ("sakura", "kyoto/IMG_2041.jpg"),
    ("BYD Seal electric sedan", "byd-seal-electric-sedan.jpg"),
    ("electric sedans", "byd-seal-electric-sedan.jpg"),
    ("golden pavilion temples", "golden-pavilion.webp"),
    ("Tokyo tower at night", "tokyoTowerNight.png"),
    ("pacific sunset", "sunset.jpg"),
])
def test_search_ranks_the_right_image_first(
    library: ImageLibrary, query: str, expected: str
) -> None:
    assert top(library, query) == expected


def test_search_returns_only_matches_with_their_captions(library: ImageLibrary) -> None:
    assert library.search("quantum chromodynamics") == []
    assert library.search("the of and") == []
    matches = library.search("temple", k=5)
    assert {m.path for m in matches} == {"kyoto/kiyomizu.jpg", "golden-pavilion.webp"}
    assert all(m.score > 0 for m in matches)
    captions = {m.path: m.caption for m in library.search("kyoto", k=8)}
    assert captions["kyoto/kiyomizu.jpg"] == "Kiyomizu-dera temple at sunrise"
    assert captions["kyoto/IMG_2041.jpg"] == "Cherry trees in full bloom along the canal"
    assert library.search("sedan")[0].caption == "byd seal electric sedan"
    assert len(library.search("kyoto", k=1)) == 1


def test_hint_reorders_matches_but_never_adds_one(library: ImageLibrary) -> None:
    assert top(library, "seal") == "seal-on-beach.png"
    assert top(library, "seal", hint="an electric car made by BYD") == "byd-seal-electric-sedan.jpg"
    paths = {m.path for m in library.search("seal", hint="Kiyomizu-dera temple")}
    assert paths == {"seal-on-beach.png", "byd-seal-electric-sedan.jpg"}


def test_backend_returns_the_image_bytes_and_provenance(folder: Path) -> None:
    call = call_for("Kiyomizu temple at sunrise", str(folder))
    output = library_backend("")(call)
    assert output.data == (folder / "kyoto" / "kiyomizu.jpg").read_bytes()
    assert output.backend == "library"
    assert output.provenance["query"] == "Kiyomizu temple at sunrise"
    assert output.provenance["path"] == "kyoto/kiyomizu.jpg"
    assert output.provenance["caption"] == "Kiyomizu-dera temple at sunrise"
    assert output.provenance["score"] > 0


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_kind_of_photo_is_found_and_stored_upright_and_still(
    kind: Kind, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / kind.file_name).write_bytes(kind.data)
    (root / f"{kind.file_name}.txt").write_text("A lighthouse on a rocky cliff")
    call = call_for("lighthouse", str(root))
    store = ArtifactStore(tmp_path / "artifacts")
    context = Context(image_library=str(root), tool_cache=False)
    made = make_image(search, call.request, None, context, store)
    assert (made.backend, made.provenance["path"]) == ("library", kind.file_name)
    assert made.image == store.put(kind.data)
    assert made.data == store.get(made.image)
    check_stored(store, kind.data, kind)


def test_backend_argument_overrides_the_context(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    image(other / "lighthouse.png")
    output = library_backend(str(other))(call_for("lighthouse", str(folder)))
    assert output.provenance["path"] == "lighthouse.png"


def test_backend_reads_the_folder_from_the_environment(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMI_IMAGE_LIBRARY", str(folder))
    output = library_backend("")(call_for("sakura", None))
    assert output.provenance["path"] == "kyoto/IMG_2041.jpg"


@pytest.mark.parametrize("where", ["", "missing"])
def test_backend_without_a_folder_is_a_config_error(tmp_path: Path, where: str) -> None:
    with pytest.raises(ToolError, match="LLMI_IMAGE_LIBRARY") as caught:
        library_backend("")(call_for("temple", str(tmp_path / where) if where else None))
    assert caught.value.kind == "config"


def test_backend_without_a_match_is_no_result(folder: Path) -> None:
    with pytest.raises(ToolError, match="quantum") as caught:
        library_backend("")(call_for("quantum chromodynamics", str(folder)))
    assert caught.value.kind == "no_result"


def test_backend_skips_undecodable_and_too_small_images(tmp_path: Path) -> None:
    root = tmp_path / "lighthouses"
    image(root / "lighthouse-small.png", size=(16, 16))
    (root / "lighthouse.png").write_bytes(b"not an image at all")
    image(root / "lighthouse-on-a-rocky-cliff-at-dusk.png")
    order = [m.path for m in ImageLibrary(root).search("lighthouse")]
    assert order == [
        "lighthouse.png", "lighthouse-small.png", "lighthouse-on-a-rocky-cliff-at-dusk.png",
    ]

    output = library_backend(str(root))(call_for("lighthouse", None))
    assert output.provenance["path"] == "lighthouse-on-a-rocky-cliff-at-dusk.png"

    with pytest.raises(ToolError, match="smaller than 100") as caught:
        library_backend(str(root))(call_for("lighthouse", None, min_side=100))
    assert caught.value.kind == "no_result"
    assert "not a readable image" in str(caught.value)


def test_index_follows_changes_and_is_not_rebuilt_without_them(
    library: ImageLibrary, folder: Path
) -> None:
    assert top(library, "sunrise") == "kyoto/kiyomizu.jpg"
    assert library.builds == 1
    cached = library.cache_file.stat().st_mtime_ns
    library.search("sunrise")
    library.refresh()
    assert library.builds == 1
    assert library.cache_file.stat().st_mtime_ns == cached

    image(folder / "new" / "harbor-lighthouse.png")
    assert top(library, "lighthouse") == "new/harbor-lighthouse.png"

    (folder / "kyoto" / "kiyomizu.txt").write_text("Kiyomizu-dera under snow in deep winter")
    assert top(library, "snow") == "kyoto/kiyomizu.jpg"
    assert library.search("sunrise") == []

    (folder / "red-sports-car.json").write_text(json.dumps({"keywords": ["Ferrari"]}))
    assert top(library, "ferrari") == "red-sports-car.gif"

    (folder / "byd-seal-electric-sedan.jpg").unlink()
    assert library.search("BYD sedan") == []
    assert library.builds == 5


def test_index_is_loaded_from_the_disk_cache(
    library: ImageLibrary, folder: Path, tmp_path: Path
) -> None:
    expected = library.search("temple")
    again = ImageLibrary(folder, cache_dir=tmp_path / "index-cache")
    assert again.search("temple") == expected
    assert again.builds == 0

    library.cache_file.write_text("{ not json")
    fresh = ImageLibrary(folder, cache_dir=tmp_path / "index-cache")
    assert fresh.search("temple") == expected
    assert fresh.builds == 1


def test_links_out_of_the_folder_are_ignored(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    image(outside / "secret-plans.png")
    (folder / "secret-link.png").symlink_to(outside / "secret-plans.png")
    (folder / "secret-folder").symlink_to(outside, target_is_directory=True)
    (folder / "kiyomizu-alias.jpg").symlink_to(folder / "kyoto" / "kiyomizu.jpg")
    library = ImageLibrary(folder, cache_dir=tmp_path / "index-cache")

    assert library.search("secret plans") == []
    assert top(library, "alias") == "kiyomizu-alias.jpg"
    with pytest.raises(ValueError, match="outside"):
        library.read("../outside/secret-plans.png")


def test_concurrent_searches_while_the_folder_changes(library: ImageLibrary, folder: Path) -> None:
    start = threading.Barrier(8)

    def searches() -> set[str | None]:
        start.wait()
        return {top(library, "cherry blossoms") for _ in range(20)}

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(searches) for _ in range(8)]
        image(folder / "cherry-blossoms-at-night.png")
        os.utime(folder / "kyoto" / "IMG_2041.json")
        found = set().union(*(f.result() for f in futures))
    assert found <= {"kyoto/IMG_2041.jpg", "cherry-blossoms-at-night.png"}
    assert len(library.search("cherry blossoms")) == 2
