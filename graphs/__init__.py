"""Graph builders: ``document`` (one document) and ``tts`` (test-time scaling)."""

from typing import Literal

GraphName = Literal["document", "tts"]


def graph_for(candidates: int) -> GraphName:
    """The graph a run that samples ``candidates`` candidate documents uses."""
    return "tts" if candidates > 1 else "document"
