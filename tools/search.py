"""Search: real photographs of real things."""

from __future__ import annotations

from typing import Any

from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools.base import Backend, BackendFactory, BackendTool


class SearchTool(BackendTool):
    source = "search"
    required_params = ("query",)
    setting = "search_backend"
    guidance = (
        "real, factual or current things: landmarks, places, products, people, news. "
        "params: {'query': a web image search query}"
    )
    params_in_cache_key = False

    def choice(self, context: Context) -> str:
        """Unset, the local library wins when one is named, else Tavily when it has a key."""
        if context.search_backend:
            return context.search_backend
        if context.image_library:
            return "library"
        return "tavily" if context.tavily_api_key else ""

    def cache_settings(self, context: Context, request: ImageRequest) -> dict[str, Any]:
        """The query and the description (the library ranks by both), the backend and its
        place (the library's folder and files, Tavily's URL), and what makes an image
        usable. The web may change under a query; its cached image does not."""
        backend = self.choice(context)
        name, _, argument = backend.partition(":")
        settings: dict[str, Any] = {
            "query": request["params"].get("query"),
            "description": request["description"],
            "backend": backend,
            "candidates": context.search_candidates,
            "min_side": context.min_image_side,
        }
        if name == "library":
            from llmi.tools.library import library_settings

            settings |= library_settings(argument or context.image_library or "")
        elif name == "tavily":
            settings["tavily_base_url"] = context.tavily_base_url
        return settings

    def how_to_configure(self) -> str:
        return (
            "set LLMI_IMAGE_LIBRARY to a folder of captioned images, or TAVILY_API_KEY for "
            "web search (LLMI_SEARCH=library or tavily picks one)"
        )


# The backends import their clients (Tavily's, numpy for the library's ranking) only when
# a search runs: a run that searches nothing starts without them.
def _tavily(argument: str) -> Backend:
    from llmi.tools.tavily import tavily_backend

    return tavily_backend(argument)


def _library(argument: str) -> Backend:
    from llmi.tools.library import library_backend

    return library_backend(argument)


search = SearchTool({"tavily": _tavily, "library": _library})


def register_backend(name: str, factory: BackendFactory) -> None:
    search.register(name, factory)
