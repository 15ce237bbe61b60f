"""The chat models behind the planner, the repairs and the judges, and what each is sent.

What a request may carry depends on the model, not on the host, since gateways sit in
front of most hosted models: ``FAMILIES`` says, per family of model names, whether a
temperature other than the default may be sent and which field carries the maximum
output tokens. A server that still refuses one of those parameters raises
``SettingRefused``, which names the llmi setting to change.

A request that fails for a passing reason (no connection, no reply in time, HTTP 408,
409, 429 or 5xx) is sent again by the openai client itself, ``LLMI_MODEL_RETRIES`` times
with its backoff. A 429 for exhausted quota is not passing, though OpenAI sends it with
the status of a rate limit: the client is told not to try it again (through the
``x-should-retry`` header its retry decision obeys). Any other failure of the server
raises ``ModelServerError``, whose reason says how many tries were made over how long and
whose hint names the setting to change.

``LLMI_MODEL_TIMEOUT`` is the client's timeout of each read, not of the whole reply: a
streamed reply may take as long as the model writes, while it is never silent for longer.
A stream that breaks part-way (silent too long, the connection closed, or a body that
ends before the chunk with the reply's ``finish_reason``) is not tried again, since the
reply had begun: it raises ``ModelServerError`` saying so.
"""

from __future__ import annotations

import importlib
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI

from llmi.context import Context, env_name
from llmi.errors import LlmiError, first_line


class ModelNotConfigured(RuntimeError):
    """No chat model is configured for this run."""


class ModelServerError(LlmiError):
    """A chat model's server failed a request, after every try the settings allow.

    ``reason`` says what the server did, how many tries were made and over how long;
    ``hint`` names what to change.
    """

    def __init__(self, reason: str, hint: str, *, tries: int, seconds: float) -> None:
        super().__init__(reason, hint)
        self.tries, self.seconds = tries, seconds


class SettingRefused(RuntimeError):
    """The model server refused a sampling parameter that an llmi setting sent."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Family:
    """Models whose requests take the same sampling parameters."""

    name: str
    pattern: str
    """Matched at the start of the model's name, after any gateway prefix (``openai/``)."""
    docs: str
    temperature: bool
    """False: the model takes only its default temperature, so none is sent."""
    limit_field: str
    """The request field that carries the maximum output tokens."""


FAMILIES: tuple[Family, ...] = (
    Family(
        "OpenAI o-series reasoning models (o1, o3, o3-mini, o4-mini, ...)", r"o\d",
        "https://platform.openai.com/docs/guides/reasoning and the Chat Completions "
        "reference: temperature only 1 ('Only the default (1) value is supported'); "
        "max_tokens 'is not compatible with o-series models', max_completion_tokens is",
        temperature=False, limit_field="max_completion_tokens",
    ),
    Family(
        "OpenAI GPT-5 reasoning models (gpt-5, gpt-5-mini, gpt-5-nano, gpt-5.1, ...)",
        r"gpt-5(?!\S*chat)",
        "https://platform.openai.com/docs/guides/latest-model: temperature and top_p only "
        "with reasoning effort none, which llmi does not set; langchain-openai's ChatOpenAI "
        "drops any other temperature for these names too",
        temperature=False, limit_field="max_completion_tokens",
    ),
    Family(
        "other OpenAI chat models (gpt-4o, gpt-4.1, gpt-5-chat-latest, chatgpt-4o-latest)",
        r"(?:gpt-(?!oss)|chatgpt-)",
        "https://platform.openai.com/docs/api-reference/chat/create: max_tokens is "
        "deprecated in favour of max_completion_tokens",
        temperature=True, limit_field="max_completion_tokens",
    ),
    Family(
        "any other model on an OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp, "
        "DeepSeek)", r"",
        "max_tokens is the field all of them document (Ollama's OpenAI compatibility page "
        "lists max_tokens and not max_completion_tokens; llama.cpp's server reads "
        "max_tokens or n_predict)",
        temperature=True, limit_field="max_tokens",
    ),
)


def family_of(model: str) -> Family:
    """The first family of ``FAMILIES`` whose pattern matches the model's name."""
    name = model.rsplit("/", 1)[-1].lower()
    return next(f for f in FAMILIES if re.match(f.pattern, name))


@dataclass(frozen=True)
class Role:
    """A use of a chat model, and the Context fields of its settings."""

    name: str
    model: str
    temperature: str
    max_tokens: str

    @property
    def limit_setting(self) -> str:
        """The environment variable of this role's maximum output tokens."""
        return env_name(self.max_tokens)


PLANNER = Role("the planner", "model", "temperature", "max_tokens")
"""The model that writes drafts; repairs and polish use it as well."""
TEXT_JUDGE = Role("the text judge", "judge_model", "judge_temperature", "judge_max_tokens")
VISION_JUDGE = Role("the vision judge", "vision_judge_model", "vision_judge_temperature",
                    "vision_judge_max_tokens")


def chat_model(ctx: Context) -> BaseChatModel:
    """The planner's OpenAI-compatible chat model: OpenAI, vLLM, SGLang, Ollama, llama.cpp."""
    if not ctx.model:
        raise ModelNotConfigured(
            "no chat model is configured: set LLMI_MODEL (and OPENAI_BASE_URL for a "
            "local server such as vLLM or Ollama, OPENAI_API_KEY for a hosted one)"
        )
    return _openai(ctx, PLANNER, ctx.base_url)


def judge_model(ctx: Context, *, vision: bool = False) -> BaseChatModel | None:
    """The text judge, or with ``vision`` the vision judge; None when not configured."""
    role = VISION_JUDGE if vision else TEXT_JUDGE
    if not getattr(ctx, role.model):
        return None
    return _openai(ctx, role, ctx.judge_base_url or ctx.base_url)


def temperature_for(ctx: Context, role: Role, temperature: float | None = None) -> float | None:
    """The temperature to send for ``role`` (``temperature`` instead of its setting), or
    None to send none: the setting is negative, or the model takes only its default."""
    value = getattr(ctx, role.temperature) if temperature is None else temperature
    if value < 0 or not family_of(getattr(ctx, role.model) or "").temperature:
        return None
    return value


def sampling_kwargs(ctx: Context, role: Role) -> dict[str, Any]:
    """ChatOpenAI's arguments for ``role``'s temperature and maximum output tokens."""
    model = getattr(ctx, role.model)
    kwargs: dict[str, Any] = {"temperature": temperature_for(ctx, role)}
    limit = getattr(ctx, role.max_tokens)
    if limit > 0:
        if family_of(model).limit_field == "max_completion_tokens":
            # ChatOpenAI sends its max_tokens as max_completion_tokens.
            kwargs["max_tokens"] = limit
        else:
            kwargs["extra_body"] = {"max_tokens": limit}
    return kwargs


class LlmiChatOpenAI(ChatOpenAI):
    """ChatOpenAI that keeps the reasoning a server returns beside the answer, and says
    which llmi setting a refused sampling parameter came from.

    ChatOpenAI drops the non-standard ``reasoning_content`` (DeepSeek, SGLang, vLLM before
    0.11, llama.cpp) and ``reasoning`` (vLLM 0.11+, Ollama) fields; they are kept in
    ``additional_kwargs["reasoning_content"]``, as LangChain's provider packages do.
    """

    llmi_role: str = ""
    llmi_settings: dict[str, str] = {}
    """Request field -> the environment variable of the llmi setting that sets it; also
    ``model`` and ``base_url``, the settings that name the model and its server."""

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> ChatResult:
        result = super()._create_chat_result(response, generation_info)
        raw = response if isinstance(response, dict) else response.model_dump()
        for generation, choice in zip(result.generations, raw.get("choices") or []):
            _keep_reasoning(choice.get("message"), generation.message)
        return result

    def _convert_chunk_to_generation_chunk(
        self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
    ) -> ChatGenerationChunk | None:
        generation = super()._convert_chunk_to_generation_chunk(
            chunk, default_chunk_class, base_generation_info)
        choices = chunk.get("choices") or []
        if generation is not None and choices:
            # Chunks' additional_kwargs concatenate, so the pieces make up the whole.
            _keep_reasoning(choices[0].get("delta"), generation.message)
        return generation

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        with self._explained():
            return super()._generate(*args, **kwargs)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        with self._explained():
            return await super()._agenerate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        with self._explained() as received:
            for chunk in super()._stream(*args, **kwargs):
                received.add(chunk)
                yield chunk
        self._check_ended(received)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        with self._explained() as received:
            async for chunk in super()._astream(*args, **kwargs):
                received.add(chunk)
                yield chunk
        self._check_ended(received)

    def _check_ended(self, received: _Received) -> None:
        """Raise ModelServerError for a stream whose body ended before its reply did: every
        OpenAI-compatible server sends a ``finish_reason`` in the reply's last chunk."""
        if received.chunks and not received.finished:
            raise ModelServerError(
                f"the model server at {self._where()} ended its reply part-way, after "
                f"{received.chunks} chunks, without saying that it had finished (no "
                f"finish_reason)", f"check the server and any proxy before it; {_AGAIN}",
                tries=1, seconds=received.seconds())

    @contextmanager
    def _explained(self) -> Iterator[_Received]:
        """Turn the openai client's errors into SettingRefused or ModelServerError."""
        received = _Received()
        try:
            yield received
        except openai.BadRequestError as exc:
            self._name_the_setting(exc)
            raise self._server_error(exc, received.seconds(), received) from exc
        except openai.APIError as exc:
            raise self._server_error(exc, received.seconds(), received) from exc

    def _server_error(self, exc: openai.APIError, seconds: float,
                      received: _Received) -> ModelServerError:
        tries = tries_of(exc)
        where = f"the model server at {self._where()}"
        if received.chunks:
            what, hint = _broken(exc, received.chunks, self.request_timeout)
        else:
            what, hint = _failure(exc, self.model_name, self.request_timeout, self.llmi_settings)
        reason = f"{where} {what} on {_tries(tries, seconds)}"
        if isinstance(exc, openai.APIStatusError):
            reason += f": {first_line(server_message(exc))}"
        return ModelServerError(reason, hint, tries=tries, seconds=seconds)

    def _where(self) -> str:
        return self.openai_api_base or "api.openai.com"

    def _name_the_setting(self, exc: openai.BadRequestError) -> None:
        """Raise SettingRefused when ``exc`` refuses a parameter that an llmi setting sent."""
        field = refused_field(exc)
        setting = self.llmi_settings.get(field or "")
        if setting is None:
            return
        if field == "temperature":
            fix = (f"set {setting}=-1 to send no temperature (the model's default), or "
                   f"{setting}=1")
        else:
            fix = f"set {setting}=0 to send no limit"
        server = " ".join(server_message(exc).split())
        raise SettingRefused(
            f"the model server refuses {field} for {self.llmi_role}'s model "
            f"{self.model_name} ({server}); {fix}", setting,
        ) from exc


@dataclass
class _Received:
    """How much of a streamed reply has arrived, since when, and whether its end has."""

    chunks: int = 0
    finished: bool = False
    started: float = field(default_factory=time.monotonic)

    def add(self, chunk: ChatGenerationChunk) -> None:
        self.chunks += 1
        self.finished = self.finished or bool((chunk.generation_info or {}).get("finish_reason"))

    def seconds(self) -> float:
        return time.monotonic() - self.started


def _keep_reasoning(fields: Any, message: BaseMessage) -> None:
    """Copy a reply's (or a chunk's) reasoning field into the message's additional_kwargs."""
    if not isinstance(fields, dict):
        return
    reasoning = fields.get("reasoning_content") or fields.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        message.additional_kwargs["reasoning_content"] = reasoning


_QUOTED_FIELD = re.compile(r"'(temperature|max_tokens|max_completion_tokens)'")


def refused_field(exc: openai.BadRequestError) -> str | None:
    """The request field a 400 names: OpenAI's ``param``, else one quoted in the message."""
    if exc.param:
        return str(exc.param)
    match = _QUOTED_FIELD.search(server_message(exc))
    return match.group(1) if match else None


def server_message(exc: openai.APIStatusError) -> str:
    """The error's own message from the server's JSON body, else the client's."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) and message else str(exc.message)


def _openai(ctx: Context, role: Role, base_url: str | None) -> ChatOpenAI:
    sampling = sampling_kwargs(ctx, role)
    url_field = "judge_base_url" if role is not PLANNER and ctx.judge_base_url else "base_url"
    fields = {"temperature": env_name(role.temperature),
              "max_tokens": env_name(role.max_tokens),
              "max_completion_tokens": env_name(role.max_tokens),
              "model": env_name(role.model), "base_url": env_name(url_field)}
    return LlmiChatOpenAI(
        model=getattr(ctx, role.model),
        base_url=base_url or None,
        # Local OpenAI-compatible servers accept any key, but the client insists on one.
        api_key=ctx.api_key or ("EMPTY" if base_url else None),
        timeout=ctx.model_timeout,
        max_retries=max(0, ctx.model_retries),
        http_client=http_client(),
        http_async_client=async_http_client(),
        llmi_role=role.name,
        llmi_settings=fields,
        **sampling,
    )


# --- what a failed request tells the user --------------------------------------------

RETRY_COUNT_HEADER = "x-stainless-retry-count"
"""The header in which the openai client counts the retries of each request it sends."""


def tries_of(exc: openai.APIError) -> int:
    """How many times the openai client sent the request that failed with ``exc``."""
    return int(exc.request.headers.get(RETRY_COUNT_HEADER, "0")) + 1


def _tries(tries: int, seconds: float) -> str:
    return f"1 try in {seconds:.1f} s" if tries == 1 else f"{tries} tries over {seconds:.1f} s"


def _failure(exc: openai.APIError, model: str, timeout: Any,
             settings: dict[str, str]) -> tuple[str, str]:
    """What the server did to the request that failed with ``exc`` on its last try (after
    "the model server at ..."), and the hint."""
    retries, wait = env_name("model_retries"), env_name("model_timeout")
    url, name, key = settings.get("base_url", ""), settings.get("model", ""), env_name("api_key")
    again = f"{retries} sets the tries after the first"
    if isinstance(exc, openai.APITimeoutError):
        return (f"did not answer within {timeout:g} s",
                f"check the server, or raise {wait} for a slow model (each try waits that "
                f"long); {again}")
    if isinstance(exc, openai.APIConnectionError):
        return (f"did not answer ({first_line(str(_cause(exc))) or 'connection failed'})",
                f"start the server, or set {url} to a running OpenAI-compatible server; {again}")
    if not isinstance(exc, openai.APIStatusError):
        return (f"answered what the client cannot read ({first_line(str(exc))})",
                f"check that {url} names an OpenAI-compatible server")
    status = exc.status_code
    if is_quota(exc):
        return (f"refused the request for the account's quota (HTTP 429 {exc.code or exc.type})",
                f"add credit or raise the spending limit of the account that {key} belongs "
                "to, or use another key; waiting does not help, so llmi did not try again")
    if status in (401, 403):
        return f"refused the key (HTTP {status})", f"check {key} and {url}"
    if status == 404:
        return (f"has no model {model} or no chat completions endpoint (HTTP 404)",
                f"check {name}, and {url} (it usually ends in /v1)")
    if status == 429:
        return ("refused the request for its rate limit (HTTP 429)",
                f"wait and run again, or raise {retries} to keep trying for longer")
    if status >= 500 or status in (408, 409):
        return f"failed with HTTP {status}", f"check the server and its log; {again}"
    return f"refused the request (HTTP {status})", f"check {name} and the server's log"


_AGAIN = "run again: a reply broken part-way is not used, nor tried again by itself"


def _broken(exc: openai.APIError, chunks: int, timeout: Any) -> tuple[str, str]:
    """What the server did to a streamed reply that broke after ``chunks`` chunks, and the hint."""
    if isinstance(exc, openai.APITimeoutError):
        return (f"stopped part-way through its reply, after {chunks} chunks: nothing more "
                f"came within {timeout:g} s",
                f"check the server, or raise {env_name('model_timeout')}, the longest silence "
                f"allowed within a reply; {_AGAIN}")
    cause = first_line(str(_cause(exc))) or first_line(str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return (f"closed the connection part-way through its reply, after {chunks} chunks "
                f"({cause})", f"check the server and its log; {_AGAIN}")
    return (f"broke off its reply after {chunks} chunks ({cause})",
            f"check the server and its log; {_AGAIN}")


def _cause(exc: BaseException) -> BaseException:
    """The error under the client's own (a refused connection, a name not found)."""
    while isinstance(exc, openai.APIError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


# --- quota: not a passing failure -------------------------------------------------------

QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
"""OpenAI's error codes (and types) of the 429 it answers for an account out of credit,
past its spending limit or without billing ("You exceeded your current quota, please check
your plan and billing details", https://platform.openai.com/docs/guides/error-codes):
unlike a rate limit, waiting does not end it."""


def is_quota(exc: openai.APIStatusError) -> bool:
    return exc.status_code == 429 and bool(QUOTA_CODES & {exc.code, exc.type})


def _quota_in(body: bytes) -> bool:
    try:
        document = json.loads(body)
    except ValueError:  # JSON and UTF-8 errors alike
        return False
    error = document.get("error", document) if isinstance(document, dict) else None
    return isinstance(error, dict) and bool(QUOTA_CODES & {error.get("code"), error.get("type")})


def _no_retry_on_quota(response: Any) -> None:
    """Tell the openai client not to try a quota refusal again: its retry decision obeys
    an ``x-should-retry`` header first. ``response`` is the HTTP response of the client
    the openai package uses (httpx's, or from openai 3 httpx2's)."""
    if response.status_code == 429:
        response.read()
        _mark_quota(response)


async def _no_async_retry_on_quota(response: Any) -> None:
    if response.status_code == 429:
        await response.aread()
        _mark_quota(response)


def _mark_quota(response: Any) -> None:
    if _quota_in(response.content):
        response.headers["x-should-retry"] = "false"


@cache
def http_client() -> openai.DefaultHttpxClient:
    """The openai client's default HTTP client, with ``_no_retry_on_quota``; one for the
    process, as langchain-openai shares its own."""
    return openai.DefaultHttpxClient(verify=_tls(), event_hooks={"response": [_no_retry_on_quota]})


@cache
def async_http_client() -> openai.DefaultAsyncHttpxClient:
    return openai.DefaultAsyncHttpxClient(verify=_tls(),
                                          event_hooks={"response": [_no_async_retry_on_quota]})


@cache
def _tls() -> ssl.SSLContext:
    """The TLS context the openai client's HTTP library makes by default (httpx's, or from
    openai 3 httpx2's), made once for both clients: each would read the trusted
    certificates again, most of the time it takes to make one."""
    library = openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0]
    return importlib.import_module(library).create_ssl_context()
