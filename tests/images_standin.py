"""A loopback stand-in for an OpenAI-compatible images API (generations and edits).

By default it answers like an open server (vLLM-Omni, SGLang diffusion): any ``WxH``, a
PNG of the size asked for, ``b64_json`` answers, ``seed`` accepted and not echoed
(https://docs.vllm.ai/projects/vllm-omni/en/stable/serving/image_generation_api/ and
vllm_omni/entrypoints/openai/protocol/images.py: ``ImageData`` has no seed). Modes:

- ``openai_rules``: refuses what OpenAI's Images API reference refuses
  (https://platform.openai.com/docs/api-reference/images/create and
  .../images/createEdit), with its 400 ``invalid_request_error`` bodies: sizes a model
  does not take (gpt-image-*: 1024x1024, 1536x1024, 1024x1536, auto; dall-e-2: 256x256,
  512x512, 1024x1024; dall-e-3: 1024x1024, 1792x1024, 1024x1792), ``response_format``
  for gpt-image-* ("Unknown parameter: 'response_format'.", code ``unknown_parameter``,
  as OpenAI answers), ``seed`` for every model, edits with dall-e-3, and dall-e-2 edits
  whose image is not a square PNG under 4 MB with transparency (no mask is sent).
  createEdit's ``image`` is one image or an array (``image[]`` parts): "For gpt-image-1,
  ... You can provide up to 16 images. For dall-e-2, you can only provide one image", so
  more is refused (with OpenAI's wording for an array over its maximum length).
- ``image_limit``: an open server whose model takes fewer images than were sent (a
  single-image edit model on vLLM-Omni, whose /v1/images/edits reads every ``image`` and
  ``image[]`` part and answers the pipeline's ValueError 400 ``{"detail": ...}``).
- ``edits_route=False``: LocalAI, whose router (core/http/routes/openai.go) has
  /v1/images/generations and /v1/images/inpainting but no /v1/images/edits; Echo
  answers an unknown route 404 ``{"message": "Not Found"}``.
- ``sd_cpp_seed``: stable-diffusion.cpp's server (examples/server/routes_openai.cpp and
  api.md) started with that seed: the top-level ``seed`` is not read, a seed comes only
  from an ``<sd_cpp_extra_args>{"seed": N}</sd_cpp_extra_args>`` block in the prompt
  (removed before generation), else the server's own is used, and the PNG carries its
  generation parameters in a ``parameters`` text chunk ("... Seed: N, ...",
  examples/common/common.cpp ``get_image_params``).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, PngImagePlugin


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    auth: str | None
    content_type: str
    fields: dict[str, Any]
    """JSON body, or the multipart form's text fields."""
    files: dict[str, Upload] = field(default_factory=dict)
    """The multipart form's file parts by name (the last of a repeated name)."""
    uploads: list[tuple[str, Upload]] = field(default_factory=list)
    """Every file part, named, in the order sent."""

    @property
    def images(self) -> list[Upload]:
        """The ``image`` and ``image[]`` parts, in the order sent."""
        return [upload for name, upload in self.uploads if name in ("image", "image[]")]


@dataclass
class Failure:
    status: int
    message: str
    code: str | None = None
    type: str = "invalid_request_error"
    detail: bool = False
    """Answered as FastAPI servers (vLLM-Omni, SGLang) answer: ``{"detail": message}``."""

    def body(self) -> dict[str, Any]:
        if self.detail:
            return {"detail": self.message}
        return {"error": {"message": self.message, "type": self.type, "param": None,
                          "code": self.code}}


class ImagesServer:
    """Answers /v1/images/generations and /v1/images/edits with PNGs of the requested size.

    Scripting: ``fail`` queues error answers served before the next success; ``delay_s``
    holds every answer back; ``answer_size`` overrides the size of the image returned;
    ``item`` replaces the ``data[0]`` object (a ``url`` answer, broken base64, ...);
    ``openai_rules``, ``edits_route``, ``image_limit`` and ``sd_cpp_seed`` are the modes
    the module names.
    """

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.failures: list[Failure] = []
        self.delay_s = 0.0
        self.answer_size: tuple[int, int] | None = None
        self.item: dict[str, Any] | None = None
        self.revised_prompt: str | None = None
        self.openai_rules = False
        self.edits_route = True
        self.sd_cpp_seed: int | None = None
        self.image_limit: int | None = None
        self.unrouted: list[str] = []
        """Paths of requests answered 404 for want of a route."""
        self.base_url = ""
        self._closing = threading.Event()
        self._lock = threading.Lock()

    def fail(self, status: int, message: str, *, code: str | None = None,
             type: str = "invalid_request_error", times: int = 1) -> None:
        self.failures.extend(Failure(status, message, code, type) for _ in range(times))

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(seen)
            failure = self.failures.pop(0) if self.failures else None
        if failure is None and self.openai_rules:
            failure = openai_refusal(seen)
        if failure is None and self.image_limit is not None:
            failure = _image_limit_refusal(seen, self.image_limit)
        if self.delay_s:
            self._closing.wait(self.delay_s)
        if failure:
            return failure.status, failure.body()
        return 200, {"created": int(time.time()), "data": [self.item or self._image_item(seen)]}

    def _image_item(self, seen: Seen) -> dict[str, Any]:
        item: dict[str, Any] = {"b64_json": base64.b64encode(self._png(seen)).decode()}
        if self.revised_prompt:
            item["revised_prompt"] = self.revised_prompt
        return item

    def _png(self, seen: Seen) -> bytes:
        size = self.answer_size or _parse_size(str(seen.fields.get("size", "")))
        if size is None and seen.images:
            size = Image.open(io.BytesIO(seen.images[0].data)).size
        if size is None and self.openai_rules:
            size = (1024, 1024)  # what "auto" and no size give for a square prompt
        # A gradient, not a flat fill: llmi's verifier rejects one flat colour.
        image = Image.linear_gradient("L").resize(size or (64, 64)).convert("RGB")
        info = None
        if self.sd_cpp_seed is not None:
            prompt, seed = _sd_cpp_extra_seed(str(seen.fields.get("prompt", "")))
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", f"{prompt}\nSteps: 20, CFG scale: 7.000000, "
                          f"Seed: {self.sd_cpp_seed if seed is None else seed}, "
                          f"Size: {image.width}x{image.height}, Model: sd.safetensors, "
                          "RNG: cuda, Sampler: euler_a")
        buf = io.BytesIO()
        image.save(buf, "PNG", pnginfo=info)
        return buf.getvalue()


def _sd_cpp_extra_seed(prompt: str) -> tuple[str, int | None]:
    """The prompt without its ``<sd_cpp_extra_args>`` block, and the block's seed."""
    match = re.search(r"<sd_cpp_extra_args>(.*?)</sd_cpp_extra_args>", prompt, re.DOTALL)
    if match is None:
        return prompt, None
    seed = json.loads(match.group(1)).get("seed")
    return (prompt[:match.start()] + prompt[match.end():]).strip(), seed


_GPT_IMAGE_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")
_SIZES = {"dall-e-2": ("256x256", "512x512", "1024x1024"),
          "dall-e-3": ("1024x1024", "1792x1024", "1024x1792")}
_EDIT_MODELS = ("dall-e-2", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
_GPT_IMAGE_EDIT_IMAGES = 16


def openai_refusal(seen: Seen) -> Failure | None:
    """The 400 OpenAI answers ``seen`` with, or None when it takes the request."""
    model = str(seen.fields.get("model") or "dall-e-2")
    gpt_image = model.startswith("gpt-image")
    for name in ("seed", "response_format") if gpt_image else ("seed",):
        if name in seen.fields:
            return Failure(400, f"Unknown parameter: '{name}'.", "unknown_parameter")
    if seen.path.endswith("/edits") and not gpt_image and model != "dall-e-2":
        return Failure(400, f"Invalid value: '{model}'. Supported values are: "
                       + ", ".join(f"'{m}'" for m in _EDIT_MODELS) + ".", "invalid_value")
    sizes = _GPT_IMAGE_SIZES if gpt_image else _SIZES.get(model, ())
    size = str(seen.fields.get("size", ""))
    if sizes and size and size not in sizes:
        return Failure(400, f"Invalid value: '{size}'. Supported values are: "
                       + ", ".join(f"'{s}'" for s in sizes) + ".", "invalid_value")
    if seen.path.endswith("/edits"):
        return _edit_images_refusal(seen, model)
    return None


def _edit_images_refusal(seen: Seen, model: str) -> Failure | None:
    if not seen.images:
        return Failure(400, "Missing required parameter: 'image'.", "missing_required_parameter")
    most = _GPT_IMAGE_EDIT_IMAGES if model.startswith("gpt-image") else 1
    if len(seen.images) > most:
        return Failure(400, "Invalid 'image': array too long. Expected an array with maximum "
                       f"length {most}, but got an array with length {len(seen.images)} "
                       "instead.", "array_above_max_length")
    if model == "dall-e-2":
        return _dall_e_2_image_refusal(seen.images[0].data, has_mask="mask" in seen.files)
    return None


def _image_limit_refusal(seen: Seen, limit: int) -> Failure | None:
    if not seen.path.endswith("/edits") or len(seen.images) <= limit:
        return None
    return Failure(400, f"this pipeline takes at most {limit} image(s), got "
                   f"{len(seen.images)}", detail=True)


def _dall_e_2_image_refusal(data: bytes, *, has_mask: bool) -> Failure | None:
    image = Image.open(io.BytesIO(data))
    if image.format != "PNG" or len(data) >= 4 * 1024 * 1024:
        return Failure(400, "Uploaded image must be a PNG and less than 4 MB.", None)
    if image.width != image.height:
        return Failure(400, "Invalid input image - image must be square.", None)
    if not has_mask and (image.mode != "RGBA" or image.getchannel("A").getextrema()[0] > 0):
        return Failure(400, "Invalid input image - format must be in ['RGBA', 'LA', 'L'] "
                       f"with transparency when no mask is given, got {image.mode}.", None)
    return None


def _parse_size(text: str) -> tuple[int, int] | None:
    width, sep, height = text.partition("x")
    return (int(width), int(height)) if sep and width.isdigit() and height.isdigit() else None


def _parse_multipart(content_type: str,
                     body: bytes) -> tuple[dict[str, Any], list[tuple[str, Upload]]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    uploads: list[tuple[str, Upload]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            uploads.append((name, Upload(part.get_filename(), part.get_content_type(), data)))
        else:
            fields[name] = data.decode()
    return fields, uploads


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        content_type = self.headers.get("Content-Type", "")
        routes = ["/v1/images/generations"]
        if self.server.images.edits_route:
            routes.append("/v1/images/edits")
        if self.path not in routes:
            self.server.images.unrouted.append(self.path)
            self._send(404, {"message": "Not Found"})
            return
        if content_type.startswith("multipart/form-data"):
            fields, uploads = _parse_multipart(content_type, body)
        else:
            fields, uploads = json.loads(body), []
        seen = Seen(self.path, self.headers.get("Authorization"), content_type, fields,
                    dict(uploads), uploads)
        self._send(*self.server.images.answer(seen))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    images: ImagesServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (a time-out test) closes its socket mid-answer


@contextmanager
def images_server() -> Iterator[ImagesServer]:
    """Serve the images API on 127.0.0.1; ``base_url`` ends in ``/v1``."""
    images = ImagesServer()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.images = images
    images.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield images
    finally:
        images._closing.set()
        server.shutdown()
        server.server_close()
