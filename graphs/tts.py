"""The test-time-scaling graph: sample N candidate documents, keep the best.

    intake -> draft x N -> screen (prune to K) -> produce x K -> rank -> polish -> assembler

Pruned candidates cost no tool calls: the judge screens plans before any tool runs. Each
survivor's production links its subjects, stops for a person to review its plan when the
run asks for review (``llmi.nodes.review``), then runs its tools and repairs: a review
sees only the plans that survived screening, each before any of its tools runs. With
more than one survivor, each stops on its own: ``Command(resume={interrupt id: answer})``
answers them.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph

from llmi.context import Context
from llmi.graphs.document import Node, after_verifier
from llmi.nodes.assembler import assemble
from llmi.nodes.candidates import (
    Drafter,
    Producer,
    Ranker,
    Screener,
    fan_out_drafts,
    fan_out_survivors,
)
from llmi.nodes.dispatch import Dispatch
from llmi.nodes.intake import take_inputs
from llmi.judge import Judge
from llmi.nodes.planner import Planner
from llmi.nodes.polish import Polisher
from llmi.nodes.review import Review
from llmi.nodes.subjects import Subjects
from llmi.nodes.verifier import Verifier
from llmi.state import DocumentInput, DocumentOutput, DocumentState
from llmi.state.candidates import CandidateDocument, ScalingState
from llmi.tools.registry import ToolRegistry, default_tools


def build_production_graph(
    *, tools: ToolRegistry, model: BaseChatModel | None = None, subjects: Node | None = None,
    review: Node | None = None, dispatch: Node | None = None, verifier: Node | None = None,
) -> StateGraph:
    """One candidate's tools and repairs: its subjects linked, its plan reviewed (when the
    run asks for review), then dispatch and the verifier, until nothing is pending.

    Its input is the shared inputs with the candidate's plan; its output, the candidate's
    document alone.
    """
    builder = StateGraph(DocumentState, context_schema=Context, output_schema=CandidateDocument)
    builder.add_node("subjects", subjects or Subjects(model=model, tools=tools))
    builder.add_node("review", review or Review(tools=tools))
    builder.add_node("dispatch", dispatch or Dispatch(tools=tools))
    builder.add_node("verifier", verifier or Verifier(model=model, tools=tools))
    builder.add_edge(START, "subjects")
    builder.add_edge("subjects", "review")
    builder.add_edge("review", "dispatch")
    builder.add_edge("dispatch", "verifier")
    builder.add_conditional_edges("verifier", after_verifier, {"dispatch": "dispatch", "assembler": END})
    return builder


def build_tts_graph(
    *,
    model: BaseChatModel | None = None,
    judge: Judge | None = None,
    tools: ToolRegistry | None = None,
    intake: Node | None = None,
    planner: Node | None = None,
    subjects: Node | None = None,
    review: Node | None = None,
    dispatch: Node | None = None,
    verifier: Node | None = None,
    polish: Node | None = None,
    assembler: Node | None = None,
) -> StateGraph:
    """The uncompiled test-time-scaling graph; ``candidates`` and ``keep`` come from the context.

    It takes the nodes ``build_graph`` takes. ``planner`` is any callable of (state,
    runtime), called once per candidate; its state carries the candidate's ``sampling``
    (temperature and seed), which the default planner samples with. ``judge`` defaults
    to one built from the context's judge models; ``model`` is the default planner's,
    subjects', verifier's and polisher's chat model.
    """
    tools = tools if tools is not None else default_tools()
    production = build_production_graph(
        tools=tools, model=model, subjects=subjects, review=review, dispatch=dispatch,
        verifier=verifier,
    ).compile(name="production")
    builder = StateGraph(
        ScalingState, context_schema=Context, input_schema=DocumentInput, output_schema=DocumentOutput
    )
    builder.add_node("intake", intake or take_inputs)
    builder.add_node("draft", Drafter(planner or Planner(model=model, tools=tools)))
    builder.add_node("screen", Screener(judge))
    builder.add_node("produce", Producer(production))
    builder.add_node("rank", Ranker(judge))
    builder.add_node("polish", polish or Polisher(model=model))
    # The assembler reads the candidates too, to put them in the manifest.
    builder.add_node("assembler", assembler or assemble, input_schema=ScalingState)
    builder.add_edge(START, "intake")
    builder.add_conditional_edges("intake", fan_out_drafts, ["draft"])
    builder.add_edge("draft", "screen")
    builder.add_conditional_edges("screen", fan_out_survivors, ["produce"])
    builder.add_edge("produce", "rank")
    builder.add_edge("rank", "polish")
    builder.add_edge("polish", "assembler")
    builder.add_edge("assembler", END)
    return builder


# The graph langgraph.json names: no checkpointer, the LangGraph server brings its own.
graph = build_tts_graph().compile(name="llmi-tts")
