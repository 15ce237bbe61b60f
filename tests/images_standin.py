"""A loopback stand-in for an OpenAI-compatible images API (generations and edits)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


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


@dataclass
class Failure:
    status: int
    message: str
    code: str | None = None
    type: str = "invalid_request_error"


class ImagesServer:
    """Answers /v1/images/generations and /v1/images/edits with PNGs of the requested size.

    Scripting: ``fail`` queues error answers served before the next success; ``delay_s``
    holds every answer back; ``answer_size`` overrides the size of the image returned;
    ``item`` replaces the ``data[0]`` object (a ``url`` answer, broken base64, ...).
    """

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.failures: list[Failure] = []
        self.delay_s = 0.0
        self.answer_size: tuple[int, int] | None = None
        self.item: dict[str, Any] | None = None
        self.revised_prompt: str | None = None
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
        if self.delay_s:
            self._closing.wait(self.delay_s)
        if failure:
            error = {"message": failure.message, "type": failure.type,
                     "param": None, "code": failure.code}
            return failure.status, {"error": error}
        return 200, {"created": int(time.time()), "data": [self.item or self._image_item(seen)]}

    def _image_item(self, seen: Seen) -> dict[str, Any]:
        item: dict[str, Any] = {"b64_json": base64.b64encode(self._png(seen)).decode()}
        if self.revised_prompt:
            item["revised_prompt"] = self.revised_prompt
        return item

    def _png(self, seen: Seen) -> bytes:
        size = self.answer_size or _parse_size(str(seen.fields.get("size", "")))
        if size is None and "image" in seen.files:
            size = Image.open(io.BytesIO(seen.files["image"].data)).size
        # A gradient, not a flat fill: llmi's verifier rejects one flat colour.
        image = Image.linear_gradient("L").resize(size or (64, 64)).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()


def _parse_size(text: str) -> tuple[int, int] | None:
    width, sep, height = text.partition("x")
    return (int(width), int(height)) if sep and width.isdigit() and height.isdigit() else None


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, Upload]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    files: dict[str, Upload] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = Upload(part.get_filename(), part.get_content_type(), data)
        else:
            fields[name] = data.decode()
    return fields, files


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        content_type = self.headers.get("Content-Type", "")
        if self.path not in ("/v1/images/generations", "/v1/images/edits"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        if content_type.startswith("multipart/form-data"):
            fields, files = _parse_multipart(content_type, body)
        else:
            fields, files = json.loads(body), {}
        seen = Seen(self.path, self.headers.get("Authorization"), content_type, fields, files)
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
