"""A story whose fox recurs, end to end: the planner's model writes no refs (as LLM-I's
models write), one linking call names the fox, and every later fox is made from the first,
through an OpenAI-compatible images API and through a local diffusers pipeline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.graphs.document import build_graph

from helpers import tag
from images_standin import images_server
from openai_standin import routed_chat_server

FOX = "Fen, a small red fox with a white-tipped tail"
STORY = "\n\n".join([
    "# Fen and the winter",
    "Fen lives at the edge of the beech wood.",
    tag("diffusion", "Fen at the edge of the wood", prompt=f"{FOX}, at the edge of a beech wood"),
    "The first snow falls, and Fen watches it.",
    tag("diffusion", "Fen in the first snow", prompt=f"{FOX}, watching snow fall"),
    "At night Fen curls up in the den.",
    tag("diffusion", "Fen asleep in the den", prompt=f"{FOX}, asleep in a den"),
])
SUBJECTS = {"subjects": [{"name": "Fen", "description": FOX, "slots": [0, 1, 2]}]}


def answer(body: dict) -> str:
    """The story for the planner; the fox as one subject for the linking call, which asks
    for JSON."""
    return json.dumps(SUBJECTS) if body.get("response_format") else STORY


def run(context: Context) -> dict:
    with routed_chat_server(answer) as (url, chats):
        context.model, context.base_url, context.api_key = "gpt-4.1-mini", url, "sk-test"
        out = build_graph().compile().invoke({"prompt": "A winter story about a fox"},
                                             context=context)
    assert sum(bool(chat["body"].get("response_format")) for chat in chats) == 1
    return json.loads(Path(out["outputs"]["manifest"]).read_text())


def assert_linked(manifest: dict) -> None:
    slots = {slot["index"]: slot for slot in manifest["slots"]}
    assert all(slot["ok"] for slot in slots.values()), slots
    assert manifest["subjects"] == [{"name": "Fen", "description": FOX, "slots": [0, 1, 2]}]
    assert "refs" not in slots[0] and slots[0]["subject"] == "Fen"
    assert [(slots[i]["refs"], slots[i]["subject"]) for i in (1, 2)] == [([0], "Fen")] * 2
    assert all("references_ignored" not in slot for slot in slots.values())


def same_pixels(a: bytes, b: bytes) -> bool:
    first, second = (Image.open(io.BytesIO(data)).convert("RGB") for data in (a, b))
    return first.size == second.size and ImageChops.difference(first, second).getbbox() is None


def test_the_fox_is_drawn_from_its_first_image_on_an_images_api(context: Context) -> None:
    with images_server() as images:
        images.openai_rules = True
        context.diffusion_backend = "openai:gpt-image-1"
        context.images_base_url = images.base_url
        manifest = run(context)
    assert_linked(manifest)
    generations = [seen for seen in images.requests if seen.path.endswith("/generations")]
    edits = [seen for seen in images.requests if seen.path.endswith("/edits")]
    assert len(generations) == 1 and len(edits) == 2
    _, fox = ArtifactStore(context.artifact_dir).load(manifest["slots"][0]["image"]["sha256"])
    for seen in edits:
        [reference] = seen.images
        assert same_pixels(reference.data, fox)
        assert FOX in seen.fields["prompt"]


@pytest.mark.slow
def test_the_fox_is_drawn_from_its_first_image_on_diffusers(context: Context,
                                                             tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from llmi.tools.pipelines import release_pipelines

    from tiny_pipelines import save_qwen_image_edit_plus

    context.diffusion_backend = f"diffusers:{save_qwen_image_edit_plus(tmp_path / 'models')}"
    context.image_size, context.diffusion_steps, context.seed, context.device = "64x64", 2, 5, "cpu"
    try:
        manifest = run(context)
    finally:
        release_pipelines()
    assert_linked(manifest)
    slots = manifest["slots"]
    assert [slot["provenance"].get("references") for slot in slots] == [None, 1, 1]
