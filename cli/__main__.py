"""``python -m llmi.cli``: the ``llmi`` command."""

from llmi.cli.launch import entry

entry()
