"""The assembler node: writes the finished document into the output folder.

The folder holds ``assets/`` (one image file per successful slot),
``document.md``, a self-contained ``document.html`` and ``manifest.json``. Each file is
written under a temporary name and renamed into place, so a run that fails while writing
(a full disk) leaves no file cut short and no temporary file.
A slot whose image cannot be had becomes a visible failure note; it never
costs the rest of the document. A slot whose tool has no backend configured (and an edit
of such a slot's image) is left out of the reader's document instead: the run said how to
configure the tool, and the manifest keeps the slot with its error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import wait
from dataclasses import replace
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from llmi.artifacts import OUTPUT_MODE, ArtifactStore, atomic_file, extension, write_atomic
from llmi.context import Context, context_of
from llmi.events import emitter
from llmi.machine_paths import without_machine_paths
from llmi.nodes.dispatch.schedule import SOURCE_FAILED
from llmi.render import Figure, html_document_parts, markdown_document
from llmi.revision import revisions_record
from llmi.state import (
    DocumentState,
    Finding,
    ImageRequest,
    ImageResult,
    Repair,
    Segment,
    Subject,
)
from llmi.tools.base import NOT_CONFIGURED, REFERENCES_IGNORED
from llmi.workers import WORKERS

OK_TOKEN = "<image>"
FAILED_TOKEN = "<fail_to_generate_image>"


def assemble(state: DocumentState, runtime: Runtime[Context]) -> dict:
    ctx = context_of(runtime)
    out = Path(ctx.out_dir).expanduser().resolve()
    segments = state.get("segments") or []
    results = _by_slot(state.get("results") or [])
    figures = collect_figures(
        segments, results, _by_slot(state.get("requests") or []), ArtifactStore(ctx.artifact_dir)
    )
    prompt = state.get("prompt") or ""

    paths = {
        "markdown": out / "document.md",
        "html": out / "document.html",
        "manifest": out / "manifest.json",
    }
    out.mkdir(parents=True, exist_ok=True)
    # The image files are written beside the rest: writing lets go of the GIL.
    assets = WORKERS.submit(write_assets, out, figures.values())
    try:
        _write(paths["markdown"], markdown_document(segments, figures))
        _write_parts(paths["html"], html_document_parts(prompt, segments, figures))
        record = manifest(prompt, segments, figures, results, state.get("repairs") or [],
                          state.get("subjects") or [], state.get("findings") or [])
        record |= inputs_record(state) | revisions_record(state)
        if "candidates" in state:
            record |= candidates_record(state)
        _write(paths["manifest"], _json(record))
    finally:
        wait([assets])
    assets.result()
    outputs = {"dir": str(out), **{name: str(path) for name, path in paths.items()}}
    emitter(runtime)("document", outputs=outputs)
    return {"outputs": outputs}


def collect_figures(
    segments: Sequence[Segment],
    results: Mapping[int, ImageResult],
    requests: Mapping[int, ImageRequest],
    store: ArtifactStore,
) -> dict[int, Figure]:
    """One figure per slot of the document, in document order."""
    slots = dict.fromkeys(s["slot"] for s in segments if s["kind"] == "slot")
    left_out = unconfigured_slots(results, requests)
    return {
        slot: replace(_figure(slot, results.get(slot), requests.get(slot), store),
                      left_out=slot in left_out)
        for slot in slots
    }


def unconfigured_slots(
    results: Mapping[int, ImageResult], requests: Mapping[int, ImageRequest]
) -> set[int]:
    """The failed slots whose tool has no backend configured, and the edits of their
    images, which failed for want of them."""
    found = set()
    # An edit points only at an input or an earlier slot, so one pass in order finds chains.
    for slot in sorted(results):
        result = results[slot]
        if result.get("ok"):
            continue
        source = (requests.get(slot) or {}).get("depends_on")
        failure = result.get("failure")
        if failure == NOT_CONFIGURED or (failure == SOURCE_FAILED and source in found):
            found.add(slot)
    return found


def _figure(
    slot: int,
    result: ImageResult | None,
    request: ImageRequest | None,
    store: ArtifactStore,
) -> Figure:
    if result is None:
        source = request["source"] if request else "unknown"
        description = request["description"] if request else ""
        return Figure(slot, source, description, error="no result")
    figure = Figure(slot, result.get("source") or "unknown", result.get("description") or "")
    ref = result.get("image")
    if not result.get("ok") or not ref:
        # The error travels with the document: no folder of this machine in it.
        return replace(figure, error=without_machine_paths(result.get("error") or "no image"))
    try:
        data = store.get(ref)
        # The store checked the bytes against the ref's sha256: its type and size are theirs.
        mime, width, height = ref["mime"], ref["width"], ref["height"]
    except FileNotFoundError:
        return replace(figure, error="image file missing from the artifact store")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return replace(figure, error=without_machine_paths(
            f"image unreadable from the artifact store: {exc}"))
    return replace(
        figure,
        asset=f"assets/image-{slot:02d}{extension(mime)}",
        data=data,
        mime=mime,
        width=width,
        height=height,
    )


def write_assets(out: Path, figures: Iterable[Figure]) -> None:
    """Write each image into ``out/assets`` and remove files an earlier run left there."""
    folder = out / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    written = set()
    for figure in figures:
        if figure.ok:
            path = out / figure.asset
            _write(path, figure.data)
            written.add(path.name)
    for path in folder.iterdir():
        if path.is_file() and path.name not in written:
            path.unlink()


def manifest(
    prompt: str,
    segments: Sequence[Segment],
    figures: Mapping[int, Figure],
    results: Mapping[int, ImageResult],
    repairs: Sequence[Repair] = (),
    subjects: Sequence[Subject] = (),
    findings: Sequence[Finding] = (),
) -> dict[str, Any]:
    """The document's record: every slot, what made it, its repairs; the processed text and
    each source's counts; the recurring subjects, when some were linked; ``notes``, the
    findings about the whole document (slot -1: subjects not linked, polish skipped)."""
    slots = [
        _manifest_slot(figure, results.get(slot), [r for r in repairs if r["slot"] == slot])
        for slot, figure in figures.items()
    ]
    stats: dict[str, dict[str, int]] = {}
    for entry in slots:
        counts = stats.setdefault(entry["source"], {"total": 0, "success": 0})
        counts["total"] += 1
        counts["success"] += entry["ok"]
    record = {
        "prompt": prompt,
        "slots": slots,
        "text": processed_text(segments, figures),
        "stats": stats,
    }
    notes = [finding["problem"] for finding in findings if finding["slot"] < 0]
    return (record | ({"subjects": list(subjects)} if subjects else {})
            | ({"notes": notes} if notes else {}))


def _manifest_slot(
    figure: Figure, result: ImageResult | None, repairs: Sequence[Repair]
) -> dict[str, Any]:
    image = None
    # The tool cache marks a result it answered: ``provenance["cached"]``; a backend one it
    # made without its references: ``provenance[REFERENCES_IGNORED]``.
    provenance = (result or {}).get("provenance") or {}
    if figure.ok and result and result["image"]:
        image = {
            "path": figure.asset,
            "sha256": result["image"]["sha256"],  # the store checked the bytes against it
            "width": figure.width,
            "height": figure.height,
        }
    consistency = (result or {}).get("consistency")
    entry = {
        "index": figure.slot,
        "source": figure.source,
        "description": figure.description,
        "ok": figure.ok,
        "error": figure.error,
        "image": image,
        "provenance": {k: v for k, v in provenance.items()
                       if k not in ("cached", REFERENCES_IGNORED)},
        "cached": figure.ok and bool(provenance.get("cached")),
        "seconds": float((result or {}).get("seconds") or 0.0),
        "attempts": result["attempt"] + 1 if result else 0,
        # An image that still shows another subject than its references is no repair's success.
        "repairs": _manifest_repairs(
            repairs, worked=figure.ok and (consistency or {}).get("verdict") != "different"
        ),
    }
    return entry | _references_record(result or {}, provenance)


def _references_record(result: Mapping[str, Any], provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A slot's references, subject and consistency verdict, and why its backend made it
    without its references; each only where it applies."""
    record = {key: result[key] for key in ("refs", "subject", "consistency") if result.get(key)}
    if provenance.get(REFERENCES_IGNORED):
        record[REFERENCES_IGNORED] = provenance[REFERENCES_IGNORED]
    return record


def _manifest_repairs(repairs: Sequence[Repair], *, worked: bool) -> list[dict[str, Any]]:
    """The slot's repairs in order; only the last one can have worked, if the slot did."""
    ordered = sorted(repairs, key=lambda r: r["attempt"])
    return [
        {
            "attempt": r["attempt"],
            "failed": without_machine_paths(r["failed"]),
            "tried": r["tried"],
            "worked": worked and i == len(ordered) - 1,
        }
        for i, r in enumerate(ordered)
    ]


def candidates_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """Test-time scaling's account: every candidate, its sampling and scores, the winner."""
    keys = ("id", "sampling", "pruned", "error", "screen", "scores")
    candidates = [{key: c.get(key) for key in keys} for c in state["candidates"]]
    for candidate in candidates:
        if candidate["error"]:
            candidate["error"] = without_machine_paths(candidate["error"])
    return {"candidates": candidates, "winner": state.get("winner")}


def inputs_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """The input images: file name (not its folder), the image as stored, and the size it
    was given at when it was scaled down to ``max_input_pixels``, else None."""
    refs = state.get("inputs") or []
    # Without sizes as given (an intake node of one's own), each was given as stored.
    given = state.get("input_sizes") or refs
    entries = []
    for index, (path, ref, size) in enumerate(zip(state.get("images") or [], refs, given)):
        scaled = (size["width"], size["height"]) != (ref["width"], ref["height"])
        entries.append({
            "index": index,
            "name": Path(path).name,
            "sha256": ref["sha256"],
            "width": ref["width"],
            "height": ref["height"],
            "scaled_from": {"width": size["width"], "height": size["height"]} if scaled else None,
        })
    return {"inputs": entries}


def processed_text(segments: Sequence[Segment], figures: Mapping[int, Figure]) -> str:
    """The LLM-I form of the document: each slot replaced by its outcome token."""
    return "\n\n".join(
        segment["text"]
        if segment["kind"] == "text"
        else OK_TOKEN if figures[segment["slot"]].ok else FAILED_TOKEN
        for segment in segments
    )


def _by_slot(records: Iterable[Any]) -> dict[int, Any]:
    return {record["slot"]: record for record in records}


def _json(data: dict[str, Any]) -> str:
    # default=str: odd provenance values must not cost the manifest.
    return json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"


def _write(path: Path, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    write_atomic(path, data, mode=OUTPUT_MODE)


def _write_parts(path: Path, parts: Iterable[str]) -> None:
    with atomic_file(path, mode=OUTPUT_MODE) as file:
        for part in parts:
            file.write(part.encode("utf-8"))
