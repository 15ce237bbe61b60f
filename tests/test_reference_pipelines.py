"""Reference images on the diffusers backends, run on tiny random-weight pipelines and
IP-Adapter weights saved to disk (no hub)."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

import diffusers  # noqa: E402
import tiny_pipelines  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from PIL import Image  # noqa: E402
from test_pipelines import (  # noqa: E402
    _fresh_pipelines,  # noqa: F401 - autouse: every test loads its pipelines afresh
    _one_torch_thread,  # noqa: F401
    encoded,
    photo_jpeg,
    pixels,
    run_together,
    settings,
    spy_calls,
    tool_call,
)

from llmi.tools.base import REFERENCES_IGNORED, ToolError  # noqa: E402
from llmi.tools.pipeline_references import IP_ADAPTER_SCALE  # noqa: E402
from llmi.tools.pipelines import image_edit, text_to_image  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error:.*torch_dtype.*:FutureWarning")

RED, BLUE = (220, 30, 30), (30, 60, 220)


def flat(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    return encoded(Image.new("RGB", size, color))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Saves a tiny pipeline (or IP-Adapter) on first use and returns its folder."""
    folder = tmp_path_factory.mktemp("references")
    adapters = {
        "sd_ip_adapter": lambda: tiny_pipelines.save_ip_adapter(
            folder / "sd", saved("text_to_image"), "models", "ip-adapter_sd15.safetensors"),
        "sdxl_ip_adapter": lambda: tiny_pipelines.save_ip_adapter(
            folder / "sdxl", saved("sdxl"), "sdxl_models", "ip-adapter_sdxl.safetensors"),
        "sdxl_vit_h_ip_adapter": lambda: tiny_pipelines.save_ip_adapter(
            folder / "sdxl-vit-h", saved("sdxl"), "sdxl_models",
            "ip-adapter-plus_sdxl_vit-h.safetensors", "models/image_encoder"),
        "pix2pix_ip_adapter": lambda: tiny_pipelines.save_ip_adapter(
            folder / "pix2pix", saved("instruct_pix2pix"), "", "adapter.safetensors"),
    }

    @functools.cache
    def saved(name: str) -> Path:
        if name in adapters:
            return adapters[name]()
        return getattr(tiny_pipelines, f"save_{name}")(folder)

    return saved


@pytest.fixture
def small_qwen_plus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Qwen-Image-Edit-Plus encodes each image at a megapixel for its VAE and 384x384 for its
    vision encoder, whatever size it draws: smaller keeps tiny runs fast."""
    plus = diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 64 * 64)
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", 56 * 56)


def color_of(image: Image.Image) -> tuple[int, ...]:
    return image.convert("RGB").getpixel((image.width // 2, image.height // 2))


# --- IP-Adapter on Stable Diffusion and SDXL -------------------------------------------


def test_ip_adapter_takes_the_references_and_steers_the_image(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = saved("sd_ip_adapter")
    calls = spy_calls(monkeypatch, StableDiffusionPipeline)
    backend = text_to_image(str(saved("text_to_image")))
    ctx = settings(ip_adapter=str(adapter))
    plain = backend(tool_call(ctx))
    one = backend(tool_call(ctx, references=(flat(RED),)))
    two = backend(tool_call(ctx, references=(flat(BLUE), flat(RED))))

    # One adapter loaded: its images are one list, in the order of the request's refs.
    assert [color_of(image) for image in calls[2]["ip_adapter_image"][0]] == [BLUE, RED]
    assert color_of(calls[1]["ip_adapter_image"][0][0]) == RED
    assert not np.array_equal(pixels(plain), pixels(one))
    assert not np.array_equal(pixels(one), pixels(two))
    assert two.provenance | {"seed": 7} == plain.provenance | {
        "references": 2, "ip_adapter": f"{adapter}:models:ip-adapter_sd15.safetensors",
        "ip_adapter_scale": IP_ADAPTER_SCALE}
    assert "references" not in plain.provenance


def test_with_an_ip_adapter_loaded_a_request_without_references_draws_as_before(
        saved: Callable[[str], Path]) -> None:
    # The loaded adapter needs image embeddings on every call; at scale 0 they change nothing.
    model = str(saved("text_to_image"))
    without = text_to_image(model)(tool_call(settings()))
    loaded = text_to_image(model)(tool_call(settings(ip_adapter=str(saved("sd_ip_adapter")))))
    assert np.array_equal(pixels(without), pixels(loaded))
    assert loaded.provenance == without.provenance


def test_sdxl_reads_the_ip_adapter_of_its_family_from_the_published_layout(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = saved("sdxl_ip_adapter")
    calls = spy_calls(monkeypatch, diffusers.StableDiffusionXLPipeline)
    output = text_to_image(str(saved("sdxl")))(
        tool_call(settings(ip_adapter=str(adapter)), references=(flat(RED),)))
    assert color_of(calls[0]["ip_adapter_image"][0][0]) == RED
    assert output.provenance["ip_adapter"] == f"{adapter}:sdxl_models:ip-adapter_sdxl.safetensors"
    assert output.provenance["references"] == 1


def test_sdxl_adapters_for_vit_h_read_the_encoder_h94_publishes_beside_them(
        saved: Callable[[str], Path]) -> None:
    adapter = saved("sdxl_vit_h_ip_adapter")
    setting = f"{adapter}:sdxl_models:ip-adapter-plus_sdxl_vit-h.safetensors"
    output = text_to_image(str(saved("sdxl")))(
        tool_call(settings(ip_adapter=setting), references=(flat(RED),)))
    assert output.provenance["ip_adapter"] == setting


def test_an_edit_takes_references_through_the_ip_adapter(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = saved("pix2pix_ip_adapter")
    calls = spy_calls(monkeypatch, diffusers.StableDiffusionInstructPix2PixPipeline)
    output = image_edit(str(saved("instruct_pix2pix")))(tool_call(
        settings(ip_adapter=f"{adapter}::adapter.safetensors"), source=photo_jpeg(),
        references=(flat(BLUE),)))
    assert calls[0]["image"].size == (72, 48)
    assert color_of(calls[0]["ip_adapter_image"][0][0]) == BLUE
    assert output.provenance["references"] == 1
    assert REFERENCES_IGNORED not in output.provenance


def test_ip_adapter_that_cannot_be_loaded_is_a_config_error_naming_the_setting(
        saved: Callable[[str], Path]) -> None:
    setting = f"{saved('sd_ip_adapter')}:models:no-such-file.safetensors"
    with pytest.raises(ToolError, match="LLMI_IP_ADAPTER") as caught:
        text_to_image(str(saved("text_to_image")))(
            tool_call(settings(ip_adapter=setting), references=(flat(RED),)))
    assert caught.value.kind == "config" and "no-such-file" in str(caught.value)


# --- pipelines that take images --------------------------------------------------------


def test_flux_kontext_draws_from_the_first_reference_and_says_the_others_went_unused(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, diffusers.FluxKontextPipeline)
    backend = text_to_image(str(saved("flux_kontext")))
    alone = backend(tool_call(settings(image_size="32x32")))
    output = backend(tool_call(settings(image_size="32x32"), references=(flat(RED), flat(BLUE))))
    assert "image" not in calls[0]
    assert color_of(calls[1]["image"]) == RED
    assert output.provenance["references"] == 1
    assert output.provenance[REFERENCES_IGNORED] == (
        "FluxKontextPipeline takes one reference image, so the other 1 were not used")
    assert REFERENCES_IGNORED not in alone.provenance


@pytest.mark.usefixtures("small_qwen_plus")
def test_qwen_image_edit_plus_draws_from_every_reference(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, diffusers.QwenImageEditPlusPipeline)
    output = text_to_image(str(saved("qwen_image_edit_plus")))(
        tool_call(settings(image_size="32x32"), references=(flat(RED), flat(BLUE))))
    assert [color_of(image) for image in calls[0]["image"]] == [RED, BLUE]
    assert output.provenance["references"] == 2
    assert REFERENCES_IGNORED not in output.provenance


@pytest.mark.usefixtures("small_qwen_plus")
def test_qwen_image_edit_plus_draws_on_a_blank_canvas_without_references(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Its __call__ reads the size of the image it is given: it cannot draw from none.
    calls = spy_calls(monkeypatch, diffusers.QwenImageEditPlusPipeline)
    output = text_to_image(str(saved("qwen_image_edit_plus")))(
        tool_call(settings(image_size="48x32")))
    canvas = calls[0]["image"]
    assert canvas.size == (48, 32) and canvas.getextrema() == ((255, 255),) * 3
    assert output.provenance["blank_canvas"] == "48x32"
    assert "references" not in output.provenance


@pytest.mark.usefixtures("small_qwen_plus")
def test_qwen_image_edit_plus_edits_its_source_with_the_references(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, diffusers.QwenImageEditPlusPipeline)
    output = image_edit(str(saved("qwen_image_edit_plus")))(tool_call(
        settings(image_size="32x32"), source=flat(BLUE, (72, 48)), references=(flat(RED),)))
    source, reference = calls[0]["image"]
    assert source.size == (32, 32) and color_of(source) == BLUE  # the source comes first
    assert color_of(reference) == RED
    assert output.provenance["references"] == 1


# --- pipelines that take none ----------------------------------------------------------


@pytest.mark.parametrize(("name", "cls", "reason"), [
    ("text_to_image", StableDiffusionPipeline,
     "StableDiffusionPipeline takes no reference images; set LLMI_IP_ADAPTER to use IP-Adapter"),
    ("flux", diffusers.FluxPipeline,
     "FluxPipeline takes no reference images; use a pipeline that does (FluxKontextPipeline, "
     "QwenImageEditPlusPipeline) or Stable Diffusion / SDXL with LLMI_IP_ADAPTER"),
], ids=["sd", "flux"])
def test_a_pipeline_without_references_makes_the_image_and_says_so(
        saved: Callable[[str], Path], name: str, cls: type, reason: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, cls)
    backend = text_to_image(str(saved(name)))
    plain = backend(tool_call(settings(image_size="32x32")))
    output = backend(tool_call(settings(image_size="32x32"), references=(flat(RED),)))
    assert output.provenance[REFERENCES_IGNORED] == reason
    assert "references" not in output.provenance
    assert calls[0].keys() == calls[1].keys()  # nothing of the reference reached the call
    assert np.array_equal(pixels(plain), pixels(output))


@pytest.mark.parametrize(("name", "reason"), [
    ("instruct_pix2pix", "StableDiffusionInstructPix2PixPipeline edits one image and takes no "
                         "reference images besides it; set LLMI_IP_ADAPTER to use IP-Adapter"),
    ("flux_kontext", "FluxKontextPipeline edits one image and takes no reference images "
                     "besides it; QwenImageEditPlusPipeline takes them"),
])
def test_an_edit_on_a_one_image_pipeline_edits_the_source_alone_and_says_so(
        saved: Callable[[str], Path], name: str, reason: str) -> None:
    output = image_edit(str(saved(name)))(tool_call(
        settings(image_size="32x32"), source=photo_jpeg(), references=(flat(RED),)))
    assert output.provenance[REFERENCES_IGNORED] == reason
    assert "references" not in output.provenance


def test_a_reference_is_turned_upright_as_its_exif_orientation_says(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, diffusers.FluxKontextPipeline)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned a quarter; rotate to view
    photo = io.BytesIO()
    Image.new("RGB", (40, 30), RED).save(photo, "JPEG", exif=exif)
    text_to_image(str(saved("flux_kontext")))(
        tool_call(settings(image_size="32x32"), references=(photo.getvalue(),)))
    assert calls[0]["image"].size == (30, 40)


def test_an_unreadable_reference_is_a_tool_error(saved: Callable[[str], Path]) -> None:
    with pytest.raises(ToolError, match="reference image 2 is not a readable image"):
        text_to_image(str(saved("flux_kontext")))(
            tool_call(settings(image_size="32x32"), references=(flat(RED), b"not an image")))


# --- batching ----------------------------------------------------------------------------


def test_requests_share_a_call_only_with_the_same_references(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, StableDiffusionPipeline)
    backend = text_to_image(str(saved("text_to_image")), window_s=1.0)
    ctx = settings(ip_adapter=str(saved("sd_ip_adapter")))
    colors = {"a red cat": (RED,), "the red sky": (RED,), "snow": (BLUE,), "a photo of a cat": ()}
    requests = [tool_call(ctx, slot=i, prompt=prompt, references=tuple(map(flat, refs)))
                for i, (prompt, refs) in enumerate(colors.items())]
    outputs = run_together(backend, requests)

    assert sorted(len(call["prompt"]) if isinstance(call["prompt"], list) else 1
                  for call in calls) == [1, 1, 2]
    for call in calls:
        prompts = call["prompt"] if isinstance(call["prompt"], list) else [call["prompt"]]
        given = [color_of(image) for image in call["ip_adapter_image"][0]]
        # Every prompt of a call has the references the call was given; the blank image
        # (scale 0) goes only with a request that has none.
        assert all(given == list(colors[prompt] or [(0, 0, 0)]) for prompt in prompts)
    assert [o.provenance.get("references", 0) for o in outputs] == [1, 1, 1, 0]
    # Each member got the image of its own prompt, seed and references, as if run alone.
    alone = pixels(backend(requests[1]))
    assert np.abs(alone - pixels(outputs[1])).mean() < 2.0


@pytest.mark.usefixtures("small_qwen_plus")
def test_a_pipeline_that_takes_one_prompt_a_call_never_batches(
        saved: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # QwenImageEditPlusPipeline: "currently only supports batch_size=1".
    calls = spy_calls(monkeypatch, diffusers.QwenImageEditPlusPipeline)
    backend = text_to_image(str(saved("qwen_image_edit_plus")), window_s=1.0)
    requests = [tool_call(settings(image_size="32x32"), slot=i, references=(flat(RED),))
                for i in range(2)]
    outputs = run_together(backend, requests)
    assert [o.provenance["references"] for o in outputs] == [1, 1]
    assert [isinstance(call["prompt"], str) for call in calls] == [True, True]
