"""The offline demo: recorded model replies drive the real graph, search and chart tools.

The replies below were recorded from a chat model; they are labelled as such
wherever the demo runs. Everything after the model is real: the parser, the library
search over photographs that ship inside installed packages (``llmi.cli.demo_library``),
the chart subprocess, the verifier's repair loop, the assembler.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from llmi.cli.demo_library import library_folder, prepare_library
from llmi.context import Context
from llmi.prompts import REPAIR_SYSTEM

PROMPT = ("Write a short profile of Grace Hopper and the first programmers, with her "
          "photograph and charts of the machines she worked on.")
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
        name = "hopper_repair.md" if system == REPAIR_SYSTEM else "hopper_plan.md"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(recorded(name)))])


def demo_context(out_dir: str) -> Context:
    """The demo's context: the environment's settings, the demo's tools, ``out_dir``."""
    return with_demo_tools(Context(out_dir=out_dir))


def with_demo_tools(ctx: Context) -> Context:
    """``ctx`` with the tools the demo's recorded plan uses, none of them online: search
    in the demo's library, made ready here, and chart code run with process limits where
    no jail can be had (the recorded code is llmi's own), so that the first run shows its
    images on any machine. Without a photograph to copy, search has no library, and the
    run says how to configure one."""
    folder = library_folder()
    held = prepare_library(folder)
    return replace(ctx, search_backend="library", image_library=str(folder) if held else "",
                   code_sandbox="process")
