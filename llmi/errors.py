"""Errors a user can act on, and how their messages are cut to one line."""

from __future__ import annotations


class LlmiError(Exception):
    """A stop the user can act on: ``reason`` says what happened, ``hint`` what to do.
    The CLI prints them as its ``llmi:`` and ``hint:`` lines."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped; empty for blank text."""
    return text.strip().splitlines()[0] if text.strip() else ""
