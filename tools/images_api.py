"""Backends for an OpenAI-compatible images API: ``openai:<model>`` for diffusion and edit.

They call ``POST {base}/images/generations`` and ``POST {base}/images/edits`` through the
official ``openai`` SDK, so one backend serves OpenAI and open servers (vLLM-Omni, SGLang
diffusion, LocalAI, stable-diffusion.cpp's server). The base URL is
``LLMI_IMAGES_BASE_URL``, else ``OPENAI_BASE_URL``, else OpenAI's.

OpenAI and open servers differ in what they accept:

- OpenAI's GPT image models reject ``response_format`` (they always answer in base64) and
  every field they do not know, such as ``seed``. OpenAI gets ``response_format`` only for
  ``dall-e-*`` models, and never a seed.
- Open servers get ``response_format="b64_json"`` (LocalAI and SGLang answer with links
  otherwise) and, when ``LLMI_SEED`` is 0 or more, ``seed`` = that seed + the slot index,
  so that images of one document differ; a request's own ``params['seed']`` (a verifier's
  retry) wins.
- Edit sizes: OpenAI takes a few fixed sizes, so the one closest in aspect ratio is
  asked for. An open server gets the requested ``LLMI_EDIT_SIZE`` as is; without one, the
  source's size scaled down to at most one megapixel and rounded to multiples of 16,
  what diffusion edit models work at. The edited image is then fitted (cropped to the
  aspect ratio, resized with Lanczos) to ``LLMI_EDIT_SIZE`` or the source's size.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import openai
from openai import OpenAI, Timeout, omit
from openai.types import Image as ImageItem
from openai.types import ImagesResponse
from PIL import Image, ImageOps

from llmi.context import Context
from llmi.tools.base import Backend, ToolCall, ToolError, ToolOutput
from llmi.tools.retry import retry_transient

OPENAI_BASE_URL = "https://api.openai.com/v1"
BACKEND = "openai-images"

_GPT_IMAGE_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
_OPEN_SERVER_PIXELS = 1024 * 1024
_UPLOAD_MAX_SIDE = 2048
_KEPT_FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa"}
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}

Request = Callable[[OpenAI, Timeout], ImagesResponse]


@dataclass(frozen=True)
class _Server:
    base_url: str
    api_key: str
    is_openai: bool

    @property
    def where(self) -> str:
        """Host and port, for messages; never the key or credentials in the URL."""
        return urlsplit(self.base_url).netloc.rpartition("@")[2]


def openai_generate(argument: str) -> Backend:
    """``LLMI_DIFFUSION=openai:<model>``: text to image."""
    model = argument

    def generate(call: ToolCall) -> ToolOutput:
        ctx = call.context
        server = _server(ctx)
        prompt = _prompt(call)
        seed = _seed(server, call)

        def request(client: OpenAI, timeout: Timeout) -> ImagesResponse:
            return client.images.generate(
                model=model or omit, prompt=prompt, size=ctx.image_size or omit, n=1,
                timeout=timeout, **_format_options(server, model, seed),
            )

        item = _first_item(_call_api(call, server, request))
        data = _item_bytes(item)
        return ToolOutput(
            data=_encoded(_open_image(data, "the generated image"), data),
            backend=BACKEND,
            provenance=_provenance(prompt, model, ctx.image_size, item, seed),
        )

    return generate


def openai_edit(argument: str) -> Backend:
    """``LLMI_EDIT=openai:<model>``: change ``call.source_image`` as the prompt says."""
    model = argument

    def edit(call: ToolCall) -> ToolOutput:
        if call.source_image is None:
            raise ToolError("an edit needs the image it changes, and none was given")
        ctx = call.context
        server = _server(ctx)
        prompt = _prompt(call)
        seed = _seed(server, call)
        source = ImageOps.exif_transpose(_open_image(call.source_image, "the image to edit"))
        target = _edit_target(ctx, source.size)
        size = _edit_request_size(server, model, target, explicit=bool(ctx.edit_size))
        upload = ("image.png", _upload_png(source), "image/png")

        def request(client: OpenAI, timeout: Timeout) -> ImagesResponse:
            return client.images.edit(
                model=model or omit, image=upload, prompt=prompt, size=size, n=1,
                timeout=timeout, **_format_options(server, model, seed),
            )

        item = _first_item(_call_api(call, server, request))
        data = _item_bytes(item)
        image = _open_image(data, "the edited image")
        if image.size != target:
            image = ImageOps.fit(image, target, Image.Resampling.LANCZOS)
        return ToolOutput(
            data=_encoded(image, data),
            backend=BACKEND,
            provenance=_provenance(prompt, model, size, item, seed),
        )

    return edit


# --- the server and the request -------------------------------------------------------


def _server(ctx: Context) -> _Server:
    # The default URL is passed explicitly so the SDK never reads OPENAI_BASE_URL itself.
    base_url = (ctx.images_base_url or ctx.base_url or OPENAI_BASE_URL).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(
            f"the images API base URL {base_url!r} is not an http(s) URL: set "
            "LLMI_IMAGES_BASE_URL (or OPENAI_BASE_URL) like http://localhost:8000/v1",
            kind="config",
        )
    is_openai = parts.hostname == urlsplit(OPENAI_BASE_URL).hostname
    if is_openai and not ctx.api_key:
        raise ToolError(
            "the OpenAI images API needs a key: set OPENAI_API_KEY, or set "
            "LLMI_IMAGES_BASE_URL to an OpenAI-compatible images server",
            kind="config",
        )
    return _Server(base_url, ctx.api_key or "EMPTY", is_openai)


def _prompt(call: ToolCall) -> str:
    return str(call.request["params"].get("prompt") or call.request["description"])


def _seed(server: _Server, call: ToolCall) -> int | None:
    if server.is_openai:
        return None
    retry = call.request["params"].get("seed")
    if isinstance(retry, int) and not isinstance(retry, bool) and retry >= 0:
        return retry
    seed = call.context.seed
    if seed is None or seed < 0:
        return None
    return seed + call.request["slot"]


def _format_options(server: _Server, model: str, seed: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if not server.is_openai or model.startswith("dall-e"):
        options["response_format"] = "b64_json"
    if seed is not None:
        options["extra_body"] = {"seed": seed}
    return options


def _call_api(call: ToolCall, server: _Server, request: Request) -> ImagesResponse:
    """Run ``request``, retrying transient failures, each try within the time left."""
    started = time.monotonic()
    connect_s = call.context.connect_timeout or 5.0
    # max_retries=0: retries are ours, so they stay within the deadline.
    with OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0) as client:

        def attempt() -> ImagesResponse:
            left = call.deadline_s - (time.monotonic() - started)
            if left <= 0:
                raise ToolError(f"no time was left to ask the images API at {server.where}",
                                kind="timeout")
            try:
                return request(client, Timeout(left, connect=min(connect_s, left)))
            except openai.APIError as error:
                raise _tool_error(error, server.where, call.deadline_s) from error

        return retry_transient(attempt, deadline_s=call.deadline_s)


# --- errors ----------------------------------------------------------------------------


def _tool_error(error: openai.APIError, where: str, deadline_s: float) -> ToolError:
    if isinstance(error, openai.APITimeoutError):
        return ToolError(f"the images API at {where} did not answer within the {deadline_s:g} s "
                         "deadline", kind="timeout", transient=True)
    if isinstance(error, openai.APIConnectionError):
        return ToolError(f"could not reach the images API at {where}: {error.__cause__ or error}",
                         kind="http", transient=True)
    if isinstance(error, openai.APIStatusError):
        return _status_error(error, where)
    return ToolError(f"the images API at {where} answered something unreadable: {error}")


def _status_error(error: openai.APIStatusError, where: str) -> ToolError:
    status, message = error.status_code, _server_message(error)
    said = f"the images API at {where} answered {status}: {message}"
    if status in (401, 403):
        return ToolError(f"{said} (check OPENAI_API_KEY and LLMI_IMAGES_BASE_URL)", kind="config")
    if status == 404:
        return ToolError(f"{said} (check LLMI_IMAGES_BASE_URL and the model after 'openai:')",
                         kind="config")
    if status == 429 and _is_quota(error, message):
        return ToolError(f"{said} (out of quota or billing)", kind="quota")
    if status in (408, 409, 429) or status >= 500:
        return ToolError(said, kind="http", transient=True)
    return ToolError(said, kind="http")


def _server_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        # OpenAI puts it in error.message; FastAPI servers (vLLM-Omni, SGLang) in detail.
        text = body.get("message") or body.get("detail") or body
    else:
        text = body or error.response.text or error.message
    return str(text)[:500]


def _is_quota(error: openai.APIStatusError, message: str) -> bool:
    if error.code in _QUOTA_CODES or error.type in _QUOTA_CODES:
        return True
    lowered = message.lower()
    return "quota" in lowered or "billing" in lowered


# --- answers ---------------------------------------------------------------------------


def _first_item(response: ImagesResponse) -> ImageItem:
    if not response.data:
        raise ToolError("the images API answered without an image")
    return response.data[0]


def _item_bytes(item: ImageItem) -> bytes:
    if item.b64_json:
        return _b64decode(item.b64_json)
    url = item.url or ""
    if url.startswith("data:"):
        return _data_url_bytes(url)
    if url:
        # Fetching it would bypass the project's safe downloader.
        raise ToolError(
            f"the images server answered with a link ({url[:100]}) instead of image data: "
            "it ignored response_format=b64_json; configure it to answer in base64 "
            "(llmi does not fetch image links from images servers)"
        )
    raise ToolError("the images API answered without image data")


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ToolError(f"the images server answered with a data URL that is not base64: "
                        f"{header[:60]}")
    return _b64decode(payload)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ToolError(f"the images API answered with invalid base64: {error}") from error


def _open_image(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    # Pillow raises many types for broken data (OSError, SyntaxError, EOFError, bombs...).
    except Exception as error:  # noqa: BLE001
        raise ToolError(f"{what} is not a readable image: {error}") from error
    return image


def _encoded(image: Image.Image, data: bytes) -> bytes:
    """``data`` when it is PNG, JPEG, WebP or GIF and ``image`` is what it decodes to; else PNG."""
    if image.format in _KEPT_FORMATS:
        return data
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _provenance(prompt: str, model: str, size: str | None, item: ImageItem,
                seed: int | None) -> dict[str, Any]:
    provenance: dict[str, Any] = {"prompt": prompt, "model": model, "size": size}
    if item.revised_prompt:
        provenance["revised_prompt"] = item.revised_prompt
    if seed is not None:
        provenance["seed"] = seed
    return provenance


# --- edit sizes and the upload ---------------------------------------------------------


def _edit_target(ctx: Context, source_size: tuple[int, int]) -> tuple[int, int]:
    if not ctx.edit_size:
        return source_size
    width, sep, height = ctx.edit_size.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) and int(height)):
        raise ToolError(f"LLMI_EDIT_SIZE must read WxH, like 1024x768, not {ctx.edit_size!r}",
                        kind="config")
    return int(width), int(height)


def _edit_request_size(server: _Server, model: str, target: tuple[int, int], *,
                       explicit: bool) -> str:
    width, height = target
    if server.is_openai:
        return _openai_edit_size(model, width, height)
    if explicit:
        return f"{width}x{height}"
    return _open_server_size(width, height)


def _openai_edit_size(model: str, width: int, height: int) -> str:
    if model.startswith("dall-e"):
        return "1024x1024"
    aspect = width / height
    best = min(_GPT_IMAGE_SIZES, key=lambda size: abs(math.log(size[0] / size[1] / aspect)))
    return f"{best[0]}x{best[1]}"


def _open_server_size(width: int, height: int) -> str:
    scale = min(1.0, math.sqrt(_OPEN_SERVER_PIXELS / (width * height)))
    return "x".join(str(max(16, round(side * scale / 16) * 16)) for side in (width, height))


def _upload_png(image: Image.Image) -> bytes:
    """PNG the edit endpoints take: RGB, or RGBA when the source has transparency."""
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    if max(image.size) > _UPLOAD_MAX_SIDE:
        image.thumbnail((_UPLOAD_MAX_SIDE, _UPLOAD_MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
