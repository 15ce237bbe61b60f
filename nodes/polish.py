"""Polish node: the model revises the text to match the images that were actually made."""

from __future__ import annotations

import re

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from llmi.context import Context, context_of
from llmi.models import PLANNER, chat_model
from llmi.prompts import POLISH_SYSTEM, POLISH_USER
from llmi.reasoning import cut_off_note, no_answer_reason, split_reply
from llmi.state import DocumentState, Finding, ImageResult, Segment

_MARKER = re.compile(r"\[\[IMAGE (\d+)\]\]")


class Polisher:
    """Rewrites the text around the images; every image stays where it is.

    A reply that drops, repeats or moves an image marker, has no answer after its
    reasoning or was cut off by its token limit is not used: the text stays as it was,
    and a finding says why.
    """

    def __init__(self, model: BaseChatModel | None = None) -> None:
        self.model = model

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        segments = state.get("segments", [])
        slots = [s["slot"] for s in segments if s["kind"] == "slot"]
        results = {r["slot"]: r for r in state.get("results", [])}
        prompt = POLISH_USER.format(
            request=state.get("prompt", ""),
            document=marked_text(segments),
            images="\n".join(_image_line(slot, results.get(slot)) for slot in slots),
        )
        try:
            model = self.model or chat_model(context_of(runtime))
            reply = split_reply(model.invoke([SystemMessage(POLISH_SYSTEM), HumanMessage(prompt)]))
        except Exception as exc:  # noqa: BLE001 - the unpolished document is still whole
            return {"findings": [_finding(f"the model failed ({type(exc).__name__}: {exc})")]}
        if reply.unfinished or not reply.answer:
            return {"findings": [_finding(no_answer_reason(reply, who=PLANNER.name,
                                                           limit=PLANNER.limit_setting))]}
        if reply.cut_off:
            return {"findings": [_finding(cut_off_note(PLANNER.name, PLANNER.limit_setting))]}
        revised = split_marked(reply.answer, slots)
        if revised is None:
            return {"findings": [_finding("the revision moved, dropped or invented an image")]}
        return {"segments": revised}


def marked_text(segments: list[Segment]) -> str:
    return "\n\n".join(
        s["text"] if s["kind"] == "text" else f"[[IMAGE {s['slot']}]]" for s in segments
    )


def split_marked(text: str, slots: list[int]) -> list[Segment] | None:
    """Segments of a revised text, or None unless its markers are exactly ``slots`` in order."""
    if "<imgen" in text or [int(m) for m in _MARKER.findall(text)] != slots:
        return None
    segments: list[Segment] = []
    for index, piece in enumerate(_MARKER.split(text)):
        if index % 2:
            segments.append({"kind": "slot", "slot": int(piece)})
        elif piece.strip():
            segments.append({"kind": "text", "text": piece.strip("\n")})
    return segments


def _image_line(slot: int, result: ImageResult | None) -> str:
    if result and result["ok"]:
        return f"[[IMAGE {slot}]]: shows {result['description']!r} (made by {result['source']})"
    reason = (result or {}).get("error") or "no result"
    return f"[[IMAGE {slot}]]: MISSING, could not be made ({reason.strip().splitlines()[-1]})"


def _finding(why: str) -> Finding:
    return Finding(slot=-1, problem=f"polish skipped: {why}")
