"""The document graph: intake -> planner -> subjects -> review -> dispatch -> verifier (-> dispatch)
-> assembler."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph

from llmi.context import Context
from llmi.nodes.assembler import assemble
from llmi.nodes.dispatch import Dispatch
from llmi.nodes.intake import take_inputs
from llmi.nodes.planner import Planner
from llmi.nodes.review import Review
from llmi.nodes.subjects import Subjects
from llmi.nodes.verifier import Verifier
from llmi.state import DocumentInput, DocumentOutput, DocumentState, pending_requests
from llmi.tools.registry import ToolRegistry, default_tools

Node = Any
"""A node as LangGraph accepts it: a function or callable of (state[, runtime])."""


def build_graph(
    *,
    model: BaseChatModel | None = None,
    tools: ToolRegistry | None = None,
    intake: Node | None = None,
    planner: Node | None = None,
    subjects: Node | None = None,
    review: Node | None = None,
    dispatch: Node | None = None,
    verifier: Node | None = None,
    assembler: Node | None = None,
) -> StateGraph:
    """The uncompiled document graph; any node can be swapped for another.

    ``model`` is the chat model of the default planner, subjects and verifier
    (default: the OpenAI-compatible model named by the run context). ``tools`` is the
    registry the default planner advertises and the default dispatch runs. The review node
    stops the run at its plan only when the run's context asks for ``review``.
    """
    tools = tools if tools is not None else default_tools()
    builder = StateGraph(
        DocumentState,
        context_schema=Context,
        input_schema=DocumentInput,
        output_schema=DocumentOutput,
    )
    builder.add_node("intake", intake or take_inputs)
    builder.add_node("planner", planner or Planner(model=model, tools=tools))
    builder.add_node("subjects", subjects or Subjects(model=model, tools=tools))
    builder.add_node("review", review or Review(tools=tools))
    builder.add_node("dispatch", dispatch or Dispatch(tools=tools))
    builder.add_node("verifier", verifier or Verifier(model=model, tools=tools))
    builder.add_node("assembler", assembler or assemble)
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "planner")
    builder.add_edge("planner", "subjects")
    builder.add_edge("subjects", "review")
    builder.add_edge("review", "dispatch")
    builder.add_edge("dispatch", "verifier")
    builder.add_conditional_edges("verifier", after_verifier, ["dispatch", "assembler"])
    builder.add_edge("assembler", END)
    return builder


def after_verifier(state: DocumentState) -> Literal["dispatch", "assembler"]:
    """Repairs go back to dispatch; otherwise the document is assembled."""
    return "dispatch" if pending_requests(state) else "assembler"


# The graph langgraph.json names: no checkpointer, the LangGraph server brings its own.
graph = build_graph().compile(name="llmi")
