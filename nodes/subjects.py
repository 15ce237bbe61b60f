"""Subjects node: links the images that show the same subject, so that they look alike.

The planner's model writes each image tag on its own, and models that were never taught
``refs`` (LLM-I's among them) write none: the fox of the third illustration is then
painted anew, unlike the fox of the first. After planning, this node asks the model once
which images show the same subject, and makes the first image of each subject a
reference (``refs``) of its later ones, which dispatch then makes from it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from llmi import stopping
from llmi.context import OFF, TAGS, Context, consistency_of, context_of
from llmi.events import emitter
from llmi.judge.scoring import describe_error, excerpt, json_objects
from llmi.models import PLANNER, chat_model, temperature_for
from llmi.prompts import SUBJECTS_SYSTEM, SUBJECTS_USER
from llmi.reasoning import NoAnswer, answer_of
from llmi.state import DocumentState, Finding, ImageRequest, Segment, Subject
from llmi.tools.registry import ToolRegistry, default_tools


_REQUEST_CHARS = 600
_AROUND_CHARS = 200
_PROMPT_CHARS = 300


class UnreadableSubjects(ValueError):
    """The linking answer is not the JSON it was asked for."""


class Subjects:
    """Links the slots that show the same subject, as the context's ``consistency`` says.

    - ``auto``: one call of ``model`` (default: the planner's model of the run context),
      at temperature 0 where its family takes one, in JSON mode, with the plan's images;
      the first image of each subject it names becomes a reference of each later one
      whose tool takes references (``tools``' ``reference_sources``), and every request
      of a subject carries its name. The refs a tag wrote stay. There is no call unless a
      request could gain a reference. A failing call, or an answer that is not the JSON
      asked for, costs no image: they are made without links, and a finding (slot -1,
      the document's) and a ``notice`` event say why.
    - ``tags``: no call; only the refs the tags wrote.
    - ``off``: no call; every request loses its refs, so each image is made on its own.
    """

    def __init__(self, model: BaseChatModel | None = None, tools: ToolRegistry | None = None):
        self.model = model
        self.tools = tools if tools is not None else default_tools()

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        ctx = context_of(runtime)
        mode = consistency_of(ctx)
        requests = state.get("requests", [])
        if mode == OFF:
            referring = [r for r in requests if "refs" in r or "refs" in r["params"]]
            return {"requests": [_with_refs(r, []) for r in referring], "subjects": []}
        sources = self.tools.reference_sources()
        if mode == TAGS or not _linkable(requests, len(state.get("inputs", [])), sources):
            return {"subjects": []}
        stopping.raise_if_requested()
        try:
            subjects = self._ask(state, ctx)
        except Exception as exc:  # noqa: BLE001 - unlinked images are still a document
            finding = _not_linked(exc)
            emitter(runtime, candidate=state.get("candidate"))("notice", text=finding["problem"])
            return {"subjects": [], "findings": [finding]}
        return {"requests": linked(requests, subjects, sources), "subjects": subjects}

    def _ask(self, state: DocumentState, ctx: Context) -> list[Subject]:
        """The subjects the model names in the state's plan."""
        requests = state.get("requests", [])
        n_inputs = len(state.get("inputs", []))
        user = SUBJECTS_USER.format(
            request=excerpt(state.get("prompt", ""), _REQUEST_CHARS),
            images="\n\n".join(_image_lines(requests, n_inputs, state.get("segments", []))),
        )
        model = self.model or chat_model(ctx)
        reply = model.invoke([SystemMessage(SUBJECTS_SYSTEM), HumanMessage(user)],
                             **_json_mode(ctx))
        answer = answer_of(reply, who=PLANNER.name, limit=PLANNER.limit_setting)
        images = set(range(n_inputs)) | {r["slot"] for r in requests}
        return read_subjects(answer, images)


def _not_linked(error: Exception) -> Finding:
    why = str(error) if isinstance(error, NoAnswer | UnreadableSubjects) else describe_error(error)
    return Finding(slot=-1, problem=f"subjects not linked: {why}")


def _json_mode(ctx: Context) -> dict[str, Any]:
    """JSON mode, at temperature 0 unless the planner's setting sends none or its model's
    family takes only its default temperature (``llmi.models.FAMILIES``)."""
    options: dict[str, Any] = {"response_format": {"type": "json_object"}}
    if ctx.temperature >= 0 and (temperature := temperature_for(ctx, PLANNER, 0.0)) is not None:
        options["temperature"] = temperature
    return options


def _linkable(requests: Sequence[ImageRequest], n_inputs: int, sources: Collection[str]) -> bool:
    """Whether some request could gain a reference: its tool takes references, and an
    image comes before it other than the one it edits."""
    slots = {r["slot"] for r in requests}
    return any(
        r["source"] in sources
        and any(i != r["depends_on"] for i in [*range(n_inputs), *slots] if i < r["slot"])
        for r in requests
    )


def _image_lines(requests: Sequence[ImageRequest], n_inputs: int,
                 segments: Sequence[Segment]) -> list[str]:
    """Each image of the plan as the linking call sees it, in order."""
    lines = [f"Image {index}: an input image, given by the user." for index in range(n_inputs)]
    for request in requests:
        before, after = _around(segments, request["slot"])
        edited = request["depends_on"]
        lines.append("\n".join(part for part in (
            f"Image {request['slot']}, by {request['source']}: "
            f"{request['description'] or '(no description)'}",
            _said(request["params"].get("prompt") or request["params"].get("query")),
            f"It changes image {edited}." if edited is not None else "",
            f"Text before it: {before}" if before else "",
            f"Text after it: {after}" if after else "",
        ) if part))
    return lines


def _said(prompt: Any) -> str:
    return f"Prompt: {excerpt(prompt, _PROMPT_CHARS)}" if isinstance(prompt, str) and prompt else ""


def _around(segments: Sequence[Segment], slot: int) -> tuple[str, str]:
    """The end of the text just before a slot and the start of the text just after it."""
    at = next((i for i, s in enumerate(segments) if s["kind"] == "slot" and s["slot"] == slot),
              None)
    if at is None:
        return "", ""
    before = next((s["text"] for s in reversed(segments[:at]) if s["kind"] == "text"), "")
    after = next((s["text"] for s in segments[at + 1:] if s["kind"] == "text"), "")
    before = " ".join(before.split())
    return (("..." + before[-_AROUND_CHARS:]) if len(before) > _AROUND_CHARS else before,
            excerpt(after, _AROUND_CHARS))


def read_subjects(answer: str, images: Collection[int]) -> list[Subject]:
    """The subjects of a linking answer, ``{"subjects": [{"name", "description", "slots"}]}``.

    Only slots of ``images`` count, each in the first subject that names it; a subject
    left with fewer than two is dropped. UnreadableSubjects when the answer holds no JSON
    object of that shape.
    """
    document = next((obj for obj in json_objects(answer) if "subjects" in obj), None)
    if document is None:
        raise UnreadableSubjects(f"the answer holds no JSON object with 'subjects': "
                                 f"{excerpt(answer)!r}")
    entries = document["subjects"]
    if not isinstance(entries, list):
        raise UnreadableSubjects(f"'subjects' is not a list: {excerpt(repr(entries))!r}")
    subjects: list[Subject] = []
    taken: set[int] = set()
    for number, entry in enumerate(entries, 1):
        name, description, slots = _fields(entry)
        slots = sorted({slot for slot in slots if slot in images and slot not in taken})
        if len(slots) < 2:
            continue
        taken.update(slots)
        name = _unique(name or f"subject {number}", {s["name"] for s in subjects})
        subjects.append(Subject(name=name, description=description, slots=slots))
    return subjects


def _fields(entry: Any) -> tuple[str, str, list[int]]:
    """A subject entry's name, description and slots; UnreadableSubjects when it has not
    that shape."""
    if not isinstance(entry, Mapping):
        raise UnreadableSubjects(f"a subject is not an object: {excerpt(repr(entry))!r}")
    name, description = entry.get("name", ""), entry.get("description", "")
    slots = entry.get("slots")
    if (not isinstance(name, str) or not isinstance(description, str)
            or not isinstance(slots, list)
            or not all(isinstance(slot, int) and not isinstance(slot, bool) for slot in slots)):
        raise UnreadableSubjects(f"a subject is not a name, a description and a list of image "
                                 f"numbers: {excerpt(repr(dict(entry)))!r}")
    return name.strip(), description.strip(), slots


def _unique(name: str, taken: Collection[str]) -> str:
    number, unique = 2, name
    while unique in taken:
        unique, number = f"{name} ({number})", number + 1
    return unique


def linked(requests: Iterable[ImageRequest], subjects: Iterable[Subject],
           sources: Collection[str]) -> list[ImageRequest]:
    """The requests of ``subjects``, each with its subject's name, and each later one whose
    source takes references with its subject's first image among its refs (after those
    its tag wrote; never the image an edit changes, which is its source already)."""
    by_slot = {request["slot"]: request for request in requests}
    changed: list[ImageRequest] = []
    for subject in subjects:
        first = subject["slots"][0]
        for slot in subject["slots"]:
            if slot not in by_slot:
                continue  # an input image
            request = by_slot[slot]
            refs = list(request.get("refs", []))
            if (slot != first and request["source"] in sources
                    and first != request["depends_on"] and first not in refs):
                refs.append(first)
            changed.append(_with_refs({**request, "subject": subject["name"]}, refs))
    return changed


def _with_refs(request: ImageRequest, refs: list[int]) -> ImageRequest:
    """``request`` with ``refs`` as its references, in its params too as the parser keeps
    them; none when ``refs`` is empty."""
    params = {key: value for key, value in request["params"].items() if key != "refs"}
    updated: dict[str, Any] = {key: value for key, value in request.items() if key != "refs"}
    if refs:
        params["refs"] = updated["refs"] = refs
    updated["params"] = params
    return ImageRequest(**updated)
