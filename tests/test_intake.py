"""The intake node: input images are decoded whole before any model call, and stored at
most ``max_input_pixels`` large; the manifest says which were scaled, and from what size."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.nodes.intake import BadInputImage

from helpers import FakeTool, ScriptedModel, fake_tools, model, tag
from image_kinds import BLUE, RED, encode, halves


def _run(context: Context, images: list[Path], draft: str = "Text.", tools: Any = None) -> None:
    graph = build_graph(model=model(draft), tools=tools or fake_tools()).compile()
    graph.invoke({"prompt": "p", "images": [str(p) for p in images]}, context=context)


def _manifest(context: Context) -> dict[str, Any]:
    return json.loads((Path(context.out_dir) / "manifest.json").read_text())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_input_fails_before_the_planner_is_called(
    context: Context, tmp_path: Path, fmt: str
) -> None:
    whole = encode(halves("RGB", RED, BLUE), fmt)
    photo = tmp_path / f"photo.{fmt.lower()}"
    photo.write_bytes(whole[: len(whole) * 2 // 3])
    planner = ScriptedModel(script=lambda messages, kwargs: "Text.")
    graph = build_graph(model=planner, tools=fake_tools()).compile()
    with pytest.raises(BadInputImage, match=f"input image 'photo.{fmt.lower()}'.*truncated"):
        graph.invoke({"prompt": "p", "images": [str(photo)]}, context=context)
    assert planner.calls == []


def test_a_large_input_is_scaled_down_and_its_edit_made_from_that(
    context: Context, tmp_path: Path
) -> None:
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(encode(halves("RGB", RED, BLUE, size=(3000, 2000)), "JPEG"))
    small = tmp_path / "small.png"
    small.write_bytes(encode(halves("RGB", RED, BLUE, size=(300, 200)), "PNG"))
    edit = FakeTool("edit", ("img_index", "prompt"))
    draft = tag("edit", "Warmer", img_index=0, prompt="warmer")
    _run(replace(context, max_input_pixels=1_000_000), [photo, small], draft,
         tools=fake_tools(edit=edit))

    with Image.open(io.BytesIO(edit.calls[0].source_image)) as source:
        assert source.size == (1224, 816)
    inputs = _manifest(context)["inputs"]
    assert [(i["index"], i["name"], i["width"], i["height"]) for i in inputs] == [
        (0, "holiday.jpg", 1224, 816), (1, "small.png", 300, 200)]
    assert inputs[0]["scaled_from"] == {"width": 3000, "height": 2000}
    assert inputs[1]["scaled_from"] is None


def test_a_turned_input_is_said_to_be_scaled_from_its_upright_size(
    context: Context, tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    turned = halves("RGB", RED, BLUE, size=(600, 800)).transpose(Image.Transpose.ROTATE_90)
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(encode(turned, "JPEG", exif=exif))
    _run(replace(context, max_input_pixels=120_000), [photo])
    entry = _manifest(context)["inputs"][0]
    assert (entry["width"], entry["height"]) == (300, 400)
    assert entry["scaled_from"] == {"width": 600, "height": 800}


def test_a_cap_of_0_keeps_inputs_as_they_come(
    context: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMI_MAX_INPUT_PIXELS", "0")
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(encode(halves("RGB", RED, BLUE, size=(3000, 2000)), "JPEG"))
    _run(replace(context, max_input_pixels=None), [photo])
    entry = _manifest(context)["inputs"][0]
    assert (entry["width"], entry["height"], entry["scaled_from"]) == (3000, 2000, None)


def test_an_artifact_store_that_cannot_be_written_is_not_blamed_on_the_image(
    context: Context, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(halves("RGB", RED, BLUE), "PNG"))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be")
    stored_under_a_file = replace(context, artifact_dir=str(blocker / "artifacts"))
    # An OSError, which the CLI words as a storage failure; BadInputImage is a ValueError.
    with pytest.raises(OSError):
        _run(stored_under_a_file, [photo])
