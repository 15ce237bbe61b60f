"""Tools by source name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from llmi.tools.base import ImageTool
from llmi.tools.code import code
from llmi.tools.diffusion import diffusion
from llmi.tools.edit import edit
from llmi.tools.search import search


class ToolRegistry(Mapping[str, ImageTool]):
    """An ordered mapping from a tag's ``source`` to the tool that serves it."""

    def __init__(self, tools: Iterable[ImageTool] = ()) -> None:
        self._tools: dict[str, ImageTool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: ImageTool) -> None:
        self._tools[tool.source] = tool

    def __getitem__(self, source: str) -> ImageTool:
        return self._tools[source]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def required_params(self) -> dict[str, tuple[str, ...]]:
        return {source: tool.required_params for source, tool in self._tools.items()}

    def reference_sources(self) -> frozenset[str]:
        """Sources whose tool takes reference images (``takes_references``)."""
        return frozenset(source for source, tool in self._tools.items()
                         if getattr(tool, "takes_references", False))


def default_tools() -> ToolRegistry:
    return ToolRegistry([search, diffusion, code, edit])
