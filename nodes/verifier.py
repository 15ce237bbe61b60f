"""Verifier node: checks every image and repairs failed chart code."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from PIL import Image, UnidentifiedImageError

from llmi.artifacts import ArtifactStore
from llmi.context import Context, context_of
from llmi.models import chat_model
from llmi.prompts import REPAIR_SYSTEM, REPAIR_USER
from llmi.state import DocumentState, Finding, ImageRequest, ImageResult

MIN_SIDE = 64
# Largest per-channel spread still counted as one flat colour (JPEG noise on a blank frame).
FLAT_SPREAD = 3
_FENCED = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)


def image_problem(data: bytes) -> str | None:
    """Why an image is unusable, or None when it passes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if min(img.size) < MIN_SIDE:
                return f"too small ({img.width}x{img.height}, needs {MIN_SIDE}x{MIN_SIDE})"
            extrema = img.convert("RGB").getextrema()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return f"does not decode ({exc})"
    if all(high - low <= FLAT_SPREAD for low, high in extrema):
        return "one flat colour"
    return None


class Verifier:
    """Fails images that do not pass ``image_problem``; asks the model to fix failed code.

    Each code slot gets at most ``repair_rounds`` repairs; a repaired slot's edits run again.
    """

    def __init__(self, model: BaseChatModel | None = None) -> None:
        self.model = model

    def __call__(self, state: DocumentState, runtime: Runtime[Context]) -> dict:
        ctx = context_of(runtime)
        checked, findings = self._check(state.get("results", []), ArtifactStore(ctx.artifact_dir))
        requests = {r["slot"]: r for r in state.get("requests", [])}
        results = {r["slot"]: r for r in state.get("results", [])} | {r["slot"]: r for r in checked}
        repairable = [
            requests[slot]
            for slot, result in sorted(results.items())
            if not result["ok"]
            and slot in requests
            and requests[slot]["source"] == "code"
            and requests[slot]["attempt"] == result["attempt"]
            and requests[slot]["attempt"] < ctx.repair_rounds
        ]
        repaired, tried = self._repair(repairable, results, ctx)
        return {
            "results": checked,
            "requests": repaired + _rerun_dependents(repaired, requests.values()),
            "findings": findings + tried,
            "round": state.get("round", 0) + 1,
        }

    def _check(
        self, results: Iterable[ImageResult], store: ArtifactStore
    ) -> tuple[list[ImageResult], list[Finding]]:
        failed: list[ImageResult] = []
        findings: list[Finding] = []
        for result in results:
            if not (result["ok"] and result["image"]):
                continue
            try:
                problem = image_problem(store.get(result["image"]))
            except (OSError, ValueError) as exc:
                problem = f"is missing from the artifact store ({exc})"
            if problem:
                error = f"verifier: the image {problem}"
                failed.append({**result, "ok": False, "image": None, "error": error})
                findings.append(Finding(slot=result["slot"], problem=error))
        return failed, findings

    def _repair(
        self, broken: list[ImageRequest], results: dict[int, ImageResult], ctx: Context
    ) -> tuple[list[ImageRequest], list[Finding]]:
        """Fixed requests for the broken code slots, and a finding for each one tried."""
        if not broken:
            return [], []
        conversations = [
            [
                SystemMessage(REPAIR_SYSTEM),
                HumanMessage(
                    REPAIR_USER.format(
                        description=request["description"],
                        code=request["params"]["code"],
                        error=results[request["slot"]]["error"],
                    )
                ),
            ]
            for request in broken
        ]
        try:
            replies = (self.model or chat_model(ctx)).batch(conversations, return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - a failed repair must not cost the document
            replies = [exc] * len(broken)
        fixed: list[ImageRequest] = []
        findings: list[Finding] = []
        for request, reply in zip(broken, replies):
            error = results[request["slot"]]["error"] or ""
            code = None if isinstance(reply, BaseException) else _code_of(reply.text)
            if code:
                params = {**request["params"], "code": code}
                fixed.append({**request, "params": params, "attempt": request["attempt"] + 1})
                findings.append(Finding(slot=request["slot"], problem=error, repaired=True))
            else:
                why = _failure(reply) if isinstance(reply, BaseException) else "no code in the reply"
                problem = f"repair failed ({why}): {error}"
                findings.append(Finding(slot=request["slot"], problem=problem))
        return fixed, findings


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _code_of(reply: str) -> str:
    match = _FENCED.search(reply)
    return (match.group(1) if match else reply).strip()


def _rerun_dependents(
    repaired: list[ImageRequest], requests: Iterable[ImageRequest]
) -> list[ImageRequest]:
    """Edits of repaired slots (and their edits in turn) run again with the new image."""
    stale = {r["slot"] for r in repaired}
    again: list[ImageRequest] = []
    for request in sorted(requests, key=lambda r: r["slot"]):
        if request["depends_on"] in stale and request["slot"] not in stale:
            stale.add(request["slot"])
            again.append({**request, "attempt": request["attempt"] + 1})
    return again
