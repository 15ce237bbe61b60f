"""Backends for an OpenAI-compatible images API: ``openai:<model>`` for diffusion and edit.

They call ``POST {base}/images/generations`` and ``POST {base}/images/edits`` through the
official ``openai`` SDK, so one backend serves OpenAI, gateways in front of it (LiteLLM,
OpenRouter, Azure-like proxies) and open servers (vLLM-Omni, SGLang diffusion, LocalAI,
stable-diffusion.cpp's server). Generations go to ``LLMI_IMAGES_BASE_URL``, else
``OPENAI_BASE_URL``, else OpenAI's; edits go to ``LLMI_EDIT_BASE_URL`` (with
``LLMI_EDIT_API_KEY``) when it is set, since open servers serve one model each.

What a request carries depends on the model's family (``FAMILIES``), never on the host:

- Sizes: a family with fixed sizes gets the allowed size nearest to the one asked for,
  first by aspect ratio, then by area; an empty ``LLMI_IMAGE_SIZE`` sends the family's
  default (``auto`` for GPT image models, 1024x1024 for DALL-E), or no size at all to an
  open server, which then uses its model's own. The provenance records ``size_asked`` and
  ``size_used`` (what was sent; None when the server chose).
- ``response_format=b64_json`` goes to DALL-E and open servers (LocalAI and SGLang answer
  with links otherwise); GPT image models refuse the field and always answer in base64.
- Seeds: OpenAI's models take none. An open server gets ``seed`` = the seed that applies
  (a request's ``params['seed']``, else ``LLMI_SEED`` + the slot index), recorded as
  ``seed_requested``. The field is only a convention: vLLM-Omni and SGLang read it,
  stable-diffusion.cpp's server ignores it and reads seeds from an ``<sd_cpp_extra_args>``
  block in the prompt, which its model ``sd-cpp-local`` gets. So ``seed`` is recorded only
  when the answer tells the seed the image was made with: a ``seed`` in the answer, or the
  ``Seed:`` of the generation parameters the image carries (stable-diffusion.cpp writes
  them into its PNGs). The tool cache keeps no result that asked for no seed, nor one
  whose answer names another seed than it asked.
- Edits: GPT image models and open servers take the source as it is. dall-e-2 repaints only
  the fully transparent parts of a square PNG under 4 MB: the source is centred on a
  square opaque canvas (its own transparency marks what to change), and the answer is
  cropped back to the source's aspect ratio; a source without transparent pixels is
  refused before any call. dall-e-3 has no edits and is refused before any call.
- The edited image is fitted (cropped to the aspect ratio, resized with Lanczos) to
  ``LLMI_EDIT_SIZE`` or the source's size. An open server is asked for ``LLMI_EDIT_SIZE``
  as is; without one, for the source's size scaled to at most one megapixel and rounded
  to multiples of 16, what diffusion edit models work at.
- References (``call.references``, the images whose subject the new image keeps) go to
  ``/images/edits`` as ``image[]`` parts, uploaded as an edit's source is, after the image
  edited if any; an image made from the references alone is asked of the diffusion
  server and model, with the size, seed and format a generation gets. OpenAI's createEdit
  takes an array of up to 16 images for GPT image models (the openai SDK's
  ``images.edit``); vLLM-Omni, SGLang and stable-diffusion.cpp read every ``image[]`` part
  and leave the rest to their model (vllm_omni/entrypoints/openai/api_server.py and
  docs/serving/image_edit_api.md, sglang/multimodal_gen/.../openai/image_api.py,
  examples/server/routes_openai.cpp). ``Family.edit_images`` says how many a family takes;
  a family that takes none (DALL-E), a server without an edits route (LocalAI answers
  404) and an open server that refuses them (400, 415, 422) make the image without them,
  as before, and the provenance says why (``without_references``); references beyond a
  family's limit are left out and said so too. The provenance records ``references``: how
  many were sent.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import openai
from openai import OpenAI, Timeout, omit
from openai.types import Image as ImageItem
from openai.types import ImagesResponse
from PIL import Image, ImageOps

from llmi.context import Context
from llmi.models import QUOTA_CODES
from llmi.tools.base import Backend, ToolCall, ToolError, ToolOutput, without_references
from llmi.tools.retry import retry_transient
from llmi.tools.synthesis import (
    Size,
    applied_seed,
    open_image,
    prompt_of,
    setting_size,
    size_text,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"
BACKEND = "openai-images"

Endpoint = Literal["generations", "edits"]
Request = Callable[[OpenAI, Timeout], ImagesResponse]
Upload = tuple[str, bytes, str]
Refusal = Callable[[openai.APIStatusError], str | None]
"""The reason a refused request's references are left out, or None: a failure as usual."""

_OPEN_SERVER_PIXELS = 1024 * 1024
_UPLOAD_MAX_SIDE = 2048
_DALL_E_2_MAX_BYTES = 4 * 1024 * 1024
_KEPT_FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa"}
_REFUSED_FIELD_CODES = {"unknown_parameter", "invalid_value"}
_REFUSED_IMAGES_STATUSES = {400, 415, 422}
_PARAMETERS_SEED = re.compile(r"(?:^|[\s,])Seed:\s*(\d+)")

_REFERENCE = "https://platform.openai.com/docs/api-reference/images"


@dataclass(frozen=True)
class Family:
    """What one family of image models accepts."""

    name: str
    """Recorded in the provenance as ``family``: whose rules the request followed."""
    prefixes: tuple[str, ...]
    """Model names it covers, by how they begin (after a gateway's ``provider/``)."""
    sizes: tuple[Size, ...]
    """The sizes it takes; empty: any ``WxH``."""
    default_size: str | None
    """Sent when ``LLMI_IMAGE_SIZE`` is empty; None sends no size."""
    response_format: bool
    seed: Literal["none", "seed field", "sd_cpp_extra_args"]
    """How a seed is sent: not at all, as the ``seed`` field, or in the prompt's
    ``<sd_cpp_extra_args>`` block (stable-diffusion.cpp's server reads no ``seed`` field)."""
    edits: Literal["any", "transparent-square", "none"]
    """``any`` image; only a square PNG whose transparent parts are repainted; none."""
    edit_images: int | None
    """How many images one edits request takes, the image edited and the references
    together; None: no documented limit, the server's model decides. Only a family whose
    edits take ``any`` image takes references."""
    reference: str
    """The documentation the rules follow."""


GPT_IMAGE = Family(
    "gpt-image", ("gpt-image",), ((1024, 1024), (1536, 1024), (1024, 1536)), "auto",
    response_format=False, seed="none", edits="any", edit_images=16,
    reference=f"{_REFERENCE}/create: size 1024x1024, 1536x1024, 1024x1536 or auto; no "
              "response_format, the answer is always b64_json",
)
DALL_E_2 = Family(
    "dall-e-2", ("dall-e-2",), ((256, 256), (512, 512), (1024, 1024)), "1024x1024",
    response_format=True, seed="none", edits="transparent-square", edit_images=1,
    reference=f"{_REFERENCE}/createEdit: size 256x256, 512x512 or 1024x1024; the image is "
              "a square PNG under 4MB whose fully transparent areas are edited",
)
DALL_E_3 = Family(
    "dall-e-3", ("dall-e-3",), ((1024, 1024), (1792, 1024), (1024, 1792)), "1024x1024",
    response_format=True, seed="none", edits="none", edit_images=0,
    reference=f"{_REFERENCE}/create: size 1024x1024, 1792x1024 or 1024x1792; "
              "createEdit takes dall-e-2 and GPT image models only",
)
STABLE_DIFFUSION_CPP = Family(
    "stable-diffusion.cpp", ("sd-cpp",), (), None, response_format=True,
    seed="sd_cpp_extra_args", edits="any", edit_images=None,
    reference="https://github.com/leejet/stable-diffusion.cpp examples/server/api.md: the "
              "OpenAI API reads prompt, n, size and output_format; native fields, seed among "
              "them, go in <sd_cpp_extra_args> inside the prompt; its model is sd-cpp-local",
)
OPEN_SERVER = Family(
    "open server", ("",), (), None, response_format=True, seed="seed field", edits="any",
    edit_images=None,
    reference="https://docs.vllm.ai/projects/vllm-omni/en/stable/serving/image_generation_api/"
              " and https://docs.sglang.io/diffusion/api/openai_api.html: any WxH, seed, "
              "response_format b64_json",
)
FAMILIES = (GPT_IMAGE, DALL_E_2, DALL_E_3, STABLE_DIFFUSION_CPP, OPEN_SERVER)
"""Checked in order; the open servers' family takes every other model."""


def family_of(model: str) -> Family:
    """The family of ``model``, read past a gateway's prefix (``openai/gpt-image-1``)."""
    name = model.rpartition("/")[2].lower()
    return next(family for family in FAMILIES if name.startswith(family.prefixes))


@dataclass(frozen=True)
class _Server:
    base_url: str
    api_key: str
    url_setting: str
    key_setting: str
    """The settings that name the server and its key, for messages."""

    @property
    def where(self) -> str:
        """Host and port, for messages; never the key or credentials in the URL."""
        return urlsplit(self.base_url).netloc.rpartition("@")[2]


def openai_generate(argument: str) -> Backend:
    """``LLMI_DIFFUSION=openai:<model>``: text to image; with references, an edits request
    of the prompt and the references (OpenAI's createEdit)."""
    model = argument
    family = family_of(model)

    def generate(call: ToolCall) -> ToolOutput:
        ctx = call.context
        server = _server(ctx, edit=False)
        prompt = prompt_of(call.request)
        seed = _seed(family, call)
        size = _generation_size(family, ctx)
        references = _references(family, model, call.references, editing=False)
        options: dict[str, Any] = {
            "model": model or omit, "prompt": _sent_prompt(family, prompt, seed),
            "size": size or omit, "n": 1, **_format_options(family, seed)}

        def request(client: OpenAI, timeout: Timeout) -> ImagesResponse:
            return client.images.generate(timeout=timeout, **options)

        def with_references(client: OpenAI, timeout: Timeout) -> ImagesResponse:
            return client.images.edit(image=list(references.sent), timeout=timeout, **options)

        response, references = _call_with_references(
            call, server, family, references, with_references, ("generations", request),
            editing=False)
        item = _first_item(response)
        data = _item_bytes(item)
        image = open_image(data, "the generated image")
        return ToolOutput(
            data=_encoded(image, data),
            backend=BACKEND,
            provenance=_provenance(prompt, model, family, ctx.image_size or None, size, seed,
                                   _seed_used(response, item, image), item)
            | references.provenance(),
        )

    return generate


def openai_edit(argument: str) -> Backend:
    """``LLMI_EDIT=openai:<model>``: change ``call.source_image`` as the prompt says; with
    references, they follow it as ``image[]`` parts."""
    model = argument
    family = family_of(model)

    def edit(call: ToolCall) -> ToolOutput:
        if call.source_image is None:
            raise ToolError("an edit needs the image it changes, and none was given")
        if family.edits == "none":
            raise ToolError(f"{model} makes no edits ({family.reference}): set LLMI_EDIT to "
                            "another model, such as openai:gpt-image-1, or to "
                            "diffusers:<model>", kind="config")
        ctx = call.context
        server = _server(ctx, edit=True)
        prompt = prompt_of(call.request)
        seed = _seed(family, call)
        source = open_image(call.source_image, "the image to edit", upright=True)
        target = setting_size(ctx, "edit_size") or source.size
        size = _edit_request_size(family, target, explicit=bool(ctx.edit_size))
        upload = ("image.png", _edit_upload(family, model, source, size), "image/png")
        references = _references(family, model, call.references, editing=True)
        options: dict[str, Any] = {
            "model": model or omit, "prompt": _sent_prompt(family, prompt, seed),
            "size": size, "n": 1, **_format_options(family, seed)}

        def request(client: OpenAI, timeout: Timeout) -> ImagesResponse:
            return client.images.edit(image=upload, timeout=timeout, **options)

        def with_references(client: OpenAI, timeout: Timeout) -> ImagesResponse:
            return client.images.edit(image=[upload, *references.sent], timeout=timeout,
                                      **options)

        response, references = _call_with_references(
            call, server, family, references, with_references, ("edits", request),
            editing=True)
        item = _first_item(response)
        data = _item_bytes(item)
        answer = open_image(data, "the edited image")
        seed_used = _seed_used(response, item, answer)
        if family.edits == "transparent-square":
            answer = answer.crop(_placement(answer.width, source.size))
        image = answer if answer.size == target else ImageOps.fit(
            answer, target, Image.Resampling.LANCZOS)
        return ToolOutput(
            data=_encoded(image, data),
            backend=BACKEND,
            provenance=_provenance(prompt, model, family, size_text(target), size, seed,
                                   seed_used, item) | references.provenance(),
        )

    return edit


# --- references ------------------------------------------------------------------------


@dataclass(frozen=True)
class _References:
    """The reference images a request sends, and why any of the call's were left out."""

    sent: tuple[Upload, ...]
    ignored: str | None = None

    def provenance(self) -> dict[str, Any]:
        sent = {"references": len(self.sent)} if self.sent else {}
        return sent | (without_references(self.ignored) if self.ignored else {})


class _ReferencesRefused(ToolError):
    """The server refused a request's references; the message says how."""


def _references(family: Family, model: str, references: Sequence[bytes], *,
                editing: bool) -> _References:
    """The ``references`` that ``family`` takes, uploaded as an edit's source is; the image
    edited, if any, counts towards its limit."""
    if not references:
        return _References(())
    if family.edits != "any":
        return _References((), f"{model} takes no reference images")
    limit = family.edit_images
    kept = references if limit is None else references[:limit - 1 if editing else limit]
    uploads = tuple(_reference_upload(data, number) for number, data in enumerate(kept, 1))
    if len(kept) == len(references):
        return _References(uploads)
    among = ", the image edited among them" if editing else ""
    return _References(uploads, (
        f"{model} takes at most {limit} images in one request{among}, so the last "
        f"{len(references) - len(kept)} of its {len(references)} reference images were left "
        "out"))


def _reference_upload(data: bytes, number: int) -> Upload:
    image = open_image(data, f"reference image {number}", upright=True)
    return f"reference-{number}.png", _upload_png(image), "image/png"


def _call_with_references(
    call: ToolCall, server: _Server, family: Family, references: _References,
    with_references: Request, without: tuple[Endpoint, Request], *, editing: bool,
) -> tuple[ImagesResponse, _References]:
    """The answer to ``with_references`` when there are references to send; when there are
    none, or the server refuses them, the answer to ``without``, in the time left."""
    started = time.monotonic()
    if references.sent:
        refusal = _refusal(family, server, editing=editing)
        try:
            return _call_api(call, server, family, "edits", with_references, refusal), references
        except _ReferencesRefused as refused:
            references = _References((), str(refused))
            call = replace(call, deadline_s=call.deadline_s - (time.monotonic() - started))
    return _call_api(call, server, family, *without), references


def _refusal(family: Family, server: _Server, *, editing: bool) -> Refusal:
    """A server without an edits route takes no references, though it may generate; an
    open server's model may take fewer images than were sent, and says so with a 4xx."""

    def refused(error: openai.APIStatusError) -> str | None:
        status = error.status_code
        if not editing and _no_edits_route(error):
            return (f"the images server at {server.where} has no edits endpoint (POST "
                    f"/images/edits answered {status}), so it takes no reference images")
        if family.edit_images is None and status in _REFUSED_IMAGES_STATUSES:
            return (f"the images server at {server.where} refused the reference images "
                    f"({status}: {_server_message(error)})")
        return None

    return refused


# --- the server and the request -------------------------------------------------------


def images_server(ctx: Context, *, edit: bool) -> str | None:
    """The images server as set: for an edit ``LLMI_EDIT_BASE_URL`` when set, else
    ``LLMI_IMAGES_BASE_URL``, else ``OPENAI_BASE_URL``; unset, OpenAI's."""
    return (edit and ctx.edit_base_url) or ctx.images_base_url or ctx.base_url


def _server(ctx: Context, *, edit: bool) -> _Server:
    # The default URL is passed explicitly so the SDK never reads OPENAI_BASE_URL itself.
    base_url = (images_server(ctx, edit=edit) or OPENAI_BASE_URL).rstrip("/")
    api_key = (edit and ctx.edit_api_key) or ctx.api_key or ""
    setting = "LLMI_EDIT_BASE_URL" if edit and ctx.edit_base_url else "LLMI_IMAGES_BASE_URL"
    key_setting = "LLMI_EDIT_API_KEY or OPENAI_API_KEY" if edit else "OPENAI_API_KEY"
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(
            f"the images API base URL {base_url!r} is not an http(s) URL: set "
            f"{setting} (or OPENAI_BASE_URL) like http://localhost:8000/v1",
            kind="config",
        )
    if parts.hostname == urlsplit(OPENAI_BASE_URL).hostname and not api_key:
        raise ToolError(
            f"the OpenAI images API needs a key: set {key_setting}, or set {setting} to an "
            "OpenAI-compatible images server",
            kind="config",
        )
    return _Server(base_url, api_key or "EMPTY", setting, key_setting)


def _seed(family: Family, call: ToolCall) -> int | None:
    return None if family.seed == "none" else applied_seed(call.request, call.context)


def _sent_prompt(family: Family, prompt: str, seed: int | None) -> str:
    if family.seed == "sd_cpp_extra_args" and seed is not None:
        return f'{prompt} <sd_cpp_extra_args>{{"seed": {seed}}}</sd_cpp_extra_args>'
    return prompt


def _format_options(family: Family, seed: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if family.response_format:
        options["response_format"] = "b64_json"
    if family.seed == "seed field" and seed is not None:
        options["extra_body"] = {"seed": seed}
    return options


def _call_api(call: ToolCall, server: _Server, family: Family, endpoint: Endpoint,
              request: Request, refusal: Refusal | None = None) -> ImagesResponse:
    """Run ``request``, retrying transient failures, each try within the time left; an
    answer that ``refusal`` names raises ``_ReferencesRefused``."""
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
                refused = refusal(error) if refusal and isinstance(
                    error, openai.APIStatusError) else None
                raise (_ReferencesRefused(refused) if refused else _tool_error(
                    error, server, family, endpoint, call.deadline_s)) from error

        return retry_transient(attempt, deadline_s=call.deadline_s)


# --- errors ----------------------------------------------------------------------------


def _tool_error(error: openai.APIError, server: _Server, family: Family, endpoint: Endpoint,
                deadline_s: float) -> ToolError:
    where = server.where
    if isinstance(error, openai.APITimeoutError):
        return ToolError(f"the images API at {where} did not answer within the {deadline_s:g} s "
                         "deadline", kind="timeout", transient=True)
    if isinstance(error, openai.APIConnectionError):
        return ToolError(f"could not reach the images API at {where}: {error.__cause__ or error}",
                         kind="http", transient=True)
    if isinstance(error, openai.APIStatusError):
        return _status_error(error, server, family, endpoint)
    return ToolError(f"the images API at {where} answered something unreadable: {error}")


def _status_error(error: openai.APIStatusError, server: _Server, family: Family,
                  endpoint: Endpoint) -> ToolError:
    where, status, message = server.where, error.status_code, _server_message(error)
    said = f"the images API at {where} answered {status}: {message}"
    if endpoint == "edits" and _no_edits_route(error):
        return ToolError(
            f"the images server at {where} has no edits endpoint (POST /images/edits answered "
            f"{status}: {message}): set LLMI_EDIT_BASE_URL to a server that edits, or set "
            "LLMI_EDIT to another backend", kind="config")
    if status == 400 and family is OPEN_SERVER and error.code in _REFUSED_FIELD_CODES:
        # An alias (a LiteLLM model name, an Azure deployment) can hide an OpenAI model.
        return ToolError(
            f"{said} (a model llmi does not know by name is sent what open servers take: any "
            "size, seed and response_format; if it is an OpenAI image model behind another "
            "name, name it as OpenAI does after 'openai:', such as gpt-image-1)", kind="http")
    if status in (401, 403):
        return ToolError(f"{said} (check {server.key_setting} and {server.url_setting})",
                         kind="config")
    if status == 404:
        return ToolError(f"{said} (check {server.url_setting} and the model after 'openai:')",
                         kind="config")
    if status == 429 and _is_quota(error, message):
        return ToolError(f"{said} (out of quota or billing)", kind="quota")
    if status in (408, 409, 429) or status >= 500:
        return ToolError(said, kind="http", transient=True)
    return ToolError(said, kind="http")


def _no_edits_route(error: openai.APIStatusError) -> bool:
    return error.status_code in (404, 405) and error.code != "model_not_found"


def _server_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        # OpenAI puts it in error.message; FastAPI servers (vLLM-Omni, SGLang) in detail.
        text = body.get("message") or body.get("detail") or body
    else:
        text = body or error.response.text or error.message
    return str(text)[:500]


def _is_quota(error: openai.APIStatusError, message: str) -> bool:
    if error.code in QUOTA_CODES or error.type in QUOTA_CODES:
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


def _encoded(image: Image.Image, data: bytes) -> bytes:
    """``data`` when it is PNG, JPEG, WebP or GIF and ``image`` is what it decodes to; else PNG."""
    if image.format in _KEPT_FORMATS:
        return data
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _seed_used(response: ImagesResponse, item: ImageItem, image: Image.Image) -> int | None:
    """The seed the server says it made the image with, if it says."""
    for said in (item.model_extra, response.model_extra):
        seed = (said or {}).get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
    parameters = image.info.get("parameters")
    match = _PARAMETERS_SEED.search(parameters) if isinstance(parameters, str) else None
    return int(match.group(1)) if match else None


def _provenance(prompt: str, model: str, family: Family, size_asked: str | None,
                size_used: str | None, seed_requested: int | None, seed_used: int | None,
                item: ImageItem) -> dict[str, Any]:
    provenance: dict[str, Any] = {"prompt": prompt, "model": model, "family": family.name,
                                  "size_asked": size_asked, "size_used": size_used}
    if item.revised_prompt:
        provenance["revised_prompt"] = item.revised_prompt
    # None: no seed was asked for (the model takes none, or LLMI_SEED draws one).
    provenance["seed_requested"] = seed_requested
    if seed_used is not None:
        provenance["seed"] = seed_used
    return provenance


# --- sizes -----------------------------------------------------------------------------


def _nearest_size(sizes: tuple[Size, ...], width: int, height: int) -> Size:
    """The size in ``sizes`` closest in aspect ratio to ``width``x``height``, then in area."""
    aspect, area = math.log(width / height), math.log(width * height)

    def distance(size: Size) -> tuple[float, float]:
        return (round(abs(math.log(size[0] / size[1]) - aspect), 9),
                abs(math.log(size[0] * size[1]) - area))

    return min(sizes, key=distance)


def _generation_size(family: Family, ctx: Context) -> str | None:
    asked = ctx.image_size or ""
    if not family.sizes or (asked == "auto" and family.default_size == "auto"):
        return asked or family.default_size
    size = setting_size(ctx, "image_size", rules=family.reference)
    return family.default_size if size is None else size_text(_nearest_size(family.sizes, *size))


def _edit_request_size(family: Family, target: Size, *, explicit: bool) -> str:
    if family.sizes:
        return size_text(_nearest_size(family.sizes, *target))
    if explicit:
        return size_text(target)
    return _open_server_size(*target)


def _open_server_size(width: int, height: int) -> str:
    scale = min(1.0, math.sqrt(_OPEN_SERVER_PIXELS / (width * height)))
    return "x".join(str(max(16, round(side * scale / 16) * 16)) for side in (width, height))


# --- the upload ------------------------------------------------------------------------


def _edit_upload(family: Family, model: str, source: Image.Image, size: str) -> bytes:
    if family.edits == "transparent-square":
        side = int(size.partition("x")[0])
        return _transparent_square_png(model, source, side)
    return _upload_png(source)


def _upload_png(image: Image.Image) -> bytes:
    """PNG the edit endpoints take: RGB, or RGBA when the source has transparency."""
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    if max(image.size) > _UPLOAD_MAX_SIDE:
        image.thumbnail((_UPLOAD_MAX_SIDE, _UPLOAD_MAX_SIDE), Image.Resampling.LANCZOS)
    return _png(image)


def _transparent_square_png(model: str, source: Image.Image, side: int) -> bytes:
    """dall-e-2's edit input: the source centred on an opaque square canvas of ``side``.

    dall-e-2 repaints the fully transparent pixels and keeps the rest, so the canvas is
    opaque (nothing is painted where the answer is cropped away) and the source's own
    transparency says what changes.
    """
    rgba = source.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] > 0:
        raise ToolError(
            f"{model} only repaints the fully transparent parts of an image, and this one has "
            "none, so the edit would change nothing: set LLMI_EDIT to a model that edits by "
            "instruction, such as openai:gpt-image-1, or to diffusers:<model>", kind="config")
    box = _placement(side, rgba.size)
    fitted = rgba.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.paste(fitted, box[:2])
    data = _png(canvas)
    if len(data) >= _DALL_E_2_MAX_BYTES:
        raise ToolError(f"the square PNG for {model} is {len(data)} bytes, over its 4 MB limit: "
                        "set LLMI_EDIT_SIZE to 512x512 or smaller", kind="config")
    return data


def _placement(side: int, size: Size) -> tuple[int, int, int, int]:
    """The box an image of ``size`` fills, scaled and centred, on a square of ``side``."""
    scale = side / max(size)
    width, height = (max(1, round(length * scale)) for length in size)
    left, top = (side - width) // 2, (side - height) // 2
    return left, top, left + width, top + height


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
