"""Composing the document graph: in a larger graph, in a chain, as agent tools, node swapped.

Each test mirrors an example of docs/composition.md, with stand-in models and tools.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.runtime import Runtime
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from llmi.artifacts import ArtifactStore
from llmi.context import Context, context_of
from llmi.graphs.document import build_graph
from llmi.state import ImageRequest, failed_result
from llmi.tools.base import ToolCall
from llmi.tools.code import code as code_tool
from llmi.tools.langchain_tools import langchain_tools
from llmi.tools.registry import ToolRegistry, default_tools

from helpers import FakeTool, ScriptedModel, fake_tools, tag

REPORT = "# The report\n\nThe numbers went up.\n\n{tag}\n\nThat is the story."


def report_writer(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
    """A planner reply: one search tag whose query is the user's prompt."""
    return REPORT.format(tag=tag("search", "a photo for the report", query=messages[-1].text))


# -- The document graph as a step of a larger graph ---------------------------------------


class ReportState(TypedDict, total=False):
    topic: str
    report_path: str


def test_a_parent_graph_node_maps_its_state_in_and_out(context: Context) -> None:
    search = FakeTool("search", ("query",))
    document = build_graph(model=ScriptedModel(script=report_writer),
                           tools=fake_tools(search=search)).compile()

    def write_report(state: ReportState, runtime: Runtime[Context]) -> dict:
        prompt = f"A one-page report on {state['topic']}, with a chart of the key numbers."
        out = document.invoke({"prompt": prompt}, context=runtime.context)
        return {"report_path": out["outputs"]["markdown"]}

    builder = StateGraph(ReportState, context_schema=Context)
    builder.add_node("write_report", write_report)
    builder.add_edge(START, "write_report")
    builder.add_edge("write_report", END)
    out = builder.compile().invoke({"topic": "EV sales in 2024"}, context=context)

    assert set(out) == {"topic", "report_path"}
    report = Path(out["report_path"])
    assert report.parent == Path(context.out_dir).resolve()
    assert "The numbers went up." in report.read_text()
    assert [c.request["params"]["query"] for c in search.calls] == [
        "A one-page report on EV sales in 2024, with a chart of the key numbers."]


class BriefState(TypedDict, total=False):
    topic: str
    prompt: str
    outputs: dict[str, str]
    report_path: str


def brief_graph(document: Any) -> StateGraph:
    builder = StateGraph(BriefState, context_schema=Context)
    builder.add_node("brief", lambda state: {"prompt": f"A one-page report on {state['topic']}."})
    builder.add_node("document", document)
    builder.add_node("publish", lambda state: {"report_path": state["outputs"]["markdown"]})
    builder.add_edge(START, "brief")
    builder.add_edge("brief", "document")
    builder.add_edge("document", "publish")
    builder.add_edge("publish", END)
    return builder


def test_the_compiled_graph_is_a_subgraph_node_on_shared_keys(context: Context) -> None:
    search = FakeTool("search", ("query",))
    document = build_graph(model=ScriptedModel(script=report_writer),
                           tools=fake_tools(search=search)).compile()
    briefs = brief_graph(document).compile()

    out = briefs.invoke({"topic": "EV sales"}, context=context)

    # The parent keeps only its own keys; the subgraph inherited the run's context.
    assert set(out) == {"topic", "prompt", "outputs", "report_path"}
    assert Path(out["report_path"]).parent == Path(context.out_dir).resolve()
    assert search.calls[0].request["params"]["query"] == "A one-page report on EV sales."
    # It is a real subgraph: its nodes show in the drawing and report in the stream.
    assert "document:planner" in briefs.get_graph(xray=True).nodes
    namespaces = {ns[0].split(":")[0] for ns, _ in
                  briefs.stream({"topic": "EV sales"}, context=context, subgraphs=True) if ns}
    assert namespaces == {"document"}


# -- The graph as a Runnable in a chain ---------------------------------------------------


def test_the_graph_is_a_step_of_a_chain_with_its_context_bound(context: Context) -> None:
    document = build_graph(model=ScriptedModel(script=report_writer), tools=fake_tools()).compile()
    report = (
        RunnableLambda(lambda topic: {"prompt": f"A one-page report on {topic}, with one chart."})
        | document.bind(context=context)
        | RunnableLambda(lambda out: Path(out["outputs"]["markdown"]).read_text())
    )

    markdown = report.invoke("EV sales in 2024")

    assert markdown.startswith("# The report")
    assert (Path(context.out_dir) / "document.md").read_text() == markdown


def test_configurable_does_not_reach_the_nodes(
    context: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pitfall docs/composition.md warns of: LangGraph 1.x reads no context from config."""
    monkeypatch.chdir(tmp_path)
    document = build_graph(model=ScriptedModel(script=report_writer), tools=fake_tools()).compile()
    configured = document.with_config(configurable={"out_dir": context.out_dir})

    out = configured.invoke({"prompt": "EV sales"})

    # The environment's default folder, not the configured one.
    assert Path(out["outputs"]["markdown"]) == tmp_path / "llmi-out" / "document.md"
    assert not Path(context.out_dir).exists()


def test_a_chain_step_can_give_each_input_its_own_context(context: Context, tmp_path: Path) -> None:
    search = FakeTool("search", ("query",))
    document = build_graph(model=ScriptedModel(script=report_writer),
                           tools=fake_tools(search=search)).compile()

    def write(topic: str) -> dict:
        slug = topic.lower().replace(" ", "-")
        return document.invoke({"prompt": f"A one-page report on {topic}."},
                               context=Context(model="test-model", artifact_dir=context.artifact_dir,
                                               out_dir=str(tmp_path / "reports" / slug)))

    reports = RunnableLambda(write) | RunnableLambda(lambda out: out["outputs"]["markdown"])
    paths = reports.batch(["EV sales", "Heat pumps"])

    assert [Path(p).parent.name for p in paths] == ["ev-sales", "heat-pumps"]
    assert sorted(c.request["params"]["query"] for c in search.calls) == [
        "A one-page report on EV sales.", "A one-page report on Heat pumps."]


# -- The image tools for an agent ---------------------------------------------------------


class ToolCallingModel(BaseChatModel):
    """A scripted chat model with ``bind_tools``: ``script(messages, kwargs)`` gives the reply.

    ``bind_tools`` binds the tools' OpenAI schemas, as real chat models do, so the
    script sees them in ``kwargs["tools"]``; LangChain's default
    ``with_structured_output`` works on top of it.
    """

    script: Callable[[list[BaseMessage], dict[str, Any]], AIMessage]
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "tool-calling-scripted"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any):
        schemas = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=schemas, **({"tool_choice": tool_choice} if tool_choice else {}),
                         **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.calls.append({"messages": messages, **kwargs})
        return ChatResult(generations=[ChatGeneration(message=self.script(messages, kwargs))])


CHART = "plt.bar(['Jan', 'Feb', 'Mar'], [4.7, 5.8, 7.1], color='#e0a100')\nplt.title('Sunshine')"


def chart_then_tint(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """Draw a chart; then edit it, named by the sha256 of the first tool result; then answer."""
    done = [m for m in messages if isinstance(m, ToolMessage)]
    if not done:
        return AIMessage("", tool_calls=[
            {"name": "draw_chart", "args": {"code": CHART}, "id": "call-chart"}])
    if len(done) == 1:
        chart = json.loads(done[0].content)["sha256"]
        return AIMessage("", tool_calls=[{"name": "edit_image", "id": "call-edit",
                                          "args": {"image": chart, "prompt": "a warm tint"}}])
    return AIMessage(f"Here is your chart, tinted: {json.loads(done[1].content)['path']}")


def invert(call: ToolCall) -> bytes:
    """An edit stand-in that really changes its source image: it inverts it."""
    image = Image.open(io.BytesIO(call.source_image)).convert("RGB")
    buf = io.BytesIO()
    ImageOps.invert(image).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_an_agent_calls_the_tools_and_gets_the_images_back(context: Context) -> None:
    edit = FakeTool("edit", ("img_index", "prompt"), make=invert)
    tools = langchain_tools(context, fake_tools(code=code_tool, edit=edit))
    model = ToolCallingModel(script=chart_then_tint)
    llm = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict:
        return {"messages": [llm.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    messages = builder.compile().invoke(
        {"messages": [HumanMessage("Chart Lisbon's sunshine, then give it a warm tint.")]}
    )["messages"]

    assert {t["function"]["name"] for t in model.calls[0]["tools"]} == {
        "search_image", "generate_image", "draw_chart", "edit_image"}
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert [(m.name, m.status) for m in results] == [("draw_chart", "success"),
                                                     ("edit_image", "success")]
    chart, tinted = (m.artifact["image"] for m in results)
    store = ArtifactStore(context.artifact_dir)
    assert chart["sha256"] != tinted["sha256"]
    assert (tinted["width"], tinted["height"]) == (chart["width"], chart["height"])
    assert edit.calls[0].source_image == store.get(chart)
    assert results[0].artifact["provenance"]["code"] == CHART
    assert messages[-1].content.endswith(str(store.path(tinted)))


# -- A planner that uses structured output ------------------------------------------------


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str = Field(description="Markdown text")


class ImageBlock(BaseModel):
    type: Literal["image"] = "image"
    source: str = Field(description="the tool that makes the image")
    description: str = Field(description="what the image shows")
    params: dict[str, Any] = Field(description="the tool's parameters")


class Plan(BaseModel):
    """An interleaved document: text and image blocks in reading order."""

    blocks: list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]


SYSTEM = """\
Write the document the user asks for as blocks in reading order: text blocks of \
Markdown, and an image block wherever an image belongs. Image sources and their params:
{sources}
Images are numbered from 0: the {n_inputs} input images first, then the image blocks \
in order. An edit's img_index must point at an input image or an earlier image block. \
Use at most {max_images} images."""


class StructuredPlanner:
    """Plans with the model's structured output instead of image tags."""

    def __init__(self, model: BaseChatModel, tools: ToolRegistry | None = None) -> None:
        self.model = model.with_structured_output(Plan)
        self.tools = tools if tools is not None else default_tools()

    def __call__(self, state: dict, runtime: Runtime[Context]) -> dict:
        ctx = context_of(runtime)
        n_inputs = len(state.get("inputs", []))
        sources = "\n".join(f"- {name}: {tool.guidance}" for name, tool in self.tools.items())
        system = SYSTEM.format(sources=sources, n_inputs=n_inputs, max_images=ctx.max_images)
        plan = self.model.invoke([SystemMessage(system), HumanMessage(state["prompt"])])
        return plan_update(plan, self.tools.required_params(),
                           n_inputs=n_inputs, max_images=ctx.max_images)


def plan_update(plan: Plan, required: dict[str, tuple[str, ...]], *,
                n_inputs: int = 0, max_images: int | None = None) -> dict:
    """The planner's state update: slots numbered after the inputs; bad blocks fail their slot."""
    draft, segments, requests, failures = [], [], [], []
    slot = n_inputs
    for block in plan.blocks:
        if isinstance(block, TextBlock):
            if block.text.strip():
                segments.append({"kind": "text", "text": block.text})
                draft.append(block.text)
            continue
        tag = {"source": block.source, "description": block.description, "params": block.params}
        draft.append(f"<imgen>{tag!r}</imgen>")
        segments.append({"kind": "slot", "slot": slot})
        problem = block_problem(block, slot, required, over_limit=max_images is not None
                                and slot - n_inputs >= max_images)
        if problem:
            failures.append(failed_result(slot, block.source, block.description, problem,
                                          tool="structured-planner"))
        else:
            edits = "img_index" in required[block.source]
            requests.append(ImageRequest(
                slot=slot, source=block.source, description=block.description,
                params=block.params, attempt=0,
                depends_on=int(block.params["img_index"]) if edits else None,
            ))
        slot += 1
    return {"draft": "\n\n".join(draft), "segments": segments, "requests": requests,
            "results": failures, "round": 0}


def block_problem(block: ImageBlock, slot: int, required: dict[str, tuple[str, ...]], *,
                  over_limit: bool) -> str | None:
    if over_limit:
        return "too many images in one document"
    if block.source not in required:
        return f"unknown source {block.source!r} (known: {', '.join(required)})"
    missing = [key for key in required[block.source] if block.params.get(key) in (None, "")]
    if missing:
        return f"the {block.source} block's params lack {', '.join(missing)}"
    if "img_index" in required[block.source]:
        index = block.params["img_index"]
        if not isinstance(index, int) or not 0 <= index < slot:
            return f"img_index {index!r} does not point at an input or an earlier image"
    return None


FOX = Plan(blocks=[
    TextBlock(text="# The fox\n\nA fox lived at the edge of the wood."),
    ImageBlock(source="diffusion", description="the fox", params={"prompt": "a red fox, gouache"}),
    TextBlock(text="In winter it grew a thicker coat."),
    ImageBlock(source="edit", description="the fox in snow",
               params={"img_index": 1, "prompt": "snow on the ground"}),
    ImageBlock(source="code", description="litters per year", params={"code": "plt.plot([1, 2])"}),
])


def structured_reply(plan: Plan) -> Callable[[list[BaseMessage], dict[str, Any]], AIMessage]:
    """The model's structured output, as LangChain asks for it: a call of the schema's tool."""

    def reply(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        [schema] = kwargs["tools"]
        return AIMessage("", tool_calls=[{"name": schema["function"]["name"], "id": "call-plan",
                                          "args": plan.model_dump()}])

    return reply


def test_a_structured_output_planner_swaps_in_and_the_rest_runs_unchanged(
    context: Context, tmp_path: Path
) -> None:
    edit = FakeTool("edit", ("img_index", "prompt"), make=invert)
    tools = fake_tools(edit=edit)
    model = ToolCallingModel(script=structured_reply(FOX))
    photo = tmp_path / "photo.png"
    Image.new("RGB", (96, 80), (10, 120, 40)).save(photo)
    graph = build_graph(planner=StructuredPlanner(model, tools), tools=tools).compile()

    out = graph.invoke({"prompt": "A story about a fox", "images": [str(photo)]}, context=context)

    call = model.calls[0]
    assert call["messages"][0].text.startswith("Write the document the user asks for as blocks")
    assert "the 1 input images first" in call["messages"][0].text
    assert call["tool_choice"] == "any" and call["tools"][0]["function"]["name"] == "Plan"
    # The input photo is image 0, so the plan's images are slots 1, 2 and 3.
    assert [s.get("slot", s.get("text", "")[:6]) for s in out["segments"]] == [
        "# The ", 1, "In win", 2, 3]
    results = {r["slot"]: r for r in out["results"]}
    assert all(results[slot]["ok"] for slot in (1, 2, 3))
    store = ArtifactStore(context.artifact_dir)
    assert edit.calls[0].source_image == store.get(results[1]["image"])
    manifest = json.loads(Path(out["outputs"]["manifest"]).read_text())
    assert [s["source"] for s in manifest["slots"]] == ["diffusion", "edit", "code"]
    assert "<imgen>{'source': 'edit'" in out["draft"]


def test_structured_blocks_that_cannot_run_fail_their_slot_not_the_plan() -> None:
    plan = Plan(blocks=[
        ImageBlock(source="edit", description="itself", params={"img_index": 0, "prompt": "x"}),
        ImageBlock(source="map", description="a map", params={"place": "Kyoto"}),
        TextBlock(text="   "),
        ImageBlock(source="search", description="no query", params={}),
        ImageBlock(source="code", description="fine", params={"code": "plt.plot([1])"}),
        ImageBlock(source="code", description="one too many", params={"code": "plt.plot([2])"}),
    ])
    update = plan_update(plan, default_tools().required_params(), max_images=4)

    assert [r["slot"] for r in update["requests"]] == [3]
    errors = {r["slot"]: r["error"] for r in update["results"]}
    assert "does not point at an input or an earlier image" in errors[0]
    assert "unknown source 'map'" in errors[1]
    assert "lack query" in errors[2]
    assert "too many images" in errors[4]
    assert [s["kind"] for s in update["segments"]] == ["slot"] * 5
