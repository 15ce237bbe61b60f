"""The OpenAI-compatible images backends, against a loopback stand-in server."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai
import pytest
from PIL import Image

from images_standin import ImagesServer, images_server
from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools.base import REFERENCES_IGNORED, ToolCall, ToolError
from llmi.tools.cache import ToolCache
from llmi.tools.images_api import openai_edit, openai_generate
from openai_standin import closed_port_url


@pytest.fixture
def server() -> Iterator[ImagesServer]:
    with images_server() as images:
        yield images


def _context(images_base_url: str, **overrides: Any) -> Context:
    settings: dict[str, Any] = {
        "images_base_url": images_base_url, "base_url": "", "api_key": "", "image_size": "64x48",
        "edit_size": "", "seed": -1, "connect_timeout": 2.0, "edit_base_url": "",
        "edit_api_key": "",
    }
    return Context(**(settings | overrides))


def _call(context: Context, *, source: bytes | None = None, deadline_s: float = 5.0,
          slot: int = 0, references: tuple[bytes, ...] = ()) -> ToolCall:
    request = ImageRequest(slot=slot, source="edit" if source else "diffusion",
                           description="a lighthouse", params={"prompt": "a lighthouse at dusk"},
                           depends_on=None, attempt=0)
    return ToolCall(request=request, context=context, deadline_s=deadline_s, source_image=source,
                    references=references)


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _chart_rgba(size: tuple[int, int] = (120, 90)) -> bytes:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((200, 40, 40, 255), (10, 10, 60, 80))
    return _encode(image)


def _palette(size: tuple[int, int] = (100, 60), *, transparent: bool) -> bytes:
    image = Image.new("RGB", size, (30, 160, 90)).convert("P", palette=Image.Palette.ADAPTIVE)
    if transparent:
        image.info["transparency"] = 0
    return _encode(image)


# --- generation ------------------------------------------------------------------------


def test_generate_returns_png_with_provenance(server: ImagesServer) -> None:
    server.revised_prompt = "a lighthouse at dusk, oil painting"
    out = openai_generate("qwen-image")(_call(_context(server.base_url)))

    image = _decode(out.data)
    assert (image.format, image.size) == ("PNG", (64, 48))
    assert out.backend == "openai-images"
    assert out.provenance == {"prompt": "a lighthouse at dusk", "model": "qwen-image",
                              "family": "open server",
                              "size_asked": "64x48", "size_used": "64x48",
                              "seed_requested": None,
                              "revised_prompt": "a lighthouse at dusk, oil painting"}
    [seen] = server.requests
    assert seen.path == "/v1/images/generations"
    assert seen.auth == "Bearer EMPTY"
    assert seen.fields == {"model": "qwen-image", "prompt": "a lighthouse at dusk", "n": 1,
                           "size": "64x48", "response_format": "b64_json"}


def test_seed_goes_to_open_servers_offset_by_slot(server: ImagesServer) -> None:
    out = openai_generate("m")(_call(_context(server.base_url, seed=40), slot=2))

    assert server.requests[0].fields["seed"] == 42
    # vLLM-Omni and SGLang take the seed but do not say which one they used.
    assert out.provenance["seed_requested"] == 42 and "seed" not in out.provenance


def test_base_url_falls_back_to_the_chat_base_url(server: ImagesServer) -> None:
    ctx = _context("", base_url=server.base_url, api_key="sk-local")
    openai_generate("m")(_call(ctx))

    assert server.requests[0].auth == "Bearer sk-local"


def test_openai_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ToolError) as info:
        openai_generate("gpt-image-1")(_call(_context("")))

    assert info.value.kind == "config"
    assert "OPENAI_API_KEY" in str(info.value) and "LLMI_IMAGES_BASE_URL" in str(info.value)


@pytest.mark.parametrize("url", ["localhost:8000/v1", "not a url", "http://"])
def test_a_malformed_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ToolError, match="LLMI_IMAGES_BASE_URL") as info:
        openai_generate("m")(_call(_context(url)))
    assert info.value.kind == "config"


def test_openai_models_get_no_seed_and_response_format_only_for_dall_e(
    server: ImagesServer,
) -> None:
    server.openai_rules = True
    ctx = _context(server.base_url, api_key="sk-test", seed=3, image_size="1024x1024")
    gpt = openai_generate("gpt-image-1")(_call(ctx))
    openai_generate("dall-e-3")(_call(ctx))

    gpt_fields, dalle_fields = (seen.fields for seen in server.requests)
    assert "response_format" not in gpt_fields and "seed" not in gpt_fields
    assert dalle_fields["response_format"] == "b64_json" and "seed" not in dalle_fields
    assert gpt.provenance["seed_requested"] is None and "seed" not in gpt.provenance
    assert server.requests[0].auth == "Bearer sk-test"


# --- edits -----------------------------------------------------------------------------


def test_edit_sends_the_image_as_multipart_with_the_prompt(server: ImagesServer) -> None:
    source = _encode(Image.new("RGB", (96, 80), (10, 20, 30)))
    out = openai_edit("qwen-image-edit")(_call(_context(server.base_url), source=source))

    [seen] = server.requests
    assert seen.path == "/v1/images/edits"
    assert seen.content_type.startswith("multipart/form-data")
    assert seen.fields == {"model": "qwen-image-edit", "prompt": "a lighthouse at dusk",
                           "n": "1", "size": "96x80", "response_format": "b64_json"}
    upload = seen.files["image"]
    assert (upload.filename, upload.content_type) == ("image.png", "image/png")
    assert _decode(upload.data).size == (96, 80)
    assert _decode(out.data).size == (96, 80)
    assert out.provenance == {"prompt": "a lighthouse at dusk", "model": "qwen-image-edit",
                              "family": "open server",
                              "size_asked": "96x80", "size_used": "96x80",
                              "seed_requested": None}


@pytest.mark.parametrize(("source", "sent_mode"), [
    (_chart_rgba(), "RGBA"),
    (_palette(transparent=True), "RGBA"),
    (_palette(transparent=False), "RGB"),
    (_encode(Image.new("RGB", (90, 70), (120, 80, 40)), "JPEG"), "RGB"),
    (_encode(Image.new("CMYK", (90, 70), (0, 50, 90, 10)), "JPEG"), "RGB"),
    (_encode(Image.new("LA", (90, 70), (120, 200))), "RGBA"),
    (_encode(Image.new("L", (90, 70), 120)), "RGB"),
], ids=["rgba-chart", "palette-alpha", "palette", "jpeg", "cmyk-jpeg", "gray-alpha", "gray"])
def test_edit_converts_any_source_to_png_and_keeps_its_size(
    server: ImagesServer, source: bytes, sent_mode: str
) -> None:
    out = openai_edit("m")(_call(_context(server.base_url), source=source))

    upload = _decode(server.requests[0].files["image"].data)
    assert (upload.format, upload.mode) == ("PNG", sent_mode)
    assert upload.size == _decode(source).size == _decode(out.data).size


def test_edit_follows_edit_size(server: ImagesServer) -> None:
    ctx = _context(server.base_url, edit_size="128x64")
    out = openai_edit("m")(_call(ctx, source=_chart_rgba()))

    assert server.requests[0].fields["size"] == "128x64"
    assert _decode(out.data).size == (128, 64)


def test_edit_result_of_another_size_is_fitted_back_to_the_source_size(
    server: ImagesServer,
) -> None:
    server.answer_size = (100, 100)
    out = openai_edit("m")(_call(_context(server.base_url), source=_chart_rgba((120, 90))))

    assert _decode(out.data).size == (120, 90)


def test_large_source_asks_an_open_server_for_about_a_megapixel(server: ImagesServer) -> None:
    source = _encode(Image.new("RGB", (2400, 1600), (90, 90, 90)))
    out = openai_edit("m")(_call(_context(server.base_url), source=source))

    assert server.requests[0].fields["size"] == "1248x832"
    assert max(_decode(server.requests[0].files["image"].data).size) == 2048
    assert _decode(out.data).size == (2400, 1600)


def test_edit_with_gpt_image_asks_for_the_closest_supported_size(server: ImagesServer) -> None:
    server.openai_rules = True
    ctx = _context(server.base_url, api_key="sk-test", seed=3)
    out = openai_edit("gpt-image-1")(_call(ctx, source=_chart_rgba((200, 100))))

    assert server.requests[0].fields["size"] == "1536x1024"
    assert "response_format" not in server.requests[0].fields
    assert "seed" not in server.requests[0].fields
    assert _decode(out.data).size == (200, 100)
    assert (out.provenance["size_asked"], out.provenance["size_used"]) == ("200x100", "1536x1024")


def test_edit_without_a_source_fails_clearly(server: ImagesServer) -> None:
    with pytest.raises(ToolError, match="needs the image it changes"):
        openai_edit("m")(_call(_context(server.base_url)))
    assert server.requests == []


def test_malformed_edit_size_is_a_config_error(server: ImagesServer) -> None:
    with pytest.raises(ToolError, match="LLMI_EDIT_SIZE") as info:
        openai_edit("m")(_call(_context(server.base_url, edit_size="big"), source=_chart_rgba()))
    assert info.value.kind == "config"


# --- what each model family takes (OpenAI's Images API reference) ------------------------


@pytest.mark.parametrize(("model", "asked", "sent"), [
    ("gpt-image-1", "1000x700", "1536x1024"),
    ("gpt-image-1-mini", "64x48", "1536x1024"),
    ("gpt-image-1.5", "600x1000", "1024x1536"),
    ("openai/gpt-image-1", "1024x1024", "1024x1024"),
    ("gpt-image-1", "auto", "auto"),
    ("dall-e-2", "300x200", "256x256"),
    ("dall-e-2", "2000x1500", "1024x1024"),
    ("dall-e-3", "1920x1080", "1792x1024"),
    ("dall-e-3", "500x520", "1024x1024"),
])
def test_a_gateway_serving_openai_models_gets_the_nearest_size_they_take(
    server: ImagesServer, model: str, asked: str, sent: str
) -> None:
    # A gateway (LiteLLM, OpenRouter) on another host than api.openai.com, in front of
    # OpenAI: what is sent follows the model, and OpenAI refuses anything else.
    server.openai_rules = True
    ctx = _context(server.base_url, api_key="sk-gateway", image_size=asked, seed=7)
    out = openai_generate(model)(_call(ctx))

    [seen] = server.requests
    assert seen.fields["size"] == sent
    assert (out.provenance["size_asked"], out.provenance["size_used"]) == (asked, sent)
    assert "seed" not in seen.fields and "seed" not in out.provenance
    assert model.rpartition("/")[2].startswith(out.provenance["family"])  # gpt-image, dall-e-2..


def test_a_size_reads_as_the_diffusers_backends_read_it(server: ImagesServer) -> None:
    # One WxH parser for every backend: spaces, X and × as LLMI_IMAGE_SIZE may be written.
    server.openai_rules = True
    ctx = _context(server.base_url, api_key="sk-gateway", image_size=" 1920 × 1080 ")
    openai_generate("dall-e-3")(_call(ctx))
    assert server.requests[0].fields["size"] == "1792x1024"


@pytest.mark.parametrize(("model", "sent"), [
    ("gpt-image-1", "auto"), ("dall-e-2", "1024x1024"), ("dall-e-3", "1024x1024"),
    ("Qwen/Qwen-Image", None),
])
def test_an_empty_image_size_leaves_the_size_to_the_model(
    server: ImagesServer, model: str, sent: str | None
) -> None:
    server.openai_rules = model != "Qwen/Qwen-Image"
    out = openai_generate(model)(_call(_context(server.base_url, image_size="")))

    assert server.requests[0].fields.get("size") == sent
    assert (out.provenance["size_asked"], out.provenance["size_used"]) == (None, sent)


def test_the_standin_refuses_what_openai_refuses(server: ImagesServer) -> None:
    server.openai_rules = True
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    refusals = [
        lambda: client.images.generate(model="gpt-image-1", prompt="p", size="64x48"),
        lambda: client.images.generate(model="gpt-image-1-mini", prompt="p",
                                       response_format="b64_json"),
        lambda: client.images.generate(model="dall-e-3", prompt="p", size="512x512"),
        lambda: client.images.edit(model="dall-e-3", prompt="p",
                                   image=("i.png", _chart_rgba((64, 64)), "image/png")),
        lambda: client.images.edit(model="dall-e-2", prompt="p",
                                   image=("i.png", _chart_rgba((96, 64)), "image/png")),
        lambda: client.images.edit(model="dall-e-2", prompt="p", image=(
            "i.png", _encode(Image.new("RGB", (64, 64), (1, 2, 3))), "image/png")),
        lambda: client.images.edit(model="dall-e-2", prompt="p", image=[
            ("i.png", _chart_rgba((64, 64)), "image/png")] * 2),
        lambda: client.images.edit(model="gpt-image-1.5", prompt="p", image=[
            ("i.png", _chart_rgba((64, 64)), "image/png")] * 17),
    ]
    for refused in refusals:
        with pytest.raises(openai.BadRequestError) as info:
            refused()
        assert info.value.type == "invalid_request_error"
    client.close()


def test_an_openai_model_behind_an_alias_gets_a_hint_when_refused(server: ImagesServer) -> None:
    server.openai_rules = True  # a deployment named my-images, serving dall-e-2
    with pytest.raises(ToolError, match="Unknown parameter: 'seed'") as info:
        openai_generate("my-images")(_call(_context(server.base_url, seed=1)))

    assert "name it as OpenAI does" in str(info.value) and info.value.transient is False
    assert len(server.requests) == 1


def test_an_unknown_image_size_for_a_model_of_fixed_sizes_is_a_config_error(
    server: ImagesServer,
) -> None:
    with pytest.raises(ToolError, match="LLMI_IMAGE_SIZE") as info:
        openai_generate("gpt-image-1")(_call(_context(server.base_url, image_size="large")))
    assert info.value.kind == "config" and server.requests == []


def test_dall_e_3_edits_are_refused_before_any_call(server: ImagesServer) -> None:
    with pytest.raises(ToolError, match="LLMI_EDIT") as info:
        openai_edit("dall-e-3")(_call(_context(server.base_url), source=_chart_rgba()))
    assert info.value.kind == "config" and "dall-e-3 makes no edits" in str(info.value)
    assert server.requests == []


def test_a_dall_e_2_edit_sends_a_square_png_and_crops_back(server: ImagesServer) -> None:
    server.openai_rules = True
    out = openai_edit("dall-e-2")(_call(_context(server.base_url), source=_chart_rgba((120, 90))))

    [seen] = server.requests
    upload = _decode(seen.files["image"].data)
    assert (upload.format, upload.mode, upload.size) == ("PNG", "RGBA", (256, 256))
    # The padding (rows above the centred 256x192 source) is kept; the source's
    # transparent background is what dall-e-2 repaints; its opaque bar stays.
    assert upload.getpixel((5, 5))[3] == 255
    assert upload.getpixel((128, 40))[3] == 0
    assert upload.getpixel((60, 120))[3] == 255
    assert seen.fields["size"] == "256x256" and seen.fields["response_format"] == "b64_json"
    assert _decode(out.data).size == (120, 90)
    assert (out.provenance["size_asked"], out.provenance["size_used"]) == ("120x90", "256x256")


def test_a_dall_e_2_answer_is_cropped_to_the_source_region(server: ImagesServer) -> None:
    answer = Image.new("RGB", (256, 256), (255, 0, 0))  # red where the padding was
    answer.paste((0, 200, 0), (0, 32, 256, 224))
    server.item = {"b64_json": base64.b64encode(_encode(answer)).decode()}
    out = openai_edit("dall-e-2")(_call(_context(server.base_url), source=_chart_rgba((120, 90))))

    edited = _decode(out.data).convert("RGB")
    assert edited.size == (120, 90)
    assert [colour for _, colour in edited.getcolors()] == [(0, 200, 0)]


def test_a_dall_e_2_edit_of_an_opaque_image_is_refused_before_any_call(
    server: ImagesServer,
) -> None:
    source = _encode(Image.new("RGB", (96, 80), (10, 20, 30)))
    with pytest.raises(ToolError, match="transparent") as info:
        openai_edit("dall-e-2")(_call(_context(server.base_url), source=source))
    assert info.value.kind == "config" and "LLMI_EDIT" in str(info.value)
    assert server.requests == []


# --- servers ---------------------------------------------------------------------------


def test_edits_go_to_their_own_server_with_its_own_key(server: ImagesServer) -> None:
    with images_server() as edit_server:
        ctx = _context(server.base_url, api_key="sk-images", edit_base_url=edit_server.base_url,
                       edit_api_key="sk-edit")
        openai_generate("Qwen/Qwen-Image")(_call(ctx))
        openai_edit("Qwen/Qwen-Image-Edit")(_call(ctx, source=_chart_rgba()))

    assert [(seen.path, seen.auth) for seen in server.requests] == [
        ("/v1/images/generations", "Bearer sk-images")]
    assert [(seen.path, seen.auth) for seen in edit_server.requests] == [
        ("/v1/images/edits", "Bearer sk-edit")]


def test_an_edit_server_without_its_own_key_uses_the_shared_one(server: ImagesServer) -> None:
    ctx = _context("http://127.0.0.1:9/v1", api_key="sk-shared", edit_base_url=server.base_url)
    openai_edit("m")(_call(ctx, source=_chart_rgba()))

    assert server.requests[0].auth == "Bearer sk-shared"


def test_a_server_without_an_edits_endpoint_says_so_and_is_not_retried(
    server: ImagesServer,
) -> None:
    server.edits_route = False  # LocalAI
    with pytest.raises(ToolError, match="no edits endpoint") as info:
        openai_edit("stablediffusion")(_call(_context(server.base_url), source=_chart_rgba()))

    assert (info.value.kind, info.value.transient) == ("config", False)
    assert "LLMI_EDIT_BASE_URL" in str(info.value) and "404" in str(info.value)
    assert server.unrouted == ["/v1/images/edits"]


def test_the_cache_keys_edits_on_the_edit_server(tmp_path: Any) -> None:
    from llmi.tools.edit import edit

    cache = ToolCache(ArtifactStore(tmp_path))
    ctx = _context("http://127.0.0.1:1/v1", seed=3, edit_backend="openai:m")
    request = ImageRequest(slot=0, source="edit", description="d",
                           params={"img_index": 0, "prompt": "autumn"}, depends_on=None,
                           attempt=0)
    source = {"sha256": "a" * 64, "uri": "", "mime": "image/png", "width": 8, "height": 8}
    keys = {cache.key(edit, request, c, source) for c in (
        ctx, replace(ctx, edit_base_url="http://127.0.0.1:2/v1"),
        replace(ctx, edit_base_url="http://127.0.0.1:3/v1"))}
    assert None not in keys and len(keys) == 3
    # The edit server's key is not part of it.
    assert cache.key(edit, request, replace(ctx, edit_api_key="k1"), source) == cache.key(
        edit, request, replace(ctx, edit_api_key="k2"), source)


# --- seeds -----------------------------------------------------------------------------


def test_a_seed_the_server_ignored_is_not_recorded_as_applied(
    server: ImagesServer, tmp_path: Any
) -> None:
    # stable-diffusion.cpp's server under a model name that does not say so: the seed
    # field is ignored and the server's own seed (42) is used, as the PNG says.
    server.sd_cpp_seed = 42
    out = openai_generate("stable-diffusion")(_call(_context(server.base_url, seed=7)))

    assert server.requests[0].fields["seed"] == 7
    assert (out.provenance["seed_requested"], out.provenance["seed"]) == (7, 42)
    assert not _cacheable(tmp_path, out.provenance)


@pytest.mark.parametrize("backend", [openai_generate, openai_edit])
def test_stable_diffusion_cpp_gets_its_seed_in_the_prompt(
    server: ImagesServer, tmp_path: Any, backend: Any
) -> None:
    server.sd_cpp_seed = 42
    source = _chart_rgba() if backend is openai_edit else None
    out = backend("sd-cpp-local")(_call(_context(server.base_url, seed=7), source=source))

    [seen] = server.requests
    assert "seed" not in seen.fields
    assert seen.fields["prompt"] == (
        'a lighthouse at dusk <sd_cpp_extra_args>{"seed": 7}</sd_cpp_extra_args>')
    assert out.provenance["prompt"] == "a lighthouse at dusk"
    assert (out.provenance["seed_requested"], out.provenance["seed"]) == (7, 7)
    assert _cacheable(tmp_path, out.provenance)


def test_a_seed_the_answer_reports_is_recorded(server: ImagesServer) -> None:
    png = _encode(Image.linear_gradient("L").resize((32, 32)))
    server.item = {"b64_json": base64.b64encode(png).decode(), "seed": 11}
    out = openai_generate("m")(_call(_context(server.base_url, seed=11)))

    assert (out.provenance["seed_requested"], out.provenance["seed"]) == (11, 11)


def test_the_cache_keeps_no_image_of_a_model_that_takes_no_seed(
    server: ImagesServer, tmp_path: Any
) -> None:
    server.openai_rules = True
    out = openai_generate("gpt-image-1")(_call(_context(server.base_url, seed=7,
                                                        image_size="1024x1024")))
    assert not _cacheable(tmp_path, out.provenance)


def _cacheable(tmp_path: Any, provenance: dict[str, Any]) -> bool:
    store = ArtifactStore(tmp_path / "store")
    image = store.put(_encode(Image.linear_gradient("L")))
    return ToolCache(store).put("0" * 64, image, "openai-images", provenance)


# --- failures --------------------------------------------------------------------------


def test_503_twice_then_success_is_retried(server: ImagesServer) -> None:
    server.fail(503, "model is loading", type="server_error", times=2)
    out = openai_generate("m")(_call(_context(server.base_url), deadline_s=3.0))

    assert len(server.requests) == 3
    assert _decode(out.data).size == (64, 48)


def test_rate_limit_is_retried(server: ImagesServer) -> None:
    server.fail(429, "Rate limit reached for images per minute", code="rate_limit_exceeded")
    openai_generate("m")(_call(_context(server.base_url), deadline_s=3.0))

    assert len(server.requests) == 2


def test_insufficient_quota_fails_at_once(server: ImagesServer) -> None:
    server.fail(429, "You exceeded your current quota, please check your plan and billing "
                "details.", code="insufficient_quota", type="insufficient_quota", times=3)
    with pytest.raises(ToolError) as info:
        openai_generate("m")(_call(_context(server.base_url)))

    assert (info.value.kind, info.value.transient) == ("quota", False)
    assert len(server.requests) == 1


def test_401_is_a_config_error(server: ImagesServer) -> None:
    server.fail(401, "Incorrect API key provided: sk-wrong.", code="invalid_api_key", times=3)
    with pytest.raises(ToolError) as info:
        openai_generate("m")(_call(_context(server.base_url)))

    assert info.value.kind == "config"
    assert "Incorrect API key" in str(info.value)
    assert len(server.requests) == 1


def test_404_is_a_config_error(server: ImagesServer) -> None:
    server.fail(404, "The model `nope` does not exist.", code="model_not_found")
    with pytest.raises(ToolError, match="does not exist") as info:
        openai_generate("nope")(_call(_context(server.base_url)))
    assert info.value.kind == "config"


def test_content_policy_message_surfaces(server: ImagesServer) -> None:
    message = "Your request was rejected as a result of our safety system."
    server.fail(400, message, code="content_policy_violation", times=3)
    with pytest.raises(ToolError) as info:
        openai_generate("m")(_call(_context(server.base_url)))

    assert message in str(info.value)
    assert info.value.transient is False
    assert len(server.requests) == 1


def test_a_slow_server_runs_into_the_deadline(server: ImagesServer) -> None:
    server.delay_s = 5.0  # then a valid image: waiting for it would succeed
    with pytest.raises(ToolError) as info:
        openai_generate("m")(_call(_context(server.base_url), deadline_s=0.6))

    assert (info.value.kind, info.value.transient) == ("timeout", True)
    assert "within the 0.6 s deadline" in str(info.value)  # not the 2 s connect timeout


def test_unreachable_server_is_a_transient_http_error() -> None:
    with pytest.raises(ToolError) as info:
        openai_generate("m")(_call(_context(closed_port_url()), deadline_s=10.0))

    assert (info.value.kind, info.value.transient) == ("http", True)


@pytest.mark.parametrize(("b64", "reason"), [
    ("not base64 at all!", "invalid base64"),
    (base64.b64encode(b"just some text").decode(), "not a readable image"),
], ids=["bad-base64", "not-an-image"])
def test_an_answer_that_is_not_an_image_is_a_backend_error(
    server: ImagesServer, b64: str, reason: str
) -> None:
    server.item = {"b64_json": b64}
    with pytest.raises(ToolError, match=reason) as info:
        openai_generate("m")(_call(_context(server.base_url)))
    assert (info.value.kind, info.value.transient) == ("backend", False)


def test_a_link_answer_is_refused_with_a_reason(server: ImagesServer) -> None:
    server.item = {"url": "http://127.0.0.1:9/generated-images/1.png"}
    with pytest.raises(ToolError, match="b64_json") as info:
        openai_generate("m")(_call(_context(server.base_url)))
    assert "link" in str(info.value) and info.value.kind == "backend"


def test_a_data_url_answer_is_decoded(server: ImagesServer) -> None:
    png = _encode(Image.new("RGB", (32, 32), (1, 2, 3)))
    server.item = {"url": "data:image/png;base64," + base64.b64encode(png).decode()}
    out = openai_generate("m")(_call(_context(server.base_url)))

    assert out.data == png


# --- references ------------------------------------------------------------------------


def _references(*sizes: tuple[int, int]) -> tuple[bytes, ...]:
    return tuple(_encode(Image.new("RGB", size, (40 * number, 90, 160)))
                 for number, size in enumerate(sizes, 1))


def _sizes(uploads: list[Any]) -> list[tuple[int, int]]:
    return [_decode(upload.data).size for upload in uploads]


def test_gpt_image_makes_an_image_from_references_through_edits(server: ImagesServer) -> None:
    server.openai_rules = True
    ctx = _context(server.base_url, api_key="sk-test", image_size="1536x1024", seed=3)
    out = openai_generate("gpt-image-1.5")(_call(ctx, references=_references((40, 30), (50, 50))))

    [seen] = server.requests
    assert seen.path == "/v1/images/edits"
    assert [name for name, _ in seen.uploads] == ["image[]", "image[]"]
    assert _sizes(seen.images) == [(40, 30), (50, 50)]
    assert all(_decode(upload.data).format == "PNG" for upload in seen.images)
    assert seen.fields == {"model": "gpt-image-1.5", "prompt": "a lighthouse at dusk", "n": "1",
                           "size": "1536x1024"}
    assert out.provenance["references"] == 2 and REFERENCES_IGNORED not in out.provenance
    assert (out.provenance["size_asked"], out.provenance["size_used"]) == ("1536x1024",
                                                                           "1536x1024")


@pytest.mark.parametrize(("model", "seed_sent"), [
    ("Qwen/Qwen-Image-Edit-2511", {"prompt": "a lighthouse at dusk", "seed": "42"}),
    ("sd-cpp-local", {"prompt": 'a lighthouse at dusk <sd_cpp_extra_args>{"seed": 42}'
                                "</sd_cpp_extra_args>"}),
])
def test_an_open_server_gets_references_with_what_a_generation_gets(
    server: ImagesServer, model: str, seed_sent: dict[str, str]
) -> None:
    with images_server() as edit_server:
        ctx = _context(server.base_url, seed=42, edit_base_url=edit_server.base_url)
        out = openai_generate(model)(_call(ctx, references=_references((40, 30))))

    # The diffusion server and model, not the edit ones.
    assert edit_server.requests == []
    [seen] = server.requests
    assert seen.path == "/v1/images/edits" and _sizes(seen.images) == [(40, 30)]
    assert seen.fields == {"model": model, "n": "1", "size": "64x48",
                           "response_format": "b64_json"} | seed_sent
    assert _decode(out.data).size == (64, 48)
    assert out.provenance["references"] == 1 and out.provenance["seed_requested"] == 42


def test_an_edit_sends_its_source_first_then_the_references(server: ImagesServer) -> None:
    source = _encode(Image.new("RGB", (96, 80), (10, 20, 30)))
    out = openai_edit("Qwen/Qwen-Image-Edit-2511")(_call(
        _context(server.base_url), source=source, references=_references((40, 30), (50, 50))))

    [seen] = server.requests
    assert [name for name, _ in seen.uploads] == ["image[]"] * 3
    assert _sizes(seen.images) == [(96, 80), (40, 30), (50, 50)]
    assert seen.fields["size"] == "96x80"
    assert _decode(out.data).size == (96, 80)
    assert out.provenance["references"] == 2 and REFERENCES_IGNORED not in out.provenance


def test_an_edit_with_gpt_image_sends_references_within_its_limit(server: ImagesServer) -> None:
    server.openai_rules = True
    references = _references(*[(20 + number, 20) for number in range(16)])
    out = openai_edit("gpt-image-1.5")(_call(
        _context(server.base_url, api_key="sk-test"), source=_chart_rgba((120, 90)),
        references=references))

    [seen] = server.requests
    assert _sizes(seen.images) == [(120, 90), *[(20 + number, 20) for number in range(15)]]
    assert out.provenance["references"] == 15
    assert out.provenance[REFERENCES_IGNORED] == (
        "gpt-image-1.5 takes at most 16 images in one request, the image edited among them, "
        "so the last 1 of its 16 reference images were left out")


def test_gpt_image_leaves_out_references_beyond_16(server: ImagesServer) -> None:
    server.openai_rules = True
    references = _references(*[(20 + number, 20) for number in range(17)])
    out = openai_generate("gpt-image-1.5")(_call(
        _context(server.base_url, api_key="sk-test", image_size="auto"), references=references))

    [seen] = server.requests
    assert _sizes(seen.images) == [(20 + number, 20) for number in range(16)]
    assert out.provenance["references"] == 16
    assert "the last 1 of its 17 reference images" in out.provenance[REFERENCES_IGNORED]


@pytest.mark.parametrize("model", ["dall-e-3", "dall-e-2"])
def test_dall_e_makes_the_image_without_references_and_says_so(
    server: ImagesServer, model: str
) -> None:
    server.openai_rules = True
    ctx = _context(server.base_url, api_key="sk-test", image_size="1024x1024")
    out = openai_generate(model)(_call(ctx, references=_references((40, 30))))

    [seen] = server.requests
    assert seen.path == "/v1/images/generations"
    assert out.provenance[REFERENCES_IGNORED] == f"{model} takes no reference images"
    assert "references" not in out.provenance


def test_a_dall_e_2_edit_is_made_without_references(server: ImagesServer) -> None:
    server.openai_rules = True
    out = openai_edit("dall-e-2")(_call(_context(server.base_url), source=_chart_rgba(),
                                        references=_references((40, 30))))

    [seen] = server.requests
    assert [name for name, _ in seen.uploads] == ["image"]
    assert out.provenance[REFERENCES_IGNORED] == "dall-e-2 takes no reference images"


def test_a_server_without_edits_generates_without_references(server: ImagesServer) -> None:
    server.edits_route = False  # LocalAI
    out = openai_generate("stablediffusion")(_call(_context(server.base_url),
                                                   references=_references((40, 30))))

    assert server.unrouted == ["/v1/images/edits"]
    assert [seen.path for seen in server.requests] == ["/v1/images/generations"]
    assert _decode(out.data).size == (64, 48)
    reason = out.provenance[REFERENCES_IGNORED]
    assert "has no edits endpoint" in reason and "404" in reason
    assert "references" not in out.provenance


def test_an_open_server_refusing_several_images_generates_without_them(
    server: ImagesServer,
) -> None:
    server.image_limit = 1  # a single-image edit model
    out = openai_generate("m")(_call(_context(server.base_url, seed=5),
                                     references=_references((40, 30), (50, 50))))

    assert [seen.path for seen in server.requests] == ["/v1/images/edits",
                                                       "/v1/images/generations"]
    assert server.requests[1].fields["seed"] == 5
    assert out.provenance[REFERENCES_IGNORED] == (
        f"the images server at {server.base_url.split('/')[2]} refused the reference images "
        "(400: this pipeline takes at most 1 image(s), got 2)")


def test_an_open_server_refusing_references_edits_the_source_alone(
    server: ImagesServer,
) -> None:
    server.image_limit = 1
    out = openai_edit("m")(_call(_context(server.base_url), source=_chart_rgba((120, 90)),
                                 references=_references((40, 30))))

    first, second = server.requests
    assert _sizes(first.images) == [(120, 90), (40, 30)]
    assert [name for name, _ in second.uploads] == ["image"]
    assert _sizes(second.images) == [(120, 90)]
    assert "refused the reference images" in out.provenance[REFERENCES_IGNORED]
    assert _decode(out.data).size == (120, 90)


def test_a_refusal_by_a_model_that_takes_references_fails_the_request(
    server: ImagesServer,
) -> None:
    # gpt-image takes references as documented: a 400 is about the request, and a
    # generation without them would be refused as well.
    message = "Your request was rejected as a result of our safety system."
    server.fail(400, message, code="content_policy_violation")
    with pytest.raises(ToolError, match="safety system"):
        openai_generate("gpt-image-1.5")(_call(_context(server.base_url, api_key="sk-test",
                                                        image_size="auto"),
                                               references=_references((40, 30))))
    assert [seen.path for seen in server.requests] == ["/v1/images/edits"]


def test_a_server_error_with_references_is_retried_not_worked_around(
    server: ImagesServer,
) -> None:
    server.fail(503, "model is loading", type="server_error")
    out = openai_generate("m")(_call(_context(server.base_url), deadline_s=3.0,
                                     references=_references((40, 30))))

    assert [seen.path for seen in server.requests] == ["/v1/images/edits"] * 2
    assert out.provenance["references"] == 1


def test_references_are_uploaded_as_an_edit_source_is(server: ImagesServer) -> None:
    large = _encode(Image.new("RGB", (3000, 1000), (90, 90, 90)), "JPEG")
    openai_generate("m")(_call(_context(server.base_url), references=(large, _chart_rgba())))

    wide, chart = (_decode(upload.data) for upload in server.requests[0].images)
    assert (wide.format, wide.mode, wide.size) == ("PNG", "RGB", (2048, 683))
    assert (chart.format, chart.mode) == ("PNG", "RGBA")


def test_an_unreadable_reference_fails_before_any_call(server: ImagesServer) -> None:
    with pytest.raises(ToolError, match="reference image 2 is not a readable image"):
        openai_generate("m")(_call(_context(server.base_url),
                                   references=(_chart_rgba(), b"not an image")))
    assert server.requests == []
