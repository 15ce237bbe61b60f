"""The messages between the ``llmi`` command and its resident server (``llmi.cli.launch``,
``llmi.cli.server``): length-prefixed JSON, four bytes of big-endian length, then the
object; a request carries the command's standard streams with its first bytes."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 1 << 22


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send ``message``, and ``fds`` with its first bytes."""
    body = json.dumps(message).encode()
    data = _HEADER.pack(len(body)) + body
    sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
    if sent < len(data):  # an empty send to a peer that has read all and closed fails
        sock.sendall(data[sent:])


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the descriptors sent with it; None at the end of the stream."""
    if max_fds:
        first, fds, _, _ = socket.recv_fds(sock, _HEADER.size, max_fds)
    else:
        first, fds = sock.recv(_HEADER.size), []
    header = first + _exactly(sock, _HEADER.size - len(first)) if first else b""
    if len(header) < _HEADER.size:
        _close(fds)
        return None, []
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        _close(fds)
        raise ValueError(f"a message of {length} bytes")
    body = _exactly(sock, length)
    if len(body) < length:
        _close(fds)
        return None, []
    return json.loads(body), fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer where the stream ends first."""
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
