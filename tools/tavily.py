"""The Tavily backend of the search tool: a web image search, then the best image that downloads."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests
from tavily import TavilyClient
from tavily.errors import (
    BadRequestError,
    ForbiddenError,
    InvalidAPIKeyError,
    UsageLimitExceededError,
)
from tavily.errors import TimeoutError as TavilyTimeout

from llmi.context import Context
from llmi.tools.base import Backend, NotConfigured, ToolCall, ToolError, ToolOutput
from llmi.tools.download import Candidate, DownloadPolicy, first_valid
from llmi.tools.retry import retry_transient

# The search may use this share of the slot's time; the downloads get the rest.
SEARCH_SHARE = 0.5
# Web pages asked for alongside the images; used only to name the page an image is from.
PAGES = 10


def tavily_backend(argument: str) -> Backend:
    """The ``tavily`` search backend; it takes no argument."""
    return search_image


def search_image(call: ToolCall) -> ToolOutput:
    started = time.monotonic()
    ctx = call.context
    if not ctx.tavily_api_key:
        raise NotConfigured("Tavily search needs an API key: set TAVILY_API_KEY")
    query = call.request["params"]["query"]
    response = _search(ctx, query, budget_s=call.deadline_s * SEARCH_SHARE)
    candidates = _candidates(response, ctx.search_candidates)
    if not candidates:
        raise ToolError(f"no image results for {query!r}", kind="no_result")
    left = call.deadline_s - (time.monotonic() - started)
    chosen, data = first_valid(candidates, DownloadPolicy.from_context(ctx), deadline_s=left)
    provenance = {
        "query": query,
        "image_url": chosen.url,
        "page_url": chosen.page_url,
        "description": chosen.description,
    }
    return ToolOutput(data, backend="tavily", provenance=provenance)


def _search(ctx: Context, query: str, *, budget_s: float) -> dict[str, Any]:
    ends = time.monotonic() + budget_s
    base_url = (ctx.tavily_base_url or "").rstrip("/") or None
    with TavilyClient(api_key=ctx.tavily_api_key, api_base_url=base_url) as client:

        def attempt() -> dict[str, Any]:
            return _ask(client, query, timeout=max(0.1, ends - time.monotonic()),
                        budget_s=budget_s)

        return retry_transient(attempt, deadline_s=budget_s)


def _ask(client: TavilyClient, query: str, *, timeout: float, budget_s: float) -> dict[str, Any]:
    """One search, with Tavily's failures turned into ToolErrors."""
    try:
        return client.search(
            query=query,
            include_images=True,
            include_image_descriptions=True,
            max_results=PAGES,
            timeout=timeout,
        )
    except InvalidAPIKeyError as exc:
        raise ToolError(f"Tavily refused the API key ({exc}): check TAVILY_API_KEY",
                        kind="config") from None
    except UsageLimitExceededError as exc:  # tavily-python's name for HTTP 429
        raise ToolError(f"Tavily rate limit (HTTP 429): {exc}",
                        kind="http", transient=True) from None
    except ForbiddenError as exc:  # 403, and 432/433: plan or pay-as-you-go limit reached
        raise ToolError(f"Tavily usage limit reached: {exc}", kind="quota") from None
    except BadRequestError as exc:
        raise ToolError(f"Tavily refused the search: {exc}", kind="backend") from None
    except TavilyTimeout:
        raise ToolError(f"Tavily did not answer within the search's {budget_s:g} s",
                        kind="timeout", transient=True) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise ToolError(f"Tavily answered HTTP {status}", kind="http",
                        transient=status >= 500 or status == 0) from None
    except requests.JSONDecodeError as exc:
        raise ToolError(f"Tavily answered with invalid JSON: {exc}", kind="backend") from None
    except requests.RequestException as exc:
        raise ToolError(f"cannot reach Tavily: {exc}", kind="http", transient=True) from None


def _candidates(response: dict[str, Any], limit: int) -> list[Candidate]:
    """Tavily's images, best first: either URLs, or {url, description} records."""
    pages = [page["url"] for page in response.get("results") or [] if page.get("url")]
    candidates = []
    for image in response.get("images") or []:
        if isinstance(image, str):
            url, description = image, ""
        else:
            url, description = image.get("url"), image.get("description") or ""
        if url:
            candidates.append(Candidate(url, _page_of(url, pages), description))
    return candidates[:limit]


def _page_of(image_url: str, pages: list[str]) -> str | None:
    """The first result page on the image's site; Tavily does not say where an image is from."""
    site = _site(image_url)
    return next((page for page in pages if site and _same_site(site, _site(page))), None)


def _same_site(a: str, b: str) -> bool:
    return a == b or a.endswith(f".{b}") or b.endswith(f".{a}")


def _site(url: str) -> str:
    host = urlsplit(url).hostname or ""
    return host.removeprefix("www.")
