"""The Tavily search backend against loopback stand-ins for Tavily and for an image host."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from http_standins import Handler, Route, Standin, json_reply, png, serve, standin_server
from image_kinds import KINDS, Kind, check_stored
from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools.base import ToolCall, ToolError
from llmi.tools.making import make_image
from llmi.tools.search import search
from llmi.tools.tavily import tavily_backend

GOOD = png(400, 300)


@pytest.fixture(autouse=True)
def _no_tavily_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["TAVILY_API_KEY", "TAVILY_HTTP_PROXY", "TAVILY_HTTPS_PROXY", "TAVILY_PROJECT",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "all_proxy"]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def images() -> Iterator[Standin]:
    with standin_server({
        "/good.png": serve(GOOD),
        "/page.html": serve(b"<html></html>", "image/jpeg"),
        "/small.png": serve(png(100, 100)),
    }) as server:
        yield server


@pytest.fixture
def web_images() -> Iterator[Standin]:
    """An image host with a real file of every kind, sent with its usual content type."""
    with standin_server(
        {f"/{kind.file_name}": serve(kind.data, kind.content_type) for kind in KINDS}
    ) as server:
        yield server


def answer(images: list[Any], results: list[dict[str, Any]] | None = None) -> Route:
    return json_reply({
        "query": "q", "answer": None, "response_time": 0.1,
        "images": images, "results": results or [],
    })


def tavily_error(status: int, message: str) -> Route:
    return json_reply({"detail": {"error": message}}, status)


def call(tavily: Standin, images: Standin, *, key: str = "tvly-test", deadline_s: float = 10,
         **settings: Any) -> ToolCall:
    ctx = Context(
        tavily_api_key=key,
        tavily_base_url=tavily.base_url,
        allow_private_hosts=f"127.0.0.1:{images.port} localhost:{images.port}",
        connect_timeout=1.0,
        download_timeout=2.0,
        **settings,
    )
    request = ImageRequest(slot=0, source="search", description="Kyoto in autumn",
                           params={"query": "kyoto autumn temple"}, depends_on=None, attempt=0)
    return ToolCall(request=request, context=ctx, deadline_s=deadline_s)


def failure(tool_call: ToolCall) -> ToolError:
    with pytest.raises(ToolError) as caught:
        tavily_backend("")(tool_call)
    return caught.value


def test_the_first_valid_image_wins_with_its_provenance(images: Standin) -> None:
    bad, good = images.url("/page.html"), f"http://localhost:{images.port}/good.png"
    reply = answer(
        [{"url": bad, "description": "not an image"}, {"url": good, "description": "a temple"}],
        [{"url": "https://example.org/kyoto", "title": "t", "content": "c", "score": 0.9},
         {"url": "http://localhost/kyoto-temples", "title": "t", "content": "c", "score": 0.8}],
    )
    with standin_server({"/search": reply}) as tavily:
        output = tavily_backend("")(call(tavily, images))
    assert output.data == GOOD
    assert output.backend == "tavily"
    assert output.provenance == {
        "query": "kyoto autumn temple",
        "image_url": good,
        "page_url": "http://localhost/kyoto-temples",
        "description": "a temple",
    }


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_kind_of_web_image_is_found_and_stored_upright_and_still(
    web_images: Standin, kind: Kind, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path)
    url = web_images.url(f"/{kind.file_name}")
    with standin_server({"/search": answer([{"url": url, "description": kind.name}])}) as tavily:
        tool_call = call(tavily, web_images, tool_cache=False)
        made = make_image(search, tool_call.request, None, tool_call.context, store)
    assert (made.backend, made.provenance["image_url"]) == ("tavily", url)
    assert made.image == store.put(kind.data)
    assert made.data == store.get(made.image)  # what dispatch checks is what was stored
    check_stored(store, kind.data, kind)


def test_the_search_request_asks_for_images_with_the_key(images: Standin) -> None:
    with standin_server({"/search": answer([images.url("/good.png")])}) as tavily:
        output = tavily_backend("")(call(tavily, images))
    (request,) = tavily.seen
    assert (request["method"], request["path"]) == ("POST", "/search")
    assert request["headers"]["Authorization"] == "Bearer tvly-test"
    body = json.loads(request["body"])
    assert body["query"] == "kyoto autumn temple"
    assert body["include_images"] is True
    assert body["include_image_descriptions"] is True
    assert body["max_results"] >= 1
    assert output.provenance["page_url"] is None  # no result page on the image's site
    assert output.provenance["description"] == ""  # plain URLs carry none


def test_only_the_configured_number_of_candidates_is_tried(images: Standin) -> None:
    urls = [images.url("/small.png"), images.url("/page.html"), images.url("/good.png")]
    with standin_server({"/search": answer([{"url": u} for u in urls])}) as tavily:
        error = failure(call(tavily, images, search_candidates=2))
    assert error.kind == "no_result"
    assert sorted(r["path"] for r in images.seen) == ["/page.html", "/small.png"]


def test_no_key_is_a_configuration_error(images: Standin) -> None:
    with standin_server({"/search": answer([images.url("/good.png")])}) as tavily:
        error = failure(call(tavily, images, key=""))
        assert tavily.seen == []
    assert (error.kind, error.transient) == ("config", False)
    assert "TAVILY_API_KEY" in str(error)


def test_no_images_is_no_result(images: Standin) -> None:
    with standin_server({"/search": answer([])}) as tavily:
        error = failure(call(tavily, images))
    assert (error.kind, error.transient) == ("no_result", False)
    assert "no image results for 'kyoto autumn temple'" in str(error)


@pytest.mark.parametrize(
    ("status", "kind", "transient"),
    [
        (401, "config", False),
        (432, "quota", False),
        (433, "quota", False),
        (400, "backend", False),
        (429, "http", True),
        (500, "http", True),
        (503, "http", True),
    ],
)
def test_tavily_errors_map_to_kinds(
    images: Standin, status: int, kind: str, transient: bool
) -> None:
    with standin_server({"/search": tavily_error(status, f"error {status}")}) as tavily:
        error = failure(call(tavily, images, deadline_s=2))
    assert (error.kind, error.transient) == (kind, transient)
    retried = len(tavily.seen) > 1
    assert retried == transient


def test_a_silent_tavily_times_out_within_the_deadline(images: Standin) -> None:
    def late(handler: Handler) -> None:
        handler.pause(5)  # then a good answer: waiting for it would succeed
        answer([images.url("/good.png")])(handler)

    with standin_server({"/search": late}) as tavily:
        error = failure(call(tavily, images, deadline_s=1))
    assert (error.kind, error.transient) == ("timeout", True)
    assert "within the search's 0.5 s" in str(error)  # its half of the 1 s deadline


def test_a_key_error_message_keeps_tavilys_reason(images: Standin) -> None:
    with standin_server({"/search": tavily_error(401, "Unauthorized: invalid API key")}) as tavily:
        error = failure(call(tavily, images))
    assert "Unauthorized: invalid API key" in str(error)
