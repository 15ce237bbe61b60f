"""The downloader for every image that comes from a URL.

URLs come from search results and model output, so they are untrusted: only http(s)
to public addresses, checked after DNS resolution and again on every redirect, with
time, byte and pixel limits, and the body must decode as an image.

httpcore, not httpx, does the HTTP: its public network-backend interface lets the
connect step resolve the host, vet every address and connect to a vetted one, so a
second DNS answer (rebinding) can never reach a private address, while TLS still
verifies the certificate and sends SNI for the hostname.
"""

from __future__ import annotations

import io
import ipaddress
import re
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import httpcore
import httpx
from PIL import Image

from llmi import __version__
from llmi.artifacts import IMAGE_FORMATS, MAX_PIXELS
from llmi.context import Context
from llmi.tools.base import ToolError
from llmi.tools.retry import retry_transient

USER_AGENT = f"llmi/{__version__} (+image fetch)"
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class DownloadPolicy:
    allow_private: frozenset[str]
    """Lower-case ``host`` or ``host:port`` entries (``[::1]:port`` for IPv6) allowed
    although they resolve to private addresses."""
    max_bytes: int = 20_000_000
    max_pixels: int = MAX_PIXELS
    min_side: int = 256
    connect_timeout_s: float = 5.0
    """To connect, and between two reads."""
    total_timeout_s: float = 20.0
    """For one image, redirects included."""

    @classmethod
    def from_context(cls, ctx: Context) -> DownloadPolicy:
        entries = re.split(r"[,\s]+", (ctx.allow_private_hosts or "").strip().lower())
        return cls(
            allow_private=frozenset(entry for entry in entries if entry),
            max_bytes=ctx.download_max_bytes,
            min_side=ctx.min_image_side,
            connect_timeout_s=ctx.connect_timeout,
            total_timeout_s=ctx.download_timeout,
        )


@dataclass(frozen=True)
class Candidate:
    url: str
    page_url: str | None = None
    description: str = ""


def fetch_image(url: str, policy: DownloadPolicy, *, deadline_s: float | None = None) -> bytes:
    """Download and validate one image within ``deadline_s`` seconds (and the policy's).

    Raises ToolError of kind ``unsafe_url``, ``http``, ``timeout``, ``too_large``,
    ``too_small`` or ``not_image``.
    """
    seconds = policy.total_timeout_s
    if deadline_s is not None:
        seconds = min(seconds, deadline_s)
    return _fetch(url, policy, _Budget(seconds, threading.Event()))


def first_valid(
    candidates: Sequence[Candidate], policy: DownloadPolicy, *, deadline_s: float
) -> tuple[Candidate, bytes]:
    """The best-ranked candidate that downloads as a valid image within ``deadline_s``.

    All candidates download at once; the answer is the first valid one in rank order,
    returned as soon as every better-ranked one has failed. Downloads still running
    are abandoned and end at their next read.
    """
    if not candidates:
        raise ToolError("no image candidates to download", kind="no_result")
    overall = _Budget(deadline_s, threading.Event())
    workers = ThreadPoolExecutor(max_workers=len(candidates), thread_name_prefix="llmi-fetch")
    futures = [workers.submit(_fetch_with_retry, c.url, policy, overall) for c in candidates]
    try:
        return _first_in_rank_order(candidates, futures, overall)
    finally:
        overall.abandon()
        workers.shutdown(wait=False, cancel_futures=True)


def _fetch_with_retry(url: str, policy: DownloadPolicy, overall: _Budget) -> bytes:
    def attempt() -> bytes:
        return _fetch(url, policy, overall.within(policy.total_timeout_s))

    return retry_transient(attempt, deadline_s=overall.left(), attempts=2, sleep=overall.sleep)


def _first_in_rank_order(
    candidates: Sequence[Candidate], futures: list[Future[bytes]], overall: _Budget
) -> tuple[Candidate, bytes]:
    reasons = []
    for rank, (candidate, future) in enumerate(zip(candidates, futures), start=1):
        try:
            return candidate, future.result(timeout=overall.seconds_left())
        except FutureTimeout:
            error = ToolError("timed out", kind="timeout", transient=True)
        except ToolError as exc:
            error = exc
        reasons.append((error, f"#{rank} {_short(candidate.url)}: {error}"))
    raise ToolError(
        f"no valid image among {len(candidates)} candidates: "
        + "; ".join(reason for _, reason in reasons),
        kind="no_result",
        transient=all(error.transient for error, _ in reasons),
    )


def _short(url: str, limit: int = 80) -> str:
    return url if len(url) <= limit else url[: limit - 1] + "…"


class _Budget:
    """Time left for a download; over at its deadline, or at once when abandoned."""

    def __init__(self, seconds: float, abandoned: threading.Event) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._abandoned = abandoned

    def within(self, seconds: float) -> _Budget:
        """A budget that ends after ``seconds`` or with this one, whichever is first."""
        return _Budget(min(seconds, self.seconds_left()), self._abandoned)

    def abandon(self) -> None:
        self._abandoned.set()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake when abandoned."""
        self._abandoned.wait(seconds)

    def seconds_left(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    def left(self) -> float:
        """Seconds left; raises ToolError(timeout) when none are."""
        if self._abandoned.is_set():
            raise ToolError("abandoned: another candidate won", kind="timeout")
        left = self._ends - time.monotonic()
        if left <= 0:
            raise self.spent()
        return left

    def spent(self) -> ToolError:
        return ToolError(f"timed out after {self.seconds:g} s in all",
                         kind="timeout", transient=True)

    def clamp(self, timeout: float | None) -> float:
        left = self.left()
        return left if timeout is None else min(timeout, left)


def _fetch(url: str, policy: DownloadPolicy, budget: _Budget) -> bytes:
    try:
        data = _download(url, policy, budget)
    except httpcore.TimeoutException:
        if budget.seconds_left() == 0:
            raise budget.spent() from None
        raise ToolError(f"no answer within {policy.connect_timeout_s:g} s",
                        kind="timeout", transient=True) from None
    except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
        # httpcore wraps the ssl error as its argument; a bad certificate stays bad.
        bad_certificate = any(isinstance(arg, ssl.SSLCertVerificationError) for arg in exc.args)
        raise ToolError(f"connection failed: {exc or type(exc).__name__}",
                        kind="http", transient=not bad_certificate) from None
    except (httpcore.LocalProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise ToolError(f"request failed: {exc}", kind="http") from None
    _check_image(data, policy)
    return data


def _download(url: str, policy: DownloadPolicy, budget: _Budget) -> bytes:
    timeouts = {name: policy.connect_timeout_s for name in ("connect", "read", "write", "pool")}
    backend = _VettingBackend(policy.allow_private, budget)
    with httpcore.ConnectionPool(network_backend=backend, retries=0) as pool:
        target = _checked_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            with pool.stream("GET", _core_url(target), headers=_request_headers(target),
                             extensions={"timeout": timeouts}) as response:
                location = _header(response, b"location")
                if response.status not in _REDIRECTS or location is None:
                    _check_status(response.status)
                    return _read_capped(response, policy.max_bytes, budget)
            target = _checked_url(location, base=target)
    raise ToolError(f"more than {MAX_REDIRECTS} redirects", kind="http")


def _checked_url(url: str, *, base: httpx.URL | None = None) -> httpx.URL:
    try:
        parsed = base.join(url) if base is not None else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, UnicodeError) as exc:
        raise ToolError(f"invalid URL: {exc}", kind="unsafe_url") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs are fetched, not {parsed.scheme or 'none'}:",
                        kind="unsafe_url")
    if parsed.userinfo:
        raise ToolError("URLs with user names or passwords are refused", kind="unsafe_url")
    if not parsed.host:
        raise ToolError("URL has no host", kind="unsafe_url")
    return parsed


def _core_url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    )


def _request_headers(url: httpx.URL) -> list[tuple[bytes, bytes]]:
    return [
        (b"Host", url.netloc),  # httpcore would drop the brackets of an IPv6 host
        (b"User-Agent", USER_AGENT.encode()),
        (b"Accept", b"image/*"),
        (b"Accept-Encoding", b"identity"),  # httpcore does not decode; and no gzip bombs
    ]


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _check_status(status: int) -> None:
    if 200 <= status < 300:
        return
    transient = status == 429 or status >= 500
    raise ToolError(f"HTTP {status}", kind="http", transient=transient)


def _read_capped(response: httpcore.Response, max_bytes: int, budget: _Budget) -> bytes:
    declared = _header(response, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise ToolError(f"image is {int(declared)} bytes, over the {max_bytes}-byte cap",
                        kind="too_large")
    body = bytearray()
    for chunk in response.iter_stream():
        body += chunk
        if len(body) > max_bytes:
            raise ToolError(f"body exceeds the {max_bytes}-byte cap", kind="too_large")
        budget.left()
    return bytes(body)


def _check_image(data: bytes, policy: DownloadPolicy) -> None:
    """Header checks first, so a decompression bomb is refused before it decodes.

    Only the plugins of the accepted formats parse the untrusted bytes; the artifact
    store later turns what passes into an upright still PNG or JPEG.
    """
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            _check_size(*img.size, policy)
            img.load()
    except ToolError:
        raise
    except Image.DecompressionBombError as exc:
        raise ToolError(f"decompression bomb: {exc}", kind="too_large") from None
    except Exception as exc:  # Pillow raises many exception types on malformed input
        raise ToolError(f"not a PNG, JPEG, WebP or GIF image: {exc}", kind="not_image") from None


def _check_size(width: int, height: int, policy: DownloadPolicy) -> None:
    if width * height > policy.max_pixels:
        raise ToolError(f"image is {width}x{height} pixels, over the {policy.max_pixels} cap",
                        kind="too_large")
    if min(width, height) < policy.min_side:
        raise ToolError(f"image is {width}x{height}, smaller than {policy.min_side} px a side",
                        kind="too_small")


class _VettingBackend(httpcore.NetworkBackend):
    """Connects only to vetted addresses; every read and write ends by the budget."""

    def __init__(self, allow_private: frozenset[str], budget: _Budget) -> None:
        self._allow_private = allow_private
        self._budget = budget
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _resolve(host, port)
        if not _allowed_private(host, port, self._allow_private):
            _refuse_private(host, addresses)
        error: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address, port, self._budget.clamp(timeout), local_address, socket_options
                )
                return _BudgetedStream(stream, self._budget)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None  # _resolve never returns an empty list
        raise error


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolError(f"cannot resolve {host}: {exc.strerror}", kind="http",
                        transient=exc.errno == socket.EAI_AGAIN) from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise ToolError(f"cannot resolve {host}", kind="http")
    return addresses


def _allowed_private(host: str, port: int, allow: frozenset[str]) -> bool:
    host = host.lower()
    names = {host, f"{host}:{port}"}
    if ":" in host:
        names = {host, f"[{host}]", f"[{host}]:{port}"}
    return not names.isdisjoint(allow)


def _refuse_private(host: str, addresses: list[str]) -> None:
    for address in addresses:
        if not _is_public(address):
            raise ToolError(f"{host} resolves to non-public address {address}", kind="unsafe_url")


def _is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # e.g. a scoped link-local IPv6 address
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None and not _is_public(str(embedded)):
            return False
    # is_global alone lets IPv4 multicast and some reserved IPv6 ranges through.
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
        or ip.is_unspecified or ip.is_private
    )


class _BudgetedStream(httpcore.NetworkStream):
    """Clamps each read and write to the budget, so a dripping host ends at the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, budget: _Budget) -> None:
        self._inner = inner
        self._budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._budget.clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._budget.clamp(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: typing.Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, self._budget.clamp(timeout))
        return _BudgetedStream(tls, self._budget)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)
