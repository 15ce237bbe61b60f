"""The diffusers backends, run on tiny random-weight pipelines saved to disk (no hub)."""

from __future__ import annotations

import functools
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

import diffusers  # noqa: E402
import tiny_pipelines  # noqa: E402
import torch  # noqa: E402

from diffusers import (  # noqa: E402
    DiffusionPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
)
from PIL import Image, ImageDraw  # noqa: E402
from tiny_pipelines import save_instruct_pix2pix, save_text_to_image  # noqa: E402

from llmi.context import Context  # noqa: E402
from llmi.state import ImageRequest  # noqa: E402
from llmi.tools import pipelines  # noqa: E402
from llmi.tools.base import ToolCall, ToolError, ToolOutput  # noqa: E402
from llmi.tools.pipelines import image_edit, release_pipelines, text_to_image  # noqa: E402
from llmi.tools.qwen_processor import StillImageProcessor, torchvision_imports  # noqa: E402

# The backend passes the dtype under the name the installed diffusers takes, so its
# deprecation warning would be a bug.
pytestmark = pytest.mark.filterwarnings("error:.*torch_dtype.*:FutureWarning")

@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models gain nothing from threads, and spinning OpenMP threads crawl when other
    # processes share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pipelines")
    return {"sd": save_text_to_image(folder), "pix2pix": save_instruct_pix2pix(folder)}


@pytest.fixture(autouse=True)
def _fresh_pipelines() -> Iterator[None]:
    yield
    release_pipelines()


def settings(**overrides: Any) -> Context:
    values: dict[str, Any] = {"image_size": "64x64", "diffusion_steps": 2, "seed": 7,
                              "device": "cpu"}
    return Context(**{**values, **overrides})


def tool_call(context: Context, *, slot: int = 0, prompt: str = "a photo of a red cat",
              source: bytes | None = None, deadline_s: float = 60.0,
              references: tuple[bytes, ...] = ()) -> ToolCall:
    request = ImageRequest(slot=slot, source="edit" if source else "diffusion",
                           description=prompt, params={"prompt": prompt},
                           depends_on=None, attempt=0)
    return ToolCall(request=request, context=context, deadline_s=deadline_s,
                    source_image=source, references=references)


def decoded(output: ToolOutput) -> Image.Image:
    assert output.data.startswith(b"\x89PNG")
    image = Image.open(io.BytesIO(output.data))
    image.load()
    return image


def pixels(output: ToolOutput) -> np.ndarray:
    return np.asarray(decoded(output).convert("RGB"), dtype=np.int16)


def encoded(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def spy_calls(monkeypatch: pytest.MonkeyPatch, cls: type,
              before: Callable[[dict[str, Any]], None] = lambda kwargs: None) -> list[dict]:
    """Record the keyword arguments of every call of ``cls``'s pipelines."""
    calls: list[dict[str, Any]] = []
    original = cls.__call__

    @functools.wraps(original)
    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        before(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", recorded)
    return calls


def run_together(backend: Callable[[ToolCall], ToolOutput], calls: list[ToolCall]) -> list[Any]:
    """Run ``calls`` on threads that start at the same moment; outputs or errors, in order."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def worker(index: int) -> None:
        start.wait()
        try:
            results[index] = backend(calls[index])
        except ToolError as error:
            results[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# --- text to image --------------------------------------------------------------------


def test_generates_png_with_provenance(tiny: dict[str, Path]) -> None:
    output = text_to_image(str(tiny["sd"]))(tool_call(settings(), slot=3))
    assert decoded(output).size == (64, 64)
    assert output.backend == "diffusers"
    assert output.provenance == {
        "prompt": "a photo of a red cat", "model": str(tiny["sd"]), "seed": 10, "steps": 2,
        "guidance": 7.5, "size_asked": "64x64", "size_used": "64x64", "device": "cpu",
        "dtype": "float32",
    }


def test_size_that_is_no_multiple_is_resized_to_the_setting(tiny: dict[str, Path]) -> None:
    output = text_to_image(str(tiny["sd"]))(tool_call(settings(image_size="45x31")))
    assert decoded(output).size == (45, 31)


def test_settings_reach_the_pipeline_only_when_set(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, StableDiffusionPipeline)
    backend = text_to_image(str(tiny["sd"]))
    backend(tool_call(settings(diffusion_guidance=2.5)))
    defaults = backend(tool_call(settings(diffusion_steps=0, image_size="16x16")))
    assert calls[0]["num_inference_steps"] == 2 and calls[0]["guidance_scale"] == 2.5
    assert "num_inference_steps" not in calls[1] and "guidance_scale" not in calls[1]
    assert defaults.provenance["steps"] == 50 and defaults.provenance["guidance"] == 7.5


def test_same_seed_same_image_other_seed_other_image(tiny: dict[str, Path]) -> None:
    backend = text_to_image(str(tiny["sd"]))
    first = pixels(backend(tool_call(settings(seed=1))))
    again = pixels(backend(tool_call(settings(seed=1))))
    other = pixels(backend(tool_call(settings(seed=2))))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_drawn_seed_is_recorded_and_reproduces_the_image(tiny: dict[str, Path]) -> None:
    backend = text_to_image(str(tiny["sd"]))
    drawn = backend(tool_call(settings(seed=-1), slot=2))
    seed = drawn.provenance["seed"]
    assert isinstance(seed, int) and seed >= 0
    again = backend(tool_call(settings(seed=seed - 2), slot=2))
    assert again.provenance["seed"] == seed
    assert np.array_equal(pixels(drawn), pixels(again))


def test_concurrent_requests_share_one_call_each_with_its_own_image(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, StableDiffusionPipeline)
    backend = text_to_image(str(tiny["sd"]), window_s=1.0)
    prompts = ["a red cat", "the blue sky", "snow", "a photo of a cat"]
    requests = [tool_call(settings(), slot=i, prompt=p) for i, p in enumerate(prompts)]
    outputs = run_together(backend, requests)

    assert len(calls) == 1 and sorted(calls[0]["prompt"]) == sorted(prompts)
    assert [o.provenance["seed"] for o in outputs] == [7, 8, 9, 10]
    assert [o.provenance["prompt"] for o in outputs] == prompts
    images = [pixels(o) for o in outputs]
    assert all(not np.array_equal(a, b) for i, a in enumerate(images) for b in images[i + 1:])
    # Each member got the image of its own prompt and seed, as if it had run alone.
    alone = pixels(backend(requests[2]))
    assert np.abs(alone - images[2]).mean() < 2.0


def test_requests_with_other_settings_are_not_batched_together(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, StableDiffusionPipeline)
    backend = text_to_image(str(tiny["sd"]), window_s=0.5)
    outputs = run_together(backend, [tool_call(settings(image_size="64x64")),
                                     tool_call(settings(image_size="32x32"))])
    assert sorted(decoded(o).size for o in outputs) == [(32, 32), (64, 64)]
    assert len(calls) == 2


def test_pipeline_is_loaded_once_per_process(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    original = DiffusionPipeline.from_pretrained

    def counted(model: str, **kwargs: Any) -> Any:
        loads.append(model)
        time.sleep(0.2)  # widens the window in which a second thread could load it too
        return original(model, **kwargs)

    monkeypatch.setattr(pipelines.DiffusionPipeline, "from_pretrained", counted)
    requests = [tool_call(settings(), slot=i) for i in range(3)]
    run_together(text_to_image(str(tiny["sd"])), requests)
    text_to_image(str(tiny["sd"]))(requests[0])
    assert loads == [str(tiny["sd"])]


def test_failed_batch_fails_each_member(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(kwargs: dict[str, Any]) -> None:
        raise RuntimeError("the kernel fell over")

    spy_calls(monkeypatch, StableDiffusionPipeline, before=broken)
    backend = text_to_image(str(tiny["sd"]), window_s=0.5)
    errors = run_together(backend, [tool_call(settings(), slot=i) for i in range(2)])
    assert all(isinstance(e, ToolError) and "the kernel fell over" in str(e) for e in errors)
    assert all(e.kind == "backend" and not e.transient for e in errors)


def test_out_of_memory_is_a_transient_readable_error(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(kwargs: dict[str, Any]) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    spy_calls(monkeypatch, StableDiffusionPipeline, before=oom)
    with pytest.raises(ToolError, match="out of memory") as caught:
        text_to_image(str(tiny["sd"]))(tool_call(settings()))
    assert caught.value.transient


def test_a_call_past_its_deadline_times_out(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    backend = text_to_image(str(tiny["sd"]))
    backend(tool_call(settings()))  # loaded, so only the wait counts
    spy_calls(monkeypatch, StableDiffusionPipeline, before=lambda kwargs: time.sleep(0.6))
    with pytest.raises(ToolError) as caught:
        backend(tool_call(settings(), deadline_s=0.2))
    assert caught.value.kind == "timeout" and caught.value.transient


# --- edit -----------------------------------------------------------------------------


def chart_rgba(size: tuple[int, int] = (72, 48)) -> bytes:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for i, height in enumerate((10, 30, 20, 40)):
        draw.rectangle((8 + i * 16, size[1] - height, 18 + i * 16, size[1] - 1),
                       fill=(30, 90, 200, 255))
    return encoded(image)


def palette_png(size: tuple[int, int] = (72, 48)) -> bytes:
    image = Image.new("RGB", size, (240, 200, 40))
    ImageDraw.Draw(image).ellipse((10, 5, 50, 40), fill=(20, 120, 60))
    return encoded(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8))


def photo_jpeg(size: tuple[int, int] = (72, 48)) -> bytes:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    return buf.getvalue()


def gray_png(size: tuple[int, int] = (72, 48)) -> bytes:
    return encoded(Image.linear_gradient("L").resize(size))


@pytest.mark.parametrize("source", [chart_rgba, palette_png, photo_jpeg, gray_png],
                         ids=lambda make: make.__name__)
def test_edit_follows_the_source_size(tiny: dict[str, Path],
                                      source: Callable[[], bytes]) -> None:
    output = image_edit(str(tiny["pix2pix"]))(
        tool_call(settings(), slot=1, prompt="make it snow", source=source()))
    assert decoded(output).size == (72, 48)
    assert output.provenance["seed"] == 8
    assert output.provenance["source_size"] == "72x48"
    assert output.provenance["prompt"] == "make it snow"
    assert output.provenance["model"] == str(tiny["pix2pix"])


def test_transparent_source_is_flattened_on_white(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, StableDiffusionInstructPix2PixPipeline)
    image_edit(str(tiny["pix2pix"]))(tool_call(settings(), source=chart_rgba()))
    given = calls[0]["image"]
    assert given.mode == "RGB"
    assert given.getpixel((0, 0)) == (255, 255, 255)


def test_edit_follows_the_edit_size_setting(tiny: dict[str, Path]) -> None:
    output = image_edit(str(tiny["pix2pix"]))(
        tool_call(settings(edit_size="40x56"), source=photo_jpeg()))
    assert decoded(output).size == (40, 56)
    assert output.provenance["source_size"] == "72x48"


def test_large_source_is_worked_on_smaller_and_returned_at_its_size(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, StableDiffusionInstructPix2PixPipeline)
    output = image_edit(str(tiny["pix2pix"]))(
        tool_call(settings(image_size="32x32"), source=photo_jpeg((160, 120))))
    assert calls[0]["image"].size == (40, 32)  # 32x32 pixels' worth, in multiples of 8
    assert decoded(output).size == (160, 120)


def test_unreadable_source_is_a_tool_error(tiny: dict[str, Path]) -> None:
    with pytest.raises(ToolError, match="not a readable image"):
        image_edit(str(tiny["pix2pix"]))(tool_call(settings(), source=b"not an image"))


def test_text_to_image_pipeline_cannot_edit(tiny: dict[str, Path]) -> None:
    with pytest.raises(ToolError, match="cannot edit") as caught:
        image_edit(str(tiny["sd"]))(tool_call(settings(), source=photo_jpeg()))
    assert caught.value.kind == "config"


# --- configuration errors -------------------------------------------------------------


@pytest.mark.parametrize("backend", [text_to_image, image_edit])
def test_missing_model_folder_is_a_config_error_naming_it(
        tmp_path: Path, backend: Callable[[str], Callable[[ToolCall], ToolOutput]]) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ToolError) as caught:
        backend(str(missing))(tool_call(settings(), source=photo_jpeg()))
    assert caught.value.kind == "config" and str(missing) in str(caught.value)


def test_folder_that_is_no_pipeline_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ToolError) as caught:
        text_to_image(str(tmp_path))(tool_call(settings()))
    assert caught.value.kind == "config" and str(tmp_path) in str(caught.value)


@pytest.mark.parametrize("overrides", [{"image_size": "big"}, {"device": "warp-drive"}])
def test_bad_settings_are_config_errors(tiny: dict[str, Path], overrides: dict) -> None:
    with pytest.raises(ToolError) as caught:
        text_to_image(str(tiny["sd"]))(tool_call(settings(**overrides)))
    assert caught.value.kind == "config"


def test_empty_model_is_a_config_error() -> None:
    with pytest.raises(ToolError, match="LLMI_DIFFUSION") as caught:
        text_to_image("")
    assert caught.value.kind == "config"


# --- each family users pick, loaded from disk as a real checkpoint is -------------------


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Saves the tiny pipeline of a family on first use and returns its folder."""
    folder = tmp_path_factory.mktemp("families")
    return functools.cache(lambda name: getattr(tiny_pipelines, f"save_{name}")(folder))


@pytest.mark.parametrize(("name", "cls"), [
    ("text_to_image", StableDiffusionPipeline),
    ("sdxl", diffusers.StableDiffusionXLPipeline),
    ("sd3", diffusers.StableDiffusion3Pipeline),
    ("flux", diffusers.FluxPipeline),
    ("pixart_sigma", diffusers.PixArtSigmaPipeline),
    ("sana", diffusers.SanaPipeline),
    ("qwen_image", diffusers.QwenImagePipeline),
], ids=lambda value: getattr(value, "__name__", value))
def test_family_draws_at_the_size_set(family: Callable[[str], Path], name: str, cls: type,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, cls)
    output = text_to_image(str(family(name)))(tool_call(settings(image_size="48x32")))
    assert decoded(output).size == (48, 32)
    assert len(calls) == 1 and calls[0]["num_inference_steps"] == 2
    assert output.provenance["model"] == str(family(name))


@pytest.mark.parametrize(("name", "cls", "work"), [
    ("instruct_pix2pix", StableDiffusionInstructPix2PixPipeline, (40, 24)),
    ("img2img", diffusers.StableDiffusionImg2ImgPipeline, (40, 24)),
    ("flux_kontext", diffusers.FluxKontextPipeline, (32, 32)),  # sides in 16s
    ("qwen_image_edit", diffusers.QwenImageEditPipeline, (32, 32)),
    ("qwen_image_edit_plus", diffusers.QwenImageEditPlusPipeline, (32, 32)),
], ids=lambda value: getattr(value, "__name__", value))
def test_family_edits_at_the_source_size(family: Callable[[str], Path], name: str, cls: type,
                                         work: tuple[int, int],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, cls)
    output = image_edit(str(family(name)))(
        tool_call(settings(image_size="32x32"), prompt="make it snow", source=photo_jpeg()))
    assert decoded(output).size == (72, 48)
    assert output.provenance["source_size"] == "72x48"
    assert len(calls) == 1 and calls[0]["image"].size == work  # 32x32's pixel count


def test_flux_kontext_is_held_to_the_size_budget(
        family: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Kontext draws max_area pixels (a megapixel unless told) whatever width and height say.
    seen: list[tuple[dict[str, Any], tuple[int, int]]] = []
    original = diffusers.FluxKontextPipeline.__call__

    @functools.wraps(original)
    def recorded(self: Any, **kwargs: Any) -> Any:
        result = original(self, **kwargs)
        seen.append((kwargs, result.images[0].size))
        return result

    monkeypatch.setattr(diffusers.FluxKontextPipeline, "__call__", recorded)
    image_edit(str(family("flux_kontext")))(
        tool_call(settings(image_size="32x32"), source=photo_jpeg((64, 64))))
    [(kwargs, drawn)] = seen
    assert kwargs["max_area"] == 32 * 32 and drawn == (32, 32)


@pytest.mark.parametrize(("name", "native"), [("text_to_image", (64, 64)), ("sdxl", (64, 64)),
                                              ("sana", (128, 128))])
def test_without_a_size_setting_each_pipeline_draws_its_native_size(
        family: Callable[[str], Path], name: str, native: tuple[int, int]) -> None:
    # Tiny configs: sample size 32 (latent) times VAE factor 2; Sana 16 times 8.
    output = text_to_image(str(family(name)))(tool_call(settings(image_size="")))
    assert decoded(output).size == native
    assert output.provenance["size_used"] == f"{native[0]}x{native[1]}"
    assert output.provenance["size_asked"] is None


def test_without_a_size_setting_an_edit_works_within_the_native_pixel_count(
        family: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_calls(monkeypatch, StableDiffusionInstructPix2PixPipeline)
    output = image_edit(str(family("instruct_pix2pix")))(
        tool_call(settings(image_size=""), source=photo_jpeg((160, 120))))
    assert calls[0]["image"].size == (72, 56)  # 64x64's pixel count, in multiples of 8
    assert decoded(output).size == (160, 120)


@pytest.mark.skipif(torchvision_imports(), reason="torchvision imports: the published processor loads")
@pytest.mark.parametrize("name", ["qwen_image_edit", "qwen_image_edit_plus"])
def test_qwen_image_edit_loads_its_processor_for_still_images_without_torchvision(
        family: Callable[[str], Path], name: str) -> None:
    output = image_edit(str(family(name)))(
        tool_call(settings(image_size="32x32"), source=photo_jpeg()))
    assert decoded(output).size == (72, 48)
    [runner] = pipelines._runners.values()
    pipe = runner.pipe
    assert isinstance(pipe.processor, StillImageProcessor)
    assert pipe.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == pipe.processor.image_token_id


class FakePipeline:
    """Just the attributes the native size is read from."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    def __call__(self, prompt: str, width: int | None = None, height: int | None = None) -> None:
        raise AssertionError("not called")


class FakeSanaLike(FakePipeline):
    def __call__(self, prompt: str, width: int = 768, height: int = 512) -> None:
        raise AssertionError("not called")


def config(**values: Any) -> Any:
    return FakePipeline(config=FakePipeline(**values))


@pytest.mark.parametrize(("pipe", "native"), [
    (FakePipeline(default_sample_size=128, vae_scale_factor=8, unet=config(sample_size=64)),
     (1024, 1024)),
    (FakePipeline(vae_scale_factor=8, unet=config(sample_size=64)), (512, 512)),
    (FakePipeline(vae_scale_factor=8, unet=config(sample_size=[96, 64])), (512, 768)),
    (FakePipeline(vae_scale_factor=32, transformer=config(sample_size=32)), (1024, 1024)),
    (FakeSanaLike(), (768, 512)),
    (FakePipeline(vae_scale_factor=8), None),
], ids=["default_sample_size", "unet", "height-width-config", "transformer", "call-default",
        "unknown"])
def test_native_size_is_read_as_the_pipeline_reads_it(
        pipe: Any, native: tuple[int, int] | None) -> None:
    assert pipelines._native_size(pipe) == native


def test_edit_with_no_size_setting_and_no_native_size_is_a_config_error(
        family: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipelines, "_native_size", lambda pipe: None)
    with pytest.raises(ToolError, match="LLMI_IMAGE_SIZE") as caught:
        image_edit(str(family("instruct_pix2pix")))(
            tool_call(settings(image_size=""), source=photo_jpeg()))
    assert caught.value.kind == "config"
