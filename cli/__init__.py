"""The ``llmi`` command: generate, resume, demo, eval, graph (``llmi.cli.commands``).

``entry`` (``llmi.cli.launch``) reads only the standard library before it knows where the
command runs; ``main`` is imported when asked for.
"""

from typing import Any

from llmi.cli.launch import entry

__all__ = ["entry", "main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from llmi.cli.commands import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
