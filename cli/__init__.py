"""The ``llmi`` command: generate, resume, demo, eval, graph (``llmi.cli.commands``)."""

from llmi.cli.commands import entry, main

__all__ = ["entry", "main"]
