"""Search: real photographs of real things."""

from __future__ import annotations

from llmi.tools.base import BackendFactory, BackendTool


class SearchTool(BackendTool):
    source = "search"
    required_params = ("query",)
    setting = "search_backend"
    guidance = (
        "real, factual or current things: landmarks, places, products, people, news. "
        "params: {'query': a web image search query}"
    )


search = SearchTool()


def register_backend(name: str, factory: BackendFactory) -> None:
    search.register(name, factory)
