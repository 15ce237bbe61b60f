"""``python -m llmi.cli``: the ``llmi`` command."""

from llmi.cli.commands import entry

entry()
