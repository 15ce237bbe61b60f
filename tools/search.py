"""Search: real photographs of real things."""

from __future__ import annotations

from llmi.context import Context
from llmi.tools.base import BackendFactory, BackendTool
from llmi.tools.library import library_backend
from llmi.tools.tavily import tavily_backend


class SearchTool(BackendTool):
    source = "search"
    required_params = ("query",)
    setting = "search_backend"
    guidance = (
        "real, factual or current things: landmarks, places, products, people, news. "
        "params: {'query': a web image search query}"
    )

    def choice(self, context: Context) -> str:
        """Unset, the local library wins when one is named, else Tavily when it has a key."""
        if context.search_backend:
            return context.search_backend
        if context.image_library:
            return "library"
        return "tavily" if context.tavily_api_key else ""

    def how_to_configure(self) -> str:
        return (
            "set LLMI_IMAGE_LIBRARY to a folder of captioned images, or TAVILY_API_KEY for "
            "web search (LLMI_SEARCH=library or tavily picks one)"
        )


search = SearchTool({"tavily": tavily_backend, "library": library_backend})


def register_backend(name: str, factory: BackendFactory) -> None:
    search.register(name, factory)
