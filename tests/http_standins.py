"""Loopback HTTP stand-ins: an image host and a Tavily search API, for offline tests."""

from __future__ import annotations

import io
import json
import ssl
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

Route = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        self.server.seen.append(
            {"method": self.command, "path": path, "headers": dict(self.headers), "body": body}
        )
        self.server.routes.get(path, not_found)(self)

    def send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def pause(self, seconds: float) -> None:
        """Sleep, but end early when the server stops."""
        self.server.stopping.wait(seconds)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self, routes: Mapping[str, Route]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = dict(routes)
        self.seen: list[dict[str, Any]] = []
        self.stopping = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on purpose: endless and dripping bodies


@dataclass
class Standin:
    base_url: str
    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)
    """Requests received: method, path, headers, body."""

    def url(self, path: str) -> str:
        return self.base_url + path


# A self-signed certificate for localhost and 127.0.0.1, and its key: no CA trusts it.
SELF_SIGNED = """\
-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUb8Gs/NWLehxi9IX95XmPiEDCMMQwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNjEwMjIyMFoYDzIxMjYxMTAy
MTAyMjIwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATKTtqppsCI2GWoz0HaP1e++0Ng5qWCR/gL6Wx5JL1h5UBCtIdmXQqg
b2t5czMEWCqJ6dfqbQXaOBBdFcSOhQd8o28wbTAdBgNVHQ4EFgQUdTNQabBwJxRB
E8fXQI/ZDyRsShYwHwYDVR0jBBgwFoAUdTNQabBwJxRBE8fXQI/ZDyRsShYwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSAAwRQIhALJVG4PxkeK5jHl9aL9LLGarnoL3/HhvENDZjd3wJPxmAiBd
5V4fXOAsXTgguE0qehMfKx54Tl9jCXCZ/90ig/VjPg==
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgybTVniNMIvoYv8cG
GPAzgiaE9I5xXKmNbKZkQUqrf6ihRANCAATKTtqppsCI2GWoz0HaP1e++0Ng5qWC
R/gL6Wx5JL1h5UBCtIdmXQqgb2t5czMEWCqJ6dfqbQXaOBBdFcSOhQd8
-----END PRIVATE KEY-----
"""


def _serve_tls(server: _Server) -> None:
    with tempfile.TemporaryDirectory() as folder:
        pem = Path(folder) / "self-signed.pem"
        pem.write_text(SELF_SIGNED)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)


@contextmanager
def standin_server(routes: Mapping[str, Route], *, tls: bool = False) -> Iterator[Standin]:
    """Serve ``routes`` (path -> handler function) on 127.0.0.1; unknown paths answer 404.

    With ``tls``, serve https with a self-signed certificate.
    """
    server = _Server(routes)
    if tls:
        _serve_tls(server)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Standin(f"{'https' if tls else 'http'}://127.0.0.1:{port}", port, server.seen)
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def not_found(handler: Handler) -> None:
    handler.send(404, b"not found", "text/plain")


def serve(body: bytes, content_type: str = "image/png", status: int = 200, **headers: str) -> Route:
    return lambda handler: handler.send(status, body, content_type, **headers)


def redirect(location: str, status: int = 302) -> Route:
    return serve(b"", "text/plain", status, Location=location)


def json_reply(payload: Any, status: int = 200) -> Route:
    return serve(json.dumps(payload).encode(), "application/json", status)


def png(width: int = 400, height: int = 300) -> bytes:
    """A gradient PNG."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb."""
    data = bytearray(png(8, 8))
    # The IHDR chunk starts at byte 8: length(4) type(4) width(4) height(4) ... crc(4).
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
