"""The offline demo: recorded model replies drive the real graph and chart tool.

The replies below were recorded from a chat model; they are labelled as such
wherever the demo runs. Everything after the model is real: the parser, the
chart subprocess, the verifier's repair loop, the assembler.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from llmi.prompts import REPAIR_SYSTEM

PROMPT = "Write a short travel guide to a long weekend in Lisbon, with a photo, charts of the weather, and an illustration."
LABEL = "recorded model replies (offline demo): no chat model is called"


def recorded(name: str) -> str:
    return resources.files("llmi.cli").joinpath("recorded", name).read_text(encoding="utf-8")


class RecordedModel(BaseChatModel):
    """Answers the planner with the recorded plan and a repair with the recorded fix."""

    @property
    def _llm_type(self) -> str:
        return "llmi-recorded"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        system = next((m.text for m in messages if isinstance(m, SystemMessage)), "")
        name = "lisbon_repair.md" if system == REPAIR_SYSTEM else "lisbon_plan.md"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(recorded(name)))])
