"""Reading evaluation datasets: verl Parquet, LLMI-Bench JSON, plain JSONL, and bad input."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import gradient_png
from PIL import Image

from llmi.evaluation.datasets import (
    DatasetError,
    ItemError,
    image_bytes,
    load_items,
    prompt_text,
)


def write_jsonl(path: Path, *items: Any) -> Path:
    path.write_text("\n".join(json.dumps(item) for item in items) + "\n", encoding="utf-8")
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read(path: str) -> bytes:
    return Path(path).read_bytes()


def test_verl_parquet(tmp_path: Path) -> None:
    rows = pd.DataFrame([
        {
            "data_source": "interleaved",
            "prompt": [{"role": "system", "content": "You are LLM-I."},
                       {"role": "user", "content": "<image>\nRedraw this chart in blue."}],
            "images": [{"bytes": gradient_png(1), "path": None}],
            "ability": "interleaved",
            "reward_model": {"style": "model", "ground_truth": "a chart"},
            "blob": b"\x00" * 12,
            "extra_info": {"index": 7, "split": "train", "image_num": 2,
                           "tools": ["code", "edit"], "source_set": "mm"},
        },
        {
            "data_source": "interleaved",
            "prompt": [{"role": "user", "content": "A guide to Kyoto, with photos."}],
            "images": [],
            "ability": "interleaved",
            "reward_model": {"style": "model", "ground_truth": ""},
            "blob": b"",
            "extra_info": {"index": 8, "split": "test", "image_num": 99,
                           "tools": ["search"], "source_set": "text"},
        },
        {
            "data_source": "dropped",
            "prompt": [{"role": "user", "content": "filtered out before writing"}],
            "images": [],
            "ability": "x",
            "reward_model": {"style": "model", "ground_truth": ""},
            "blob": b"",
            "extra_info": {"index": 9, "split": "test", "image_num": 0,
                           "tools": [], "source_set": "text"},
        },
    ])
    rows.index = pd.Index([10, 11, 30])
    path = tmp_path / "train.parquet"
    rows.iloc[[0, 1]].to_parquet(path)  # pandas stores an index that is not a range as a column

    first, second = load_items(path, image_dir=tmp_path / "images")

    assert first["id"] == "7"
    assert first["prompt"] == "Redraw this chart in blue."
    assert [read(p) for p in first["images"]] == [gradient_png(1)]
    assert Path(first["images"][0]).name == hashlib.sha256(gradient_png(1)).hexdigest() + ".png"
    assert (first["image_num"], first["tools"], first["split"]) == (2, ["code", "edit"], "train")
    assert first["data_source"] == "interleaved"
    assert first["criteria"] == []
    assert first["extra"] == {
        "ability": "interleaved",
        "reward_model": {"style": "model", "ground_truth": "a chart"},
        "blob": "<12 bytes>",
        "extra_info": {"source_set": "mm"},
    }
    json.dumps(first["extra"])
    assert (second["id"], second["prompt"], second["images"]) == (
        "8", "A guide to Kyoto, with photos.", [])
    assert (second["image_num"], second["tools"], second["split"]) == (99, ["search"], "test")


def test_llmi_bench_json_list(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cat.png").write_bytes(gradient_png(2))
    path = tmp_path / "mm_input.json"
    path.write_text(json.dumps([
        {"prompt": "Compare two cities.", "r1": "Names both cities", "r2": "Has a chart",
         "r3": "Cites sources"},
        {"prompt": "<image> Make this cat a painting.", "images": ["pics/cat.png"],
         "r10": "tenth", "r2": "second", "r9": "ninth", "category": "edit"},
    ]), encoding="utf-8")

    first, second = load_items(path, image_dir=tmp_path / "images")

    assert first["criteria"] == ["Names both cities", "Has a chart", "Cites sources"]
    assert (first["id"], first["image_num"], first["tools"], first["split"]) == ("0", 0, [], "")
    assert first["extra"] == {}
    assert second["criteria"] == ["second", "ninth", "tenth"]
    assert second["prompt"] == "Make this cat a painting."
    assert [read(p) for p in second["images"]] == [gradient_png(2)]
    assert second["extra"] == {"category": "edit"}


def test_plain_jsonl_image_forms(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(gradient_png(3))
    (tmp_path / "pics" / "d.png").write_bytes(gradient_png(6))
    path = write_jsonl(tmp_path / "plain.jsonl", {
        "id": "forms",
        "prompt": "Four inputs.",
        "images": ["pics/a.png", b64(gradient_png(4)),
                   "data:image/png;base64," + b64(gradient_png(5)),
                   {"bytes": None, "path": "pics/d.png"}],
        "criteria": ["uses every input"],
        "tools": "edit, code",
        "split": "test",
    })
    path.write_text(path.read_text() + "\n\n", encoding="utf-8")

    [item] = load_items(path, image_dir=tmp_path / "images")

    assert [read(p) for p in item["images"]] == [gradient_png(s) for s in (3, 4, 5, 6)]
    assert all(Path(p).parent == (tmp_path / "images").resolve() for p in item["images"])
    assert (item["id"], item["tools"], item["split"]) == ("forms", ["edit", "code"], "test")
    assert item["criteria"] == ["uses every input"]


def test_chat_message_image_parts(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", {
        "prompt": [
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "An earlier turn."},
            {"role": "assistant", "content": "A reply."},
            {"role": "user", "content": [
                {"type": "text", "text": "First paragraph."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                           + b64(gradient_png(10))}},
                {"type": "image"},
                {"type": "text", "text": "<image>Second paragraph."},
                {"type": "image", "image": b64(gradient_png(13))},
            ]},
        ],
        "images": [b64(gradient_png(11)), b64(gradient_png(12)), b64(gradient_png(14))],
    })

    [item] = load_items(path, image_dir=tmp_path / "images")

    assert item["prompt"] == "First paragraph.\n\nSecond paragraph."
    assert [read(p) for p in item["images"]] == [gradient_png(s) for s in (10, 11, 12, 13, 14)]


def test_top_level_settings_win_over_extra_info(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", {
        "prompt": "p", "image_num": 3, "split": "dev",
        "extra_info": {"image_num": 1, "tools": ["search"], "split": "train", "index": 4},
    })

    [item] = load_items(path, image_dir=tmp_path / "images")

    assert (item["image_num"], item["split"]) == (3, "dev")
    assert (item["tools"], item["id"]) == (["search"], "4")


def test_ids_fall_back_to_index_then_position(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ids.jsonl", {"prompt": "a", "id": 5, "extra_info": {"index": 1}},
                       {"prompt": "b", "extra_info": {"index": "x"}}, {"prompt": "c"})

    assert [item["id"] for item in load_items(path, image_dir=tmp_path)] == ["5", "x", "2"]


def test_image_bytes_and_prompt_text_take_what_a_trainer_holds(tmp_path: Path) -> None:
    pil = Image.open(io.BytesIO(gradient_png(20)))
    assert Image.open(io.BytesIO(image_bytes(pil, base_dir=tmp_path))).format == "PNG"
    cmyk = Image.new("CMYK", (8, 8))
    assert Image.open(io.BytesIO(image_bytes(cmyk, base_dir=tmp_path))).size == (8, 8)
    messages = np.array([{"role": "user", "content": np.array(
        [{"type": "text", "text": "From verl."}], dtype=object)}], dtype=object)
    assert prompt_text(messages) == "From verl."
    with pytest.raises(ItemError, match="remote images are not fetched"):
        image_bytes("https://example.com/a.png", base_dir=tmp_path)


def _line(**fields: Any) -> str:
    return json.dumps({"prompt": "p", **fields})


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("data.csv", "prompt\np\n", "unknown dataset format '.csv' (use .jsonl, .json or .parquet)"),
    ("data.jsonl", "", "the dataset has no items"),
    ("data.jsonl", _line() + "\n{oops\n", "line 2: bad JSON: Expecting property name"),
    ("data.json", '{"prompt": "p"}', "expected a JSON list of items, not dict"),
    ("data.json", '[{"prompt": "p"}, [1]]', "item 1: an item must be an object, not list"),
    ("data.jsonl", '{"images": []}', "line 1: no prompt"),
    ("data.jsonl", '{"prompt": 5}', "line 1: the prompt must be a string or a list of chat"),
    ("data.jsonl", '{"prompt": ["a", "b"]}', "not a list of str"),
    ("data.jsonl", '{"prompt": [{"role": "system", "content": "s"}]}', "no user message"),
    ("data.jsonl", '{"prompt": " <image> "}', "line 1: the prompt has no text"),
    ("data.jsonl", _line(images=["missing.png"]), "line 1: input image 0: image file not found: "),
    ("data.jsonl", _line(images=["notes.png"]), "line 1: input image 0: not a readable image"),
    ("data.jsonl", _line(images=[b64(gradient_png())[:-1]]), "line 1: input image 0: bad base64"),
    ("data.jsonl", _line(images=[{"path": None}]), "an image object with no image in it"),
    ("data.jsonl", '{"prompt": "Compare <image><image>", "images": ["notes.png"]}',
     "more image placeholders than the 1 entries"),
    ("data.jsonl", _line(image_num="3"), "line 1: image_num must be an integer, not '3'"),
    ("data.jsonl", _line(extra_info={"image_num": 1.5}), "image_num must be an integer, not 1.5"),
    ("data.jsonl", _line(id="a") + "\n" + _line(id="a"),
     "line 2: duplicate id 'a' (first at line 1)"),
    ("data.parquet", "not parquet", "not a readable Parquet file"),
])
def test_bad_datasets_name_the_file_the_item_and_the_reason(
        tmp_path: Path, name: str, text: str, reason: str) -> None:
    (tmp_path / "notes.png").write_bytes(b"just some text")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    with pytest.raises(DatasetError) as caught:
        load_items(path, image_dir=tmp_path / "images")

    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert reason in message
    assert "\n" not in message


def test_a_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.jsonl: cannot read the file: No such file"):
        load_items(tmp_path / "nope.jsonl", image_dir=tmp_path)


def test_relative_image_paths_fall_back_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LLMI-Bench's mm_input.json names images relative to where its script runs.
    (tmp_path / "benchmark" / "images").mkdir(parents=True)
    (tmp_path / "benchmark" / "images" / "room.png").write_bytes(gradient_png(2))
    data = tmp_path / "benchmark" / "mm_input.json"
    data.write_text(json.dumps([{"prompt": "Restyle <image>", "images": ["benchmark/images/room.png"],
                                 "r1": "Keeps the room"}]), encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    [item] = load_items(data, image_dir=tmp_path / "inputs")

    assert Path(item["images"][0]).read_bytes() == gradient_png(2)
    assert item["criteria"] == ["Keeps the room"]
