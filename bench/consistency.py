"""Consistent subjects: what it costs to make a story's character from its first image.

A story of 6 diffusion images of one fox, written as LLM-I's models write (no ``refs``),
and 2 search photographs of the forest it lives in. The planner takes 0.2 s, each
diffusion image 1 s, each search 0.8 s. With ``LLMI_CONSISTENCY=auto`` one more model
call (0.3 s, answering the six fox slots as one subject) links the story after planning,
and images 2-6 of the fox are made from image 1, so they wait for it; with ``off`` every
image is made at once. ``tags`` has the same references written in the tags, so no
linking call. Each runs as ``llmi generate`` runs it (``bench.simulated.run_document``:
SQLite checkpointer, streamed, durability "sync"), median of 3 of each, alternating.

Floors: off, the planner plus the slowest image; tags, the planner plus the first fox
plus the next fox (the searches run beside them); auto, the same plus the linking call.
Target: with references, wall time at most 1.1x its floor, so that scheduling waits for
the references and for nothing else: the searches run beside the first fox, and foxes
2-6 run at once.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

from bench.report import Report, medians, ratio, seconds
from bench.simulated import (
    SMALL,
    SimulatedModel,
    SimulatedTool,
    cli_graph,
    context,
    registry,
    run_document,
    simulated_tools,
)
from llmi.graphs.document import build_graph

NAME = "consistency"
TARGET = 1.1
PLANNER_S, LINK_S, DIFFUSION_S, SEARCH_S = 0.2, 0.3, 1.0, 0.8
FOXES, SEARCHES = 6, 2


def story(refs: bool, scale: float) -> str:
    """The story's draft: a fox on every page, two photographs of its forest between."""
    parts = ["# Fen the fox"]
    for page in range(FOXES):
        params: dict[str, Any] = {"prompt": f"Fen, a small red fox with a white-tipped tail, "
                                            f"page {page + 1}",
                                  "latency": DIFFUSION_S * scale}
        if refs and page:
            params["refs"] = [0]
        parts += [f"Page {page + 1}: Fen goes on.", _tag("diffusion", f"Fen, page {page + 1}", params)]
        if page in (1, 3):
            photo = {"query": f"beech forest in autumn {page}", "latency": SEARCH_S * scale}
            parts.append(_tag("search", "The forest", photo))
    return "\n\n".join(parts)


def _tag(source: str, description: str, params: dict[str, Any]) -> str:
    return f"<imgen>{ {'source': source, 'description': description, 'params': params}!r}</imgen>"


def fox_slots() -> list[int]:
    """The image indices of the foxes: the searches follow pages 2 and 4."""
    slots, index = [], 0
    for page in range(FOXES):
        slots.append(index)
        index += 2 if page in (1, 3) else 1
    return slots


def model(draft: str, scale: float) -> SimulatedModel:
    """Answers the planner with the draft, and the linking call (asked in JSON mode) with
    the fox as one subject, each after its latency."""
    subjects = {"subjects": [{"name": "Fen", "description": "a small red fox with a "
                              "white-tipped tail", "slots": fox_slots()}]}

    def reply(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        linking = "response_format" in kwargs
        time.sleep((LINK_S if linking else PLANNER_S) * scale)
        return json.dumps(subjects) if linking else draft

    return SimulatedModel(answer=reply)


def run_once(mode: str, scale: float, folder: Path) -> float:
    tools = simulated_tools(SMALL) | {"diffusion": SimulatedTool("diffusion", SMALL["diffusion"],
                                                                 takes_references=True)}
    graph = build_graph(model=model(story(mode == "tags", scale), scale), tools=registry(tools))
    with cli_graph(graph, folder / "checkpoints.sqlite") as compiled:
        started = time.perf_counter()
        output = run_document(compiled, context(folder, consistency=mode))
        elapsed = time.perf_counter() - started
    _check(output, mode, tools["diffusion"])
    return elapsed


def _check(output: dict[str, Any], mode: str, diffusion: SimulatedTool) -> None:
    made = [r for r in output["results"] if r["ok"]]
    if len(made) != FOXES + SEARCHES:
        raise RuntimeError(f"the story made {len(made)} of {FOXES + SEARCHES} images")
    linked = [r for r in made if r.get("refs")]
    if len(linked) != (0 if mode == "off" else FOXES - 1):
        raise RuntimeError(f"{mode}: {len(linked)} images were made from references")
    spans = {slot: (start, end) for slot, start, end in diffusion.spans}
    first, *later = fox_slots()
    if mode != "off" and any(spans[slot][0] < spans[first][1] for slot in later):
        raise RuntimeError("a fox started before the first fox, its reference, was made")


def run(quick: bool) -> Report:
    scale, rounds = (0.3, 1) if quick else (1.0, 3)
    with tempfile.TemporaryDirectory() as tmp:
        figures = medians({mode: (lambda index, mode=mode: run_once(
            mode, scale, Path(tmp, mode, str(index)))) for mode in ("off", "tags", "auto")},
            rounds)
    planner, link = PLANNER_S * scale, LINK_S * scale
    floors = {"off": planner + max(DIFFUSION_S, SEARCH_S) * scale,
              "tags": planner + 2 * DIFFUSION_S * scale,
              "auto": planner + link + 2 * DIFFUSION_S * scale}
    report = Report(
        NAME, "Consistent subjects",
        f"A story of {FOXES} diffusion images of one fox (no refs in its tags, as LLM-I's "
        f"models write) and {SEARCHES} search photographs; planner {seconds(planner)}, "
        f"diffusion {seconds(DIFFUSION_S * scale)}, search {seconds(SEARCH_S * scale)}, "
        f"the linking call {seconds(link)}. Run as `llmi generate` runs it (SQLite "
        f"checkpointer, streamed, durability \"sync\"), median of {rounds} of each, "
        "alternating.",
        ("LLMI_CONSISTENCY", "wall", "floor", "wall / floor", "wall / off"),
    )
    for mode, label in (("off", "off: each image on its own"),
                        ("tags", "tags: refs written in the tags"),
                        ("auto", "auto: linked by one model call")):
        report.row(label, seconds(figures[mode]), seconds(floors[mode]),
                   ratio(figures[mode] / floors[mode]), ratio(figures[mode] / figures["off"]))
    report.notes.append(
        "Floors: off, the planner and the slowest image; tags, the planner, the first fox "
        "and one more fox after it (the searches and the other foxes run beside them); "
        "auto, the same and the linking call. In every run with references, no later fox "
        "started before the first was made.")
    worst = max(figures[mode] / floors[mode] for mode in ("tags", "auto"))
    report.target(f"with references, wall time at most {TARGET}x its floor (worst "
                  f"{ratio(worst)})", worst <= TARGET)
    return report
