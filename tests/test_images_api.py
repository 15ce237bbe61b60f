"""The OpenAI-compatible images backends, against a loopback stand-in server."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from images_standin import ImagesServer, images_server
from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools import images_api
from llmi.tools.base import ToolCall, ToolError
from llmi.tools.images_api import openai_edit, openai_generate
from openai_standin import closed_port_url


@pytest.fixture
def server() -> Iterator[ImagesServer]:
    with images_server() as images:
        yield images


def _context(images_base_url: str, **overrides: Any) -> Context:
    settings: dict[str, Any] = {
        "images_base_url": images_base_url, "base_url": "", "api_key": "", "image_size": "64x48",
        "edit_size": "", "seed": -1, "connect_timeout": 2.0,
    }
    return Context(**(settings | overrides))


def _call(context: Context, *, source: bytes | None = None, deadline_s: float = 5.0,
          slot: int = 0) -> ToolCall:
    request = ImageRequest(slot=slot, source="edit" if source else "diffusion",
                           description="a lighthouse", params={"prompt": "a lighthouse at dusk"},
                           depends_on=None, attempt=0)
    return ToolCall(request=request, context=context, deadline_s=deadline_s, source_image=source)


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
                              "size": "64x48",
                              "revised_prompt": "a lighthouse at dusk, oil painting"}
    [seen] = server.requests
    assert seen.path == "/v1/images/generations"
    assert seen.auth == "Bearer EMPTY"
    assert seen.fields == {"model": "qwen-image", "prompt": "a lighthouse at dusk", "n": 1,
                           "size": "64x48", "response_format": "b64_json"}


def test_seed_goes_to_open_servers_offset_by_slot(server: ImagesServer) -> None:
    out = openai_generate("m")(_call(_context(server.base_url, seed=40), slot=2))

    assert server.requests[0].fields["seed"] == 42
    assert out.provenance["seed"] == 42


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


def test_openai_gets_no_seed_and_response_format_only_for_dall_e(
    server: ImagesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images_api, "OPENAI_BASE_URL", server.base_url)
    ctx = _context("", api_key="sk-test", seed=3)
    gpt = openai_generate("gpt-image-1")(_call(ctx))
    openai_generate("dall-e-3")(_call(ctx))

    gpt_fields, dalle_fields = (seen.fields for seen in server.requests)
    assert "response_format" not in gpt_fields and "seed" not in gpt_fields
    assert dalle_fields["response_format"] == "b64_json" and "seed" not in dalle_fields
    assert "seed" not in gpt.provenance
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
                              "size": "96x80"}


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


def test_edit_on_openai_asks_for_the_closest_supported_size(
    server: ImagesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images_api, "OPENAI_BASE_URL", server.base_url)
    ctx = _context("", api_key="sk-test")
    out = openai_edit("gpt-image-1")(_call(ctx, source=_chart_rgba((200, 100))))

    assert server.requests[0].fields["size"] == "1536x1024"
    assert "response_format" not in server.requests[0].fields
    assert _decode(out.data).size == (200, 100)


def test_edit_without_a_source_fails_clearly(server: ImagesServer) -> None:
    with pytest.raises(ToolError, match="needs the image it changes"):
        openai_edit("m")(_call(_context(server.base_url)))
    assert server.requests == []


def test_malformed_edit_size_is_a_config_error(server: ImagesServer) -> None:
    with pytest.raises(ToolError, match="LLMI_EDIT_SIZE") as info:
        openai_edit("m")(_call(_context(server.base_url, edit_size="big"), source=_chart_rgba()))
    assert info.value.kind == "config"


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
