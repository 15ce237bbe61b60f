"""A loopback stand-in for an OpenAI-compatible chat completions server.

It answers as the Chat Completions API documents
(https://platform.openai.com/docs/api-reference/chat/create), with what real servers add:

- reasoning beside the answer (``Completion``): ``reasoning_content`` as DeepSeek's API
  (https://api-docs.deepseek.com/guides/reasoning_model), SGLang and llama.cpp's server
  with ``--reasoning-format deepseek`` return it, ``reasoning`` as vLLM 0.11+
  (https://docs.vllm.ai/en/latest/features/reasoning_outputs/) and Ollama do, with the
  content empty or null;
- ``finish_reason`` "length" for a reply the token limit cut;
- with ``"stream": true``, server-sent ``chat.completion.chunk`` events ending in
  ``data: [DONE]`` (https://platform.openai.com/docs/api-reference/chat-streaming), the
  reasoning in its own delta before the content, as vLLM and DeepSeek stream it, in an
  HTTP/1.1 chunked body as uvicorn (vLLM's, SGLang's server) sends it. A ``Streamed``
  reply comes in pieces of a few characters, a pause apart, as a server sends tokens as
  the model makes them; without ``"stream"``, the server is silent for all those pauses
  and then answers. It may be cut part-way: the server closes the connection (a crashed
  worker), ends the body as if it were whole (a proxy that loses its upstream and ends its
  own response, as a body delimited by the connection's close ends: RFC 9112, section
  6.3), or goes silent with the connection open (a stuck GPU);
- OpenAI's refusals of the sampling parameters of its reasoning models (o-series and
  GPT-5, https://platform.openai.com/docs/guides/reasoning): ``max_tokens`` is refused
  with code ``unsupported_parameter`` ("Use 'max_completion_tokens' instead"), any
  temperature but 1 with code ``unsupported_value`` ("Only the default (1) value is
  supported"), as HTTP 400 ``invalid_request_error`` bodies; and its refusal of JSON mode
  (``response_format`` ``json_object``) when no message says "JSON"
  (https://platform.openai.com/docs/guides/structured-outputs#json-mode);
- error replies (``ErrorReply``) with the bodies OpenAI documents for them
  (https://platform.openai.com/docs/guides/error-codes): a 500 ``server_error``, a 401 for
  a wrong key, a 429 rate limit, and the 429 ``insufficient_quota`` of an account out of credit, which comes with
  the status of a rate limit and no header saying not to try again.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Completion:
    """One reply: its content (None is JSON null), reasoning fields and finish reason."""

    content: str | None = ""
    reasoning_content: str | None = None
    reasoning: str | None = None
    finish_reason: str = "stop"

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        for key in ("reasoning_content", "reasoning"):
            if getattr(self, key) is not None:
                message[key] = getattr(self, key)
        return message


@dataclass(frozen=True)
class ErrorReply:
    """An error answered with HTTP ``status`` and ``{"error": error}``, as OpenAI answers."""

    status: int
    error: dict[str, Any]


SERVER_ERROR = ErrorReply(500, {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error", "param": None, "code": None})
RATE_LIMITED = ErrorReply(429, {
    "message": "Rate limit reached for gpt-4o in organization org-test on requests per min "
               "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
               "https://platform.openai.com/account/rate-limits to learn more.",
    "type": "requests", "param": None, "code": "rate_limit_exceeded"})
BAD_KEY = ErrorReply(401, {
    "message": "Incorrect API key provided: sk-test. You can find your API key at "
               "https://platform.openai.com/account/api-keys.",
    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"})
OUT_OF_QUOTA = ErrorReply(429, {
    "message": "You exceeded your current quota, please check your plan and billing details. "
               "For more information on this error, read the docs: "
               "https://platform.openai.com/docs/guides/error-codes/api-errors.",
    "type": "insufficient_quota", "param": None, "code": "insufficient_quota"})


_REASONING_MODEL = re.compile(r"^(?:o\d|gpt-5(?!\S*chat))")


def openai_refusal(body: dict[str, Any], served: str) -> dict[str, Any] | None:
    """OpenAI's 400 error for a request that it refuses: JSON mode without the word
    "JSON" in the messages, or a sampling parameter reasoning model ``served`` does not take."""
    if _json_mode_unasked(body):
        return {"message": "'messages' must contain the word 'json' in some form, to use "
                           "'response_format' of type 'json_object'.",
                "type": "invalid_request_error", "param": "messages", "code": None}
    if not _REASONING_MODEL.match(served.rsplit("/", 1)[-1].lower()):
        return None
    if "max_tokens" in body:
        return {"message": "Unsupported parameter: 'max_tokens' is not supported with this "
                           "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}
    if body.get("temperature", 1) != 1:
        return {"message": f"Unsupported value: 'temperature' does not support "
                           f"{body['temperature']} with this model. Only the default (1) "
                           "value is supported.",
                "type": "invalid_request_error", "param": "temperature",
                "code": "unsupported_value"}
    return None


def _json_mode_unasked(body: dict[str, Any]) -> bool:
    """JSON mode (``response_format`` ``json_object``) whose messages never say "JSON":
    the API refuses it, lest the model write whitespace until its token limit
    (https://platform.openai.com/docs/guides/structured-outputs#json-mode)."""
    if (body.get("response_format") or {}).get("type") != "json_object":
        return False
    texts = [message["content"] if isinstance(message["content"], str)
             else " ".join(part.get("text", "") for part in message["content"])
             for message in body["messages"] if message.get("content")]
    return not any("json" in text.lower() for text in texts)


@dataclass(frozen=True)
class Streamed:
    """``completion`` as a model makes it: ``size`` characters a piece, ``pause`` seconds
    apart. With ``cut_after``, the reply ends after that many pieces: ``cut`` "close"
    closes the connection, "end" ends the body (no ``finish_reason``, no ``[DONE]``),
    "stall" sends nothing more until the server shuts down. With
    ``gate``, the rest waits after the first piece until the test sets it."""

    completion: Completion
    size: int = 4
    pause: float = 0.0
    cut_after: int | None = None
    cut: str = "close"
    gate: threading.Event | None = None

    def pieces(self) -> list[dict[str, Any]]:
        """The deltas after the first (the role's): reasoning, then content."""
        message = self.completion.message()
        return [{key: text[start:start + self.size]}
                for key in ("reasoning_content", "reasoning", "content")
                if isinstance(text := message.get(key), str)
                for start in range(0, max(len(text), 1), self.size)]


Answer = str | Completion | ErrorReply | Streamed


@contextmanager
def chat_server(*replies: Answer, serves: Mapping[str, str] | None = None
                ) -> Iterator[tuple[str, list[dict]]]:
    """Serve /v1/chat/completions, answering with ``replies`` in turn; yields (base_url, requests)."""
    queue = list(replies)
    with routed_chat_server(lambda body: queue.pop(0) if len(queue) > 1 else queue[0],
                            serves=serves) as served:
        yield served


@contextmanager
def routed_chat_server(answer: Callable[[dict], Answer], *, serves: Mapping[str, str] | None = None
                       ) -> Iterator[tuple[str, list[dict]]]:
    """Serve /v1/chat/completions, answering each request body with ``answer(body)``;
    yields (base_url, requests).

    ``serves`` maps a requested name to the OpenAI model behind it, as an Azure
    deployment or a gateway's alias does; OpenAI's refusals follow the model behind it.
    """
    seen: list[dict] = []
    closing = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            record = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
            seen.append(record)
            refusal = openai_refusal(body, (serves or {}).get(body["model"], body["model"]))
            if refusal is not None:
                self._send(400, {"error": refusal})
                return
            reply = answer(body)
            if isinstance(reply, ErrorReply):
                self._send(reply.status, {"error": reply.error})
                return
            if not isinstance(reply, Streamed):
                completion = reply if isinstance(reply, Completion) else Completion(content=reply)
                reply = Streamed(completion, size=sys.maxsize)  # each field in one piece
            if body.get("stream"):
                self._stream(body["model"], reply, record)
                return
            pieces = reply.pieces()
            if reply.cut_after is not None:
                time.sleep(reply.pause * reply.cut_after)
                if reply.cut == "stall":
                    closing.wait()
                return
            time.sleep(reply.pause * len(pieces))
            completion = reply.completion
            self._send(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": completion.finish_reason,
                             "message": completion.message()}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })

        def _stream(self, model: str, reply: Streamed, record: dict[str, Any]) -> None:
            """Server-sent events of chat.completion.chunk objects, then ``[DONE]``;
            ``record["gate_opened"]`` says whether a gate opened before its wait ran out;
            ``record["sent"]`` counts the chunks sent so far, of ``record["chunks"]``."""
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            deltas = [{"role": "assistant", "content": ""}, *reply.pieces()]
            record.update(sent=0, chunks=len(deltas))
            for index, delta in enumerate(deltas):
                if index == 2 and reply.gate is not None:
                    record["gate_opened"] = reply.gate.wait(10)
                if index - 1 == reply.cut_after:
                    if reply.cut == "stall":
                        closing.wait()
                    elif reply.cut == "end":
                        self._chunk(b"")
                    return
                if index > 1:
                    time.sleep(reply.pause)
                last = index == len(deltas) - 1
                chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                         "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason":
                                      reply.completion.finish_reason if last else None}]}
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                record["sent"] = index + 1
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            """One chunk of a chunked body; an empty one ends it."""
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def _send(self, status: int, document: dict[str, Any]) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        closing.set()
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        listener.close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
