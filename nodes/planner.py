"""Planner node: the chat model writes the draft, the parser turns it into slots."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from langgraph.runtime import Runtime

from llmi import stopping
from llmi.artifacts import ArtifactStore
from llmi.context import Context, context_of
from llmi.events import Emit, emitter
from llmi.models import PLANNER, chat_model
from llmi.tags import TagScanner, parse_draft
from llmi.prompts import planner_system
from llmi.reasoning import AnswerStream, Delta, answer_of, cut_off_note, split_reply
from llmi.state import DocumentState, Finding, ImageRef
from llmi.state.records import Sampling
from llmi.tools.early import EarlyStarts
from llmi.tools.registry import ToolRegistry, default_tools


class Planner:
    """Asks the chat model for the interleaved draft and parses its image tags.

    ``model`` defaults to the OpenAI-compatible model named in the run context. A state
    that carries a test-time-scaling candidate's ``sampling`` has the model sample with
    it. Only the answer of its reply is the draft: its reasoning, in any form, is dropped,
    and a reply with no answer raises ``llmi.reasoning.NoAnswer``.

    The reply is streamed: each piece of its answer is sent as a ``text`` event (see
    ``llmi.events``) as it arrives, and the draft is the answer of the whole reply, the
    chunks merged, as a reply read in one piece would give it. Each tag's tool starts as
    the tag closes, when dispatch can join the call (``llmi.tools.early``; the context's
    ``early_tools``); a test-time-scaling candidate starts none.
    """

    def __init__(self, model: BaseChatModel | None = None, tools: ToolRegistry | None = None):
        self.model = model
        self.tools = tools if tools is not None else default_tools()

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        ctx = context_of(runtime)
        model = _sampled(self.model or chat_model(ctx), state.get("sampling"))
        inputs = state.get("inputs", [])
        system = planner_system(
            {source: tool.guidance for source, tool in self.tools.items()},
            n_inputs=len(inputs),
            max_images=ctx.max_images,
            chosen=ctx.planner_prompt,
        )
        user = _user_message(state["prompt"], inputs, ArtifactStore(ctx.artifact_dir))
        emit = emitter(runtime, candidate=state.get("candidate"))
        early = self._early_starts(state, ctx)
        try:
            reply = _streamed(model, [SystemMessage(system), user], emit, early)
            draft = answer_of(reply, who=PLANNER.name, limit=PLANNER.limit_setting)
            plan = parse_draft(
                draft,
                self.tools.required_params(),
                n_inputs=len(inputs),
                max_images=ctx.max_images,
                reference_sources=self.tools.reference_sources(),
            )
        except BaseException:
            if early:
                early.starts.close([])
            raise
        if early:
            early.starts.close(plan.requests)
        return {
            "draft": draft,
            "segments": plan.segments,
            "requests": plan.requests,
            "results": plan.failures,
            "findings": _cut_off(reply),
            "round": 0,
        }

    def _early_starts(self, state: DocumentState, ctx: Context) -> EarlyTags | None:
        """What starts tools as their tags close; None for a test-time-scaling candidate,
        whose plan is screened before any of its tools runs, or when ``early_tools`` is off."""
        if not ctx.early_tools or state.get("candidate") is not None:
            return None
        inputs = state.get("inputs", [])
        scanner = TagScanner(self.tools.required_params(), n_inputs=len(inputs),
                             max_images=ctx.max_images,
                             reference_sources=self.tools.reference_sources())
        return EarlyTags(scanner, EarlyStarts(self.tools, ctx, inputs))


@dataclass(frozen=True)
class EarlyTags:
    """The streamed draft's tags, read as they close, and the tool calls they start."""

    scanner: TagScanner
    starts: EarlyStarts

    def feed(self, piece: Delta) -> None:
        if piece.restart:
            self.scanner.restart()
            self.starts.restart()
        for request in self.scanner.feed(piece.text):
            self.starts.start(request)


def _sampled(model: BaseChatModel, sampling: Sampling | None) -> Runnable:
    """``model`` bound to a candidate's temperature and seed; a None temperature is not sent."""
    if sampling is None:
        return model
    return model.bind(**{name: value for name, value in sampling.items() if value is not None})


def _streamed(model: Runnable, messages: list[BaseMessage], emit: Emit,
              early: EarlyTags | None) -> BaseMessage:
    """The model's whole reply, read as a stream whose answer is sent in ``text`` events
    and, when ``early`` is given, has its tags' tools started as the tags close. A stop
    (``llmi.stopping``) ends the reply at its next chunk."""
    answer = AnswerStream()
    reply: BaseMessage | None = None
    for chunk in model.stream(messages):
        stopping.raise_if_requested()
        reply = chunk if reply is None else reply + chunk
        _show(answer.feed(chunk.text), emit, early)
    _show(Delta(answer.end()), emit, early)
    return reply if reply is not None else AIMessage("")


def _show(piece: Delta, emit: Emit, early: EarlyTags | None) -> None:
    if piece.text or piece.restart:
        emit("text", text=piece.text, **({"restart": True} if piece.restart else {}))
        if early:
            early.feed(piece)


def _cut_off(reply: BaseMessage) -> list[Finding]:
    if not split_reply(reply).cut_off:
        return []
    return [Finding(slot=-1, problem=cut_off_note(PLANNER.name, PLANNER.limit_setting))]


def _user_message(prompt: str, inputs: list[ImageRef], store: ArtifactStore) -> HumanMessage:
    if not inputs:
        return HumanMessage(prompt)
    parts: list[str | dict] = [{"type": "text", "text": prompt}]
    for index, ref in enumerate(inputs):
        data = base64.b64encode(store.get(ref)).decode("ascii")
        parts.append({"type": "text", "text": f"Input image {index}:"})
        parts.append({"type": "image_url", "image_url": {"url": f"data:{ref['mime']};base64,{data}"}})
    return HumanMessage(parts)
