"""A document whose plan uses all four sources, each on a real backend behind a local stand-in."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from llmi.context import Context
from llmi.graphs.document import build_graph

from helpers import model, tag
from http_standins import json_reply, png, serve, standin_server
from images_standin import images_server

DRAFT = "\n\n".join([
    "# Kyoto in April",
    "Start at the temple on the hill.",
    tag("search", "Kiyomizu-dera at sunrise", query="Kiyomizu-dera temple sunrise"),
    "Then imagine Gion at dusk.",
    tag("diffusion", "Gion at dusk, watercolour", prompt="Gion street at dusk, lanterns, watercolour"),
    "The same street in the rain.",
    tag("edit", "Gion in the rain", img_index=1, prompt="make it rain"),
    "April is drier than June.",
    tag("code", "Rainfall by month", code="plt.bar(['Apr', 'Jun'], [117, 199])\nplt.title('Rain — mm')"),
    "The temple again, in autumn.",
    tag("edit", "The temple in autumn", img_index=0, prompt="autumn leaves"),
])


def run(context: Context) -> dict[int, dict]:
    graph = build_graph(model=model(DRAFT)).compile()
    out = graph.invoke({"prompt": "A Kyoto guide"}, context=context)
    manifest = json.loads(Path(out["outputs"]["manifest"]).read_text())
    return {slot["index"]: slot for slot in manifest["slots"]}


def test_library_search_and_an_images_api(context: Context, tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "kiyomizu.png").write_bytes(png(400, 300))
    (library / "kiyomizu.txt").write_text("Kiyomizu-dera temple, wooden stage at sunrise")
    (library / "tower.png").write_bytes(png(300, 300))
    with images_server() as images:
        context.image_library = str(library)
        context.diffusion_backend = context.edit_backend = "openai:test-image-model"
        context.images_base_url = images.base_url
        context.image_size = "320x256"
        slots = run(context)
        edits = [seen for seen in images.requests if seen.path.endswith("/images/edits")]

    assert {i: s["ok"] for i, s in slots.items()} == dict.fromkeys(range(5), True), slots
    assert slots[0]["provenance"]["path"] == "kiyomizu.png"
    assert slots[1]["provenance"]["model"] == "test-image-model"
    assert (slots[1]["image"]["width"], slots[1]["image"]["height"]) == (320, 256)
    assert "plt.bar" in slots[3]["provenance"]["code"]
    # Each edit received its own source and kept its size.
    sources = {Image.open(io.BytesIO(seen.files["image"].data)).size for seen in edits}
    assert sources == {(320, 256), (400, 300)}
    assert (slots[4]["image"]["width"], slots[4]["image"]["height"]) == (400, 300)


def test_web_search_through_the_downloader(context: Context) -> None:
    with standin_server({"/photo.png": serve(png(500, 375))}) as host:
        tavily_answer = json_reply({
            "query": "q", "answer": None, "response_time": 0.1, "results": [],
            "images": [{"url": host.url("/missing.png"), "description": "gone"},
                       {"url": host.url("/photo.png"), "description": "Kiyomizu-dera"}],
        })
        with standin_server({"/search": tavily_answer}) as tavily:
            context.tavily_api_key = "tvly-test"
            context.tavily_base_url = tavily.base_url
            context.allow_private_hosts = f"127.0.0.1:{host.port}"
            slots = run(context)
    assert slots[0]["ok"], slots[0]
    assert slots[0]["provenance"]["image_url"] == host.url("/photo.png")
    assert (slots[0]["image"]["width"], slots[0]["image"]["height"]) == (500, 375)
    assert "LLMI_DIFFUSION" in slots[1]["error"]


@pytest.mark.slow
def test_web_search_and_local_diffusers_pipelines(context: Context, tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from llmi.tools.pipelines import release_pipelines

    from tiny_pipelines import save_instruct_pix2pix, save_text_to_image

    context.diffusion_backend = f"diffusers:{save_text_to_image(tmp_path / 'models')}"
    context.edit_backend = f"diffusers:{save_instruct_pix2pix(tmp_path / 'models')}"
    context.image_size, context.diffusion_steps, context.seed, context.device = "64x64", 2, 11, "cpu"
    try:
        with standin_server({"/photo.png": serve(png(500, 375))}) as host:
            tavily_answer = json_reply({
                "query": "q", "answer": None, "response_time": 0.1, "results": [],
                "images": [{"url": host.url("/photo.png"), "description": "Kiyomizu-dera"}],
            })
            with standin_server({"/search": tavily_answer}) as tavily:
                context.tavily_api_key = "tvly-test"
                context.tavily_base_url = tavily.base_url
                context.allow_private_hosts = f"127.0.0.1:{host.port}"
                slots = run(context)
    finally:
        release_pipelines()
    assert {i: s["ok"] for i, s in slots.items()} == dict.fromkeys(range(5), True), slots
    assert slots[1]["provenance"]["seed"] == 12
    assert (slots[2]["image"]["width"], slots[2]["image"]["height"]) == (64, 64)
    assert (slots[4]["image"]["width"], slots[4]["image"]["height"]) == (500, 375)
    assert {slots[i]["provenance"]["model"] for i in (2, 4)} == {context.edit_backend[len("diffusers:"):]}
