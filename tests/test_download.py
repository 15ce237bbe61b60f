"""The image downloader against a loopback image host: safety, limits, validation, ranking."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from llmi.artifacts import IMAGE_FORMATS, ArtifactStore, NotAnImage
from llmi.context import Context
from llmi.tools.base import ToolError
from llmi.tools.download import USER_AGENT, Candidate, DownloadPolicy, fetch_image, first_valid
from http_standins import (
    Handler,
    Route,
    Standin,
    png,
    png_declaring,
    redirect,
    serve,
    standin_server,
)
from image_kinds import KINDS, Kind, check_stored, encode, halves

GOOD = png(400, 300)


def endless(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = GOOD[:4096]
    while not handler.server.stopping.is_set():
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def drip(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(GOOD)))
    handler.end_headers()
    for byte in GOOD:
        handler.wfile.write(bytes([byte]))
        handler.pause(0.3)


def declares_huge_length(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", "50000000")
    handler.end_headers()
    handler.pause(10)  # a client that waits for the body would time out instead


def slow(seconds: float) -> Route:
    def route(handler: Handler) -> None:
        handler.pause(seconds)
        handler.send(200, GOOD, "image/png")

    return route


ROUTES = {
    "/good.png": serve(GOOD),
    "/good.txt": serve(GOOD, "text/plain"),
    "/good.bin": serve(GOOD, "application/octet-stream"),
    "/html.jpg": serve(b"<!doctype html><html><body>hello</body></html>", "image/jpeg"),
    "/bomb.png": serve(png_declaring(30000, 30000)),
    "/many-pixels.png": serve(png_declaring(2000, 2000)),
    "/truncated.png": serve(GOOD[: len(GOOD) // 2]),
    "/small.png": serve(png(200, 120)),
    "/endless": endless,
    "/drip": drip,
    "/huge-length": declares_huge_length,
    "/slow": slow(5),
    "/503": serve(b"busy", "text/plain", 503),
    "/429": serve(b"slow down", "text/plain", 429),
    "/r1": redirect("/good.png"),
    "/r2": redirect("/r1", 301),
    "/r3": redirect("r2", 307),  # relative
    "/loop": redirect("/loop"),
    "/bitmap.bmp": serve(encode(halves("RGB", "red", "blue"), "BMP"), "image/bmp"),
    **{f"/kinds/{kind.file_name}": serve(kind.data, kind.content_type) for kind in KINDS},
}


@pytest.fixture
def host() -> Iterator[Standin]:
    with standin_server(ROUTES) as server:
        yield server


@pytest.fixture
def policy(host: Standin) -> DownloadPolicy:
    return DownloadPolicy(
        allow_private=frozenset({f"127.0.0.1:{host.port}"}),
        max_bytes=1_000_000,
        connect_timeout_s=1.0,
        total_timeout_s=2.0,
    )


def failure(url: str, policy: DownloadPolicy, **kwargs: float) -> ToolError:
    with pytest.raises(ToolError) as caught:
        fetch_image(url, policy, **kwargs)
    return caught.value


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every outgoing connection attempt and refuses it: no traffic leaves."""
    attempts: list[object] = []

    def refuse(sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise ConnectionRefusedError("test: no connections")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


# --- valid images -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/good.png", "/good.txt", "/good.bin"])
def test_a_real_image_is_accepted_whatever_its_content_type(
    host: Standin, policy: DownloadPolicy, path: str
) -> None:
    assert fetch_image(host.url(path), policy) == GOOD


def test_the_request_names_llmi_and_asks_for_images(host: Standin, policy: DownloadPolicy) -> None:
    fetch_image(host.url("/good.png"), policy)
    headers = host.seen[0]["headers"]
    assert headers["User-Agent"] == USER_AGENT
    assert headers["Accept"] == "image/*"
    assert headers["Host"] == f"127.0.0.1:{host.port}"


def test_redirects_within_allowed_hosts_are_followed(host: Standin, policy: DownloadPolicy) -> None:
    assert fetch_image(host.url("/r3"), policy) == GOOD
    assert [r["path"] for r in host.seen] == ["/r3", "/r2", "/r1", "/good.png"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_kind_of_web_image_downloads_and_is_stored_upright_and_still(
    host: Standin, policy: DownloadPolicy, kind: Kind, tmp_path: Path
) -> None:
    data = fetch_image(host.url(f"/kinds/{kind.file_name}"), policy)
    assert data == kind.data
    check_stored(ArtifactStore(tmp_path), data, kind)


def test_only_formats_this_pillow_can_open_are_named() -> None:
    # Naming one Pillow lacks (MPO opens through the JPEG plugin) breaks every format after it.
    Image.init()
    assert set(IMAGE_FORMATS) <= set(Image.OPEN)
    assert {"PNG", "JPEG", "WEBP", "GIF"} <= set(IMAGE_FORMATS)


# --- content that is not a usable image ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/html.jpg", "not_image"),
        ("/truncated.png", "not_image"),
        ("/bitmap.bmp", "not_image"),
        ("/small.png", "too_small"),
        ("/bomb.png", "too_large"),
    ],
)
def test_bad_content_fails_permanently(
    host: Standin, policy: DownloadPolicy, path: str, kind: str
) -> None:
    error = failure(host.url(path), policy)
    assert (error.kind, error.transient) == (kind, False)


def test_the_pixel_cap_is_checked_from_the_header(host: Standin, policy: DownloadPolicy) -> None:
    tight = DownloadPolicy(policy.allow_private, max_pixels=1_000_000, min_side=16)
    error = failure(host.url("/many-pixels.png"), tight)
    assert error.kind == "too_large"
    assert "2000x2000" in str(error)


def test_the_store_checks_the_pixel_cap_before_decoding(tmp_path: Path) -> None:
    # Over llmi's cap, under the size at which Pillow itself refuses to open an image.
    with pytest.raises(NotAnImage, match="9000x8000"):
        ArtifactStore(tmp_path).put(png_declaring(9000, 8000))


def test_a_broken_image_that_needs_normalising_is_refused_clearly(tmp_path: Path) -> None:
    cmyk = next(kind for kind in KINDS if kind.name == "cmyk-jpeg")
    with pytest.raises(NotAnImage, match="not a readable image"):
        ArtifactStore(tmp_path).put(cmyk.data[: len(cmyk.data) // 2])
    assert not any(tmp_path.rglob("*.*"))


def test_a_cmyk_jpeg_with_a_broken_profile_is_converted_without_it(tmp_path: Path) -> None:
    cmyk = encode(halves("CMYK", (0, 255, 255, 0), (255, 255, 0, 0)), "JPEG",
                  icc_profile=b"not an ICC profile")
    ref = ArtifactStore(tmp_path).put(cmyk)
    with Image.open(ArtifactStore(tmp_path).path(ref)) as stored:
        assert (stored.format, stored.mode, stored.size) == ("JPEG", "RGB", (300, 400))
        red = stored.getpixel((150, 100))
    assert red[0] > 200 and max(red[1:]) < 40


def test_an_endless_body_is_cut_at_the_byte_cap(host: Standin, policy: DownloadPolicy) -> None:
    # The body never ends, and waiting would end at the 2 s deadline as a timeout.
    error = failure(host.url("/endless"), policy)
    assert error.kind == "too_large"
    assert "1000000-byte cap" in str(error)


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    host: Standin, policy: DownloadPolicy
) -> None:
    error = failure(host.url("/huge-length"), policy)
    assert error.kind == "too_large"  # waiting for the body would have timed out
    assert "50000000 bytes" in str(error)


# --- time limits --------------------------------------------------------------------


def test_a_dripping_body_fails_at_the_overall_deadline(
    host: Standin, policy: DownloadPolicy
) -> None:
    # A byte every 0.3 s keeps within the 1 s between reads; the whole body would take
    # minutes. Only the policy's 2 s overall deadline can end it, and the message says so.
    error = failure(host.url("/drip"), policy)
    assert (error.kind, error.transient) == ("timeout", True)
    assert str(error) == "timed out after 2 s in all"


def test_the_caller_deadline_shortens_the_policy_one(host: Standin, policy: DownloadPolicy) -> None:
    error = failure(host.url("/drip"), policy, deadline_s=0.7)
    assert (error.kind, error.transient) == ("timeout", True)
    assert str(error) == "timed out after 0.7 s in all"  # not the policy's 2 s


def test_a_host_that_does_not_answer_times_out(host: Standin, policy: DownloadPolicy) -> None:
    # /slow answers a valid image after 5 s; the 1 s wait for an answer ends it first,
    # before the policy's 2 s overall deadline.
    error = failure(host.url("/slow"), policy)
    assert (error.kind, error.transient) == ("timeout", True)
    assert str(error) == "no answer within 1 s"


# --- HTTP status ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "transient"), [("/missing", False), ("/503", True), ("/429", True)]
)
def test_http_errors_say_whether_to_retry(
    host: Standin, policy: DownloadPolicy, path: str, transient: bool
) -> None:
    error = failure(host.url(path), policy)
    assert (error.kind, error.transient) == ("http", transient)


def test_a_redirect_loop_ends(host: Standin, policy: DownloadPolicy) -> None:
    error = failure(host.url("/loop"), policy)
    assert error.kind == "http"
    assert "redirects" in str(error)


def test_a_closed_port_is_a_transient_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    allowed = DownloadPolicy(frozenset({"127.0.0.1"}))
    error = failure(f"http://127.0.0.1:{port}/x.png", allowed)
    assert (error.kind, error.transient) == ("http", True)


def test_https_verifies_the_certificate_of_the_hostname() -> None:
    with standin_server({"/good.png": serve(GOOD)}, tls=True) as secure:
        allowed = DownloadPolicy(frozenset({"localhost"}))
        error = failure(f"https://localhost:{secure.port}/good.png", allowed)
    assert (error.kind, error.transient) == ("http", False)
    assert "certificate verify failed" in str(error)


# --- unsafe URLs ------------------------------------------------------------------------


def test_a_redirect_to_a_port_not_allowed_is_refused() -> None:
    with standin_server({"/good.png": serve(GOOD)}) as other, standin_server(
        {"/go": redirect(other.url("/good.png"))}
    ) as first:
        allowed = DownloadPolicy(frozenset({f"127.0.0.1:{first.port}"}))
        error = failure(first.url("/go"), allowed)
        assert (error.kind, error.transient) == ("unsafe_url", False)
        assert other.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://example.com/",
        "javascript:alert(1)",
        "http:///no-host.png",
        "http://user:secret@127.0.0.1/a.png",
    ],
)
def test_unsafe_urls_are_refused_before_connecting(url: str, no_connections: list[object]) -> None:
    allowed = DownloadPolicy(frozenset({"127.0.0.1"}))
    assert failure(url, allowed).kind == "unsafe_url"
    assert no_connections == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://0.0.0.0/a.png",
        "http://localhost/a.png",
        "http://127.0.0.1/a.png",
        "http://2130706433/a.png",
        "http://100.64.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://224.0.0.1/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://[::ffff:10.0.0.1]/a.png",
        "http://[fe80::1]/a.png",
        "http://[fd00::1]/a.png",
        "https://[2002:7f00:1::]/a.png",
    ],
)
def test_private_addresses_are_refused_before_connecting(
    url: str, no_connections: list[object]
) -> None:
    error = failure(url, DownloadPolicy(frozenset()))
    assert (error.kind, error.transient) == ("unsafe_url", False)
    assert no_connections == []


def fake_dns(monkeypatch: pytest.MonkeyPatch, name: str, *answers: list[str]) -> list[str]:
    """Answers ``name`` with ``answers`` in turn; other names resolve normally."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list:
        if host != name:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        addresses = answers[min(len(asked), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_every_resolved_address_must_be_public(
    monkeypatch: pytest.MonkeyPatch, no_connections: list[object]
) -> None:
    fake_dns(monkeypatch, "mixed.test", ["93.184.215.14", "10.0.0.7"])
    assert failure("http://mixed.test/a.png", DownloadPolicy(frozenset())).kind == "unsafe_url"
    assert no_connections == []


def test_the_connection_goes_to_the_vetted_address_not_a_new_lookup(
    monkeypatch: pytest.MonkeyPatch, no_connections: list[object]
) -> None:
    asked = fake_dns(monkeypatch, "rebind.test", ["93.184.215.14"], ["127.0.0.1"])
    error = failure("http://rebind.test/a.png", DownloadPolicy(frozenset()))
    assert (error.kind, error.transient) == ("http", True)  # the refused connection
    assert asked == ["rebind.test"]
    assert no_connections == [("93.184.215.14", 80)]


# --- allowed private hosts --------------------------------------------------------------


@pytest.mark.parametrize(
    "entry", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}"]
)
def test_allowed_entries_with_and_without_port(host: Standin, entry: str) -> None:
    name = entry.split(":")[0]
    allowed = DownloadPolicy(frozenset({entry.format(port=host.port)}))
    assert fetch_image(f"http://{name}:{host.port}/good.png", allowed) == GOOD


def test_an_allowed_entry_for_another_port_does_not_allow_this_one(host: Standin) -> None:
    allowed = DownloadPolicy(frozenset({f"127.0.0.1:{host.port + 1}"}))
    assert failure(host.url("/good.png"), allowed).kind == "unsafe_url"
    assert host.seen == []


def test_the_policy_reads_the_context() -> None:
    ctx = Context(
        allow_private_hosts="127.0.0.1:8080, LocalHost  [::1]:9000",
        download_max_bytes=1234,
        download_timeout=7.0,
        connect_timeout=2.0,
        min_image_side=64,
    )
    policy = DownloadPolicy.from_context(ctx)
    assert policy.allow_private == frozenset({"127.0.0.1:8080", "localhost", "[::1]:9000"})
    assert policy.max_bytes == 1234
    assert (policy.total_timeout_s, policy.connect_timeout_s) == (7.0, 2.0)
    assert policy.min_side == 64


# --- first_valid ----------------------------------------------------------------------------


def candidates(host: Standin, *paths: str) -> list[Candidate]:
    return [Candidate(host.url(path), description=path) for path in paths]


def test_first_valid_skips_bad_candidates(host: Standin, policy: DownloadPolicy) -> None:
    chosen, data = first_valid(
        candidates(host, "/html.jpg", "/missing", "/good.png"), policy, deadline_s=5
    )
    assert (chosen.description, data) == ("/good.png", GOOD)


def answering(answered: threading.Event, *, after: threading.Event | None = None,
              pause_s: float = 0.0) -> Route:
    """Answers GOOD, once ``after`` is set (if given) and ``pause_s`` more have passed;
    sets ``answered`` when the answer is written."""

    def route(handler: Handler) -> None:
        if after is not None:
            after.wait(10)
        handler.pause(pause_s)
        handler.send(200, GOOD, "image/png")
        answered.set()

    return route


def patient_policy(server: Standin) -> DownloadPolicy:
    """Waits 5 s for an answer: only an answer or the caller's deadline ends a download."""
    return DownloadPolicy(frozenset({f"127.0.0.1:{server.port}"}), connect_timeout_s=5.0)


def test_first_valid_waits_for_a_better_ranked_candidate() -> None:
    good_answered, better_answered = threading.Event(), threading.Event()
    routes = {
        "/good.png": answering(good_answered),
        # Answers only after /good.png has been answered, so a valid worse-ranked image
        # is there first.
        "/better.png": answering(better_answered, after=good_answered, pause_s=0.6),
    }
    with standin_server(routes) as server:
        chosen, data = first_valid(
            candidates(server, "/better.png", "/good.png"), patient_policy(server), deadline_s=5
        )
        assert good_answered.is_set() and better_answered.is_set()
    assert (chosen.description, data) == ("/better.png", GOOD)


def test_first_valid_falls_back_at_the_deadline() -> None:
    slow_answered = threading.Event()
    routes = {"/slow": answering(slow_answered, pause_s=5), "/good.png": serve(GOOD)}
    with standin_server(routes) as server:
        chosen, data = first_valid(
            candidates(server, "/slow", "/good.png"), patient_policy(server), deadline_s=1.0
        )
        # /slow would have answered a valid image, and won, had first_valid waited for it.
        assert not slow_answered.is_set()
        assert {seen["path"] for seen in server.seen} == {"/slow", "/good.png"}
    assert (chosen.description, data) == ("/good.png", GOOD)


def test_first_valid_does_not_wait_for_worse_ranked_candidates() -> None:
    slow_answered = threading.Event()
    routes = {
        "/good.png": serve(GOOD),
        "/slow": answering(slow_answered, pause_s=5),
        "/drip": drip,
    }
    with standin_server(routes) as server:
        chosen, data = first_valid(
            candidates(server, "/good.png", "/slow", "/drip"), patient_policy(server),
            deadline_s=30,
        )
        # Under the patient policy the /slow download ends only with its answer (and /drip
        # only at the 30 s deadline): first_valid returned before either.
        assert not slow_answered.is_set()
    assert (chosen.description, data) == ("/good.png", GOOD)


def test_abandoned_downloads_end(host: Standin, policy: DownloadPolicy) -> None:
    first_valid(candidates(host, "/good.png", "/drip", "/endless"), policy, deadline_s=5)
    deadline = time.monotonic() + 1.5
    while fetching() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fetching() == []


def fetching() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llmi-fetch") and t.is_alive()]


def test_first_valid_lists_every_reason(host: Standin, policy: DownloadPolicy) -> None:
    with pytest.raises(ToolError) as caught:
        first_valid(candidates(host, "/html.jpg", "/missing", "/small.png"), policy, deadline_s=5)
    error = caught.value
    assert (error.kind, error.transient) == ("no_result", False)
    message = str(error)
    assert "3 candidates" in message
    for reason in ("#1", "not a PNG", "#2", "HTTP 404", "#3", "smaller than 256"):
        assert reason in message


def test_first_valid_without_candidates(policy: DownloadPolicy) -> None:
    with pytest.raises(ToolError) as caught:
        first_valid([], policy, deadline_s=1)
    assert caught.value.kind == "no_result"
