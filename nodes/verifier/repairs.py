"""Repairs of failed slots: each kind of failure has its own short chain of fixes.

- code: the model fixes the code from the error, in every round.
- search: the model reformulates the query once; then a diffusion image of the description.
- diffusion and edit: one retry with a new seed. An edit whose source failed becomes a
  diffusion image of its description instead.
- an image that shows a different subject from its references (the vision judge's
  consistency verdict): the slot again with the same references and a new seed, in every
  round.
- a tag the parser could not read: the model re-emits that tag, once, for the same slot.

Every repair runs its slot again as the next attempt, and nothing is repaired once the
attempt reaches ``repair_rounds``. The images made from a repaired slot (its edits, and
those that keep its subject) run again with it. Sources that are not configured or not
registered are never retried: asking again cannot help.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from llmi.context import Context
from llmi.models import PLANNER
from llmi.nodes.verifier.consistency import mismatch
from llmi.tags import PARSER, parse_draft, tag_bodies
from llmi.prompts import (
    QUERY_SYSTEM,
    QUERY_USER,
    REPAIR_SYSTEM,
    REPAIR_USER,
    RETAG_USER,
    retag_system,
)
from llmi.reasoning import NoAnswer, answer_of
from llmi.state import Finding, ImageRequest, ImageResult, Repair
from llmi.tools.base import BackendTool, ImageTool
from llmi.tools.registry import ToolRegistry

Kind = Literal["code", "query", "diffusion", "seed", "retag", "consistency"]

_FENCED = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)
_QUERY_LABEL = re.compile(r"^(?:search\s+)?query\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Failure:
    """A failed slot the verifier has just seen, or a made image that shows a different
    subject from its references."""

    result: ImageResult
    request: ImageRequest | None
    """None for a tag the parser could not read."""

    @property
    def slot(self) -> int:
        return self.result["slot"]

    @property
    def error(self) -> str:
        return mismatch(self.result) or self.result["error"] or "no image"

    @property
    def next_attempt(self) -> int:
        return self.result["attempt"] + 1


@dataclass(frozen=True)
class Fix:
    """A repair: the request that runs the slot again, or a result that ends it."""

    tried: str
    request: ImageRequest | None = None
    result: ImageResult | None = None


@dataclass(frozen=True)
class Situation:
    """What the repairs of one verifier round may look at."""

    ctx: Context
    tools: ToolRegistry
    requests: Mapping[int, ImageRequest]
    results: Mapping[int, ImageResult]
    """The latest result of every slot, this round's checks included."""
    history: Mapping[int, set[str]]
    """Kinds of repair each slot has had."""
    draft: str = ""
    n_inputs: int = 0


@dataclass
class Repairs:
    """What one verifier round repairs, and what it could not."""

    requests: list[ImageRequest] = field(default_factory=list)
    results: list[ImageResult] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def slots(self) -> set[int]:
        return {request["slot"] for request in self.requests}

    def add(self, failure: Failure, kind: Kind, fix: Fix) -> None:
        if fix.request is not None:
            self.requests.append(fix.request)
        if fix.result is not None:
            self.results.append(fix.result)
        self.repairs.append(
            Repair(
                slot=failure.slot,
                attempt=failure.next_attempt,
                kind=kind,
                failed=f"{failure.result['source']}: {failure.error}",
                tried=fix.tried,
            )
        )
        self.findings.append(Finding(slot=failure.slot, problem=failure.error, repaired=True))

    def could_not(self, failure: Failure, why: str) -> None:
        problem = f"repair failed ({why}): {failure.error}"
        self.findings.append(Finding(slot=failure.slot, problem=problem))


def repair(
    failures: Iterable[Failure],
    situation: Situation,
    model: Callable[[], BaseChatModel],
) -> Repairs:
    """Repairs for this round's failures, and reruns of the edits of repaired slots.

    ``model`` is called only when a repair needs the chat model.
    """
    out = Repairs()
    waiting, ready = [], []
    for failure in failures:
        (waiting if _source_failed(failure, situation.results) else ready).append(failure)
    planned = [(f, kind) for f in ready if (kind := _kind(f, situation))]
    _model_repairs([(f, k) for f, k in planned if k in _MODEL_FIXES], situation, model, out)
    for failure, kind in planned:
        if kind not in _MODEL_FIXES:
            out.add(failure, kind, _PLAIN_FIXES[kind](failure, situation))
    for failure in sorted(waiting, key=lambda f: f.slot):
        # An edit whose source is being repaired runs again with it (a dependent rerun).
        if failure.request["depends_on"] not in out.slots and (kind := _kind(failure, situation)):
            out.add(failure, kind, _PLAIN_FIXES[kind](failure, situation))
    out.requests += rerun_dependents(out.requests, situation.requests.values())
    return out


def _kind(failure: Failure, situation: Situation) -> Kind | None:
    """The repair a failure gets next, or None when it gets none."""
    ctx, request = situation.ctx, failure.request
    done = situation.history.get(failure.slot, set())
    if failure.result["attempt"] >= ctx.repair_rounds:
        return None
    if failure.result["tool"] == PARSER:
        return "retag" if "retag" not in done and _retaggable(failure, situation) else None
    if request is None or request["attempt"] != failure.result["attempt"]:
        return None
    if mismatch(failure.result):
        return "consistency" if _configured(situation.tools.get(request["source"]), ctx) else None
    if _source_failed(failure, situation.results):
        return "diffusion" if _diffusion_ready(situation) else None
    if not _configured(situation.tools.get(request["source"]), ctx):
        return None
    if request["source"] == "code":
        return "code"
    if request["source"] == "search":
        if "query" not in done:
            return "query"
        return "diffusion" if _diffusion_ready(situation) else None
    if request["source"] in ("diffusion", "edit") and "seed" not in done:
        return "seed"
    return None


def _retaggable(failure: Failure, situation: Situation) -> bool:
    """Tags past the image limit stay failed: re-emitting them cannot help."""
    return failure.slot - situation.n_inputs < situation.ctx.max_images


def _source_failed(failure: Failure, results: Mapping[int, ImageResult]) -> bool:
    source = failure.request["depends_on"] if failure.request else None
    return source is not None and source in results and not results[source]["ok"]


def _configured(tool: ImageTool | None, ctx: Context) -> bool:
    """Whether a source can make images at all; a tool without backends is taken at its word."""
    if tool is None:
        return False
    if isinstance(tool, BackendTool):
        return tool.choice(ctx).partition(":")[0] in tool.backends
    return True


def _diffusion_ready(situation: Situation) -> bool:
    return bool(situation.ctx.diffusion_backend) and _configured(
        situation.tools.get("diffusion"), situation.ctx
    )


# --- repairs without the model ------------------------------------------------------------


def _diffusion(failure: Failure, situation: Situation) -> Fix:
    request = failure.request
    params = request["params"]
    prompt = request["description"] or str(params.get("prompt") or params.get("query") or "")
    retry = ImageRequest(
        slot=failure.slot,
        source="diffusion",
        description=request["description"],
        params={"prompt": prompt},
        depends_on=None,
        attempt=failure.next_attempt,
    )
    return Fix(f"a diffusion image instead of {request['source']}: {prompt!r}", request=retry)


def _new_seed(failure: Failure, situation: Situation) -> Fix:
    """The slot again with a new seed; an image of a different subject keeps its references."""
    seed = retry_seed(situation.ctx, failure.slot, failure.next_attempt)
    tried = f"{failure.request['source']} again with a new seed ({seed})"
    if mismatch(failure.result):
        refs = ", ".join(map(str, failure.request.get("refs", [])))
        tried += f", from the same references (images {refs})"
    return Fix(tried, request=_again(failure, seed=seed))


def retry_seed(ctx: Context, slot: int, attempt: int) -> int:
    """A seed for a retry: reproducible in a seeded run, drawn otherwise."""
    if ctx.seed is not None and ctx.seed >= 0:
        return random.Random(f"{ctx.seed}/{slot}/{attempt}").randrange(2**31)
    return secrets.randbelow(2**31)


_PLAIN_FIXES: dict[str, Callable[[Failure, Situation], Fix]] = {
    "diffusion": _diffusion,
    "seed": _new_seed,
    "consistency": _new_seed,
}


# --- repairs the model makes ------------------------------------------------------------


def _model_repairs(
    planned: Sequence[tuple[Failure, Kind]],
    situation: Situation,
    model: Callable[[], BaseChatModel],
    out: Repairs,
) -> None:
    if not planned:
        return
    conversations = [_conversation(failure, kind, situation) for failure, kind in planned]
    try:
        replies = model().batch(conversations, return_exceptions=True)
    except Exception as exc:  # noqa: BLE001 - a failed repair must not cost the document
        replies = [exc] * len(planned)
    for (failure, kind), reply in zip(planned, replies):
        fix = _model_fix(failure, kind, reply, situation)
        if isinstance(fix, Fix):
            out.add(failure, kind, fix)
            continue
        out.could_not(failure, fix)
        if kind == "query" and _diffusion_ready(situation):
            out.add(failure, "diffusion", _diffusion(failure, situation))


def _model_fix(
    failure: Failure, kind: Kind, reply: BaseMessage | BaseException, situation: Situation
) -> Fix | str:
    """The fix in the model's answer, or why there is none."""
    if isinstance(reply, BaseException):
        return _why(reply)
    try:
        answer = answer_of(reply, who=PLANNER.name, limit=PLANNER.limit_setting)
    except NoAnswer as exc:
        return str(exc)
    return _MODEL_FIXES[kind](failure, answer, situation)


def _conversation(failure: Failure, kind: Kind, situation: Situation) -> list[BaseMessage]:
    if kind == "retag":
        guidance = {source: tool.guidance for source, tool in situation.tools.items()}
        tag = _tag_text(situation.draft, failure.slot - situation.n_inputs)
        user = RETAG_USER.format(
            draft=situation.draft, slot=failure.slot, tag=tag, error=failure.error
        )
        return [SystemMessage(retag_system(guidance)), HumanMessage(user)]
    request = failure.request
    if kind == "code":
        user = REPAIR_USER.format(
            description=request["description"], code=request["params"]["code"], error=failure.error
        )
        return [SystemMessage(REPAIR_SYSTEM), HumanMessage(user)]
    user = QUERY_USER.format(
        description=request["description"], query=request["params"]["query"], error=failure.error
    )
    return [SystemMessage(QUERY_SYSTEM), HumanMessage(user)]


def _fixed_code(failure: Failure, reply: str, situation: Situation) -> Fix | str:
    match = _FENCED.search(reply)
    code = (match.group(1) if match else reply).strip()
    if not code:
        return "no code in the reply"
    return Fix("code fixed by the model from the error", request=_again(failure, code=code))


def _new_query(failure: Failure, reply: str, situation: Situation) -> Fix | str:
    lines = (_QUERY_LABEL.sub("", line.strip()).strip("`'\" ") for line in reply.splitlines())
    query = next((line for line in lines if line), "")
    if not query or query.casefold() == str(failure.request["params"]["query"]).strip().casefold():
        return "no new query in the reply"
    return Fix(f"a reformulated search query: {query!r}", request=_again(failure, query=query))


def _retag(failure: Failure, reply: str, situation: Situation) -> Fix | str:
    # Counting the slot's index as inputs makes the re-emitted tag take the slot's place.
    plan = parse_draft(reply, situation.tools.required_params(), n_inputs=failure.slot,
                       reference_sources=situation.tools.reference_sources())
    requests = [r for r in plan.requests if r["slot"] == failure.slot]
    failures = [r for r in plan.failures if r["slot"] == failure.slot]
    if requests:
        request = {**requests[0], "attempt": failure.next_attempt}
        return Fix(f"the tag re-emitted by the model, as a {request['source']} request",
                   request=request)
    if failures:
        error = f"{failure.error}; the re-emitted tag: {failures[0]['error']}"
        result = {**failures[0], "error": error, "attempt": failure.next_attempt}
        return Fix("the tag re-emitted by the model, which did not parse either", result=result)
    return "no tag in the reply"


_MODEL_FIXES: dict[str, Callable[[Failure, str, Situation], Fix | str]] = {
    "code": _fixed_code,
    "query": _new_query,
    "retag": _retag,
}


def _tag_text(draft: str, ordinal: int) -> str:
    """The raw text of the draft's tag number ``ordinal``, as the parser split it."""
    bodies = tag_bodies(draft)
    if not 0 <= ordinal < len(bodies):
        return "(the tag's text is not available)"
    return f"<imgen>{bodies[ordinal]}</imgen>"


def _again(failure: Failure, **params: Any) -> ImageRequest:
    """The failed request as its next attempt, with some params changed."""
    request = failure.request
    return {**request, "params": {**request["params"], **params}, "attempt": failure.next_attempt}


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def rerun_dependents(
    repaired: list[ImageRequest], requests: Iterable[ImageRequest]
) -> list[ImageRequest]:
    """The images made from repaired slots (their edits, and those that keep their subject),
    and those made from these in turn, run again with the new images."""
    stale = {r["slot"] for r in repaired}
    again: list[ImageRequest] = []
    for request in sorted(requests, key=lambda r: r["slot"]):
        made_from = {request["depends_on"], *request.get("refs", [])}
        if made_from & stale and request["slot"] not in stale:
            stale.add(request["slot"])
            again.append({**request, "attempt": request["attempt"] + 1})
    return again
