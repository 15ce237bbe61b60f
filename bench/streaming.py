"""Streaming: tools that start as their tags close, against the floor the stream allows.

The planner's simulated chat model streams a draft of about 1,500 tokens (a token is
4 characters) at 40 tokens a second, with 6 image tags spread through it: a search, a
diffusion image, a chart, an edit of that diffusion image, and late in the draft a second
diffusion image and an edit of it. Each tool sleeps its tag's latency (1.5 to 3 s). The
document runs as ``llmi generate`` runs it (``bench.simulated.run_document``: SQLite
checkpointer, streamed, durability "sync") with early tool start on (each tag's tool
starts as its tag closes) and off (the context's ``early_tools``, ``LLMI_EARLY_TOOLS=0``:
tools start when the draft is parsed), the two alternating, median of 3 rounds of each,
every document in a fresh artifact folder so that no image comes from the cache.

The floors come from the stream's schedule (the model knows when it sends each character)
and the latencies. Early start on: the later of the stream's end and, for each tag, the
time its closing ``</imgen>`` is sent plus its chain, its own latency after the image it
edits is made. Early start off: the stream's end plus the critical path. Target: with
early start, wall time at most 1.05x its floor.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.report import Report, medians, ratio, seconds
from bench.scheduling import critical_path
from bench.simulated import (
    CHARS_PER_TOKEN,
    SMALL,
    SimulatedModel,
    Slot,
    cli_graph,
    context,
    image_tag,
    prepare,
    registry,
    run_document,
    simulated_tools,
)
from llmi.graphs.document import build_graph

NAME = "streaming"
TARGET = 1.05
TOKENS_PER_S = 40.0
SENTENCE = "The guide goes on in plain words, one sentence after another, as a model writes. "


@dataclass(frozen=True)
class Placed:
    """A slot of the draft, and where its tag starts: a share of the draft's prose before it."""

    slot: Slot
    at: float


PLAN = (
    Placed(Slot("search", 2.0), 0.10),
    Placed(Slot("diffusion", 3.0), 0.25),
    Placed(Slot("code", 1.5), 0.45),
    Placed(Slot("edit", 2.0, edits=1), 0.60),
    Placed(Slot("diffusion", 3.0), 0.90),
    Placed(Slot("edit", 2.0, edits=4), 0.97),
)


@dataclass(frozen=True)
class Draft:
    """The streamed draft, its slots, and the offset of each tag's last character."""

    text: str
    slots: list[Slot]
    closes: list[int]


def draft(plan: tuple[Placed, ...], tokens: int, scale: float) -> Draft:
    """About ``tokens`` tokens of prose with the plan's tags in place, latencies times ``scale``."""
    slots = [replace(placed.slot, seconds=placed.slot.seconds * scale) for placed in plan]
    tags = [image_tag(slot, index, "Streamed") for index, slot in enumerate(slots)]
    prose = max(0, tokens * CHARS_PER_TOKEN - sum(map(len, tags)))
    filler = itertools.cycle(SENTENCE)
    text, closes, written = "", [], 0
    for placed, tag in zip(plan, tags):
        upto = round(prose * placed.at)
        text += "".join(itertools.islice(filler, upto - written)) + f"\n\n{tag}\n\n"
        closes.append(len(text) - 3)
        written = upto
    text += "".join(itertools.islice(filler, prose - written))
    return Draft(text, slots, closes)


def early_floor(plan: Draft, model: SimulatedModel) -> float:
    """The later of the stream's end and each tag's close plus its chain."""
    made: list[float] = []
    for slot, close in zip(plan.slots, plan.closes):
        ready = model.sent_at(close)
        if slot.edits is not None:
            ready = max(ready, made[slot.edits])
        made.append(ready + slot.seconds)
    return max(stream_end(plan, model), *made)


def stream_end(plan: Draft, model: SimulatedModel) -> float:
    return model.sent_at(len(plan.text) - 1)


def document(plan: Draft, model: SimulatedModel, early_tools: bool, root: Path) -> float:
    """Wall seconds of one document, made into a fresh artifact folder under ``root``, its
    tools started as their tags close (``early_tools``) or after the draft."""
    tools = simulated_tools()
    graph = build_graph(model=model, tools=registry(tools))
    with cli_graph(graph, root / "checkpoints.sqlite") as compiled:
        started = time.perf_counter()
        output = run_document(compiled, context(root, early_tools=early_tools))
        wall = time.perf_counter() - started
    made = sum(result["ok"] for result in output["results"])
    calls = sum(tool.calls for tool in tools.values())
    if made != len(plan.slots) or calls != len(plan.slots):
        raise RuntimeError(f"{made} of {len(plan.slots)} images made, by {calls} tool calls")
    return wall


def run(quick: bool) -> Report:
    # Quick: a shorter draft, and time itself four times as fast.
    rounds, tokens, scale = (1, 400, 0.25) if quick else (3, 1500, 1.0)
    plan = draft(PLAN, tokens, scale)
    prepare(plan.slots, SMALL)
    model = SimulatedModel(answer=lambda messages, kwargs: plan.text,
                           tokens_per_s=TOKENS_PER_S / scale)
    with tempfile.TemporaryDirectory() as folder:
        # A document that takes no time warms imports and caches.
        instant = draft(PLAN, tokens, 0.0)
        document(instant, SimulatedModel(answer=lambda messages, kwargs: instant.text), True,
                 Path(folder, "warm"))
        walls = medians({
            "on": lambda index: document(plan, model, True, Path(folder, f"on-{index}")),
            "off": lambda index: document(plan, model, False, Path(folder, f"off-{index}")),
        }, rounds, warm_ups=0)
    end = stream_end(plan, model)
    on_floor, off_floor = early_floor(plan, model), end + critical_path(plan.slots)
    report = Report(
        NAME, "Streaming",
        f"A draft of {len(plan.text) // CHARS_PER_TOKEN} tokens streamed at "
        f"{TOKENS_PER_S / scale:g} tokens/s (a token is {CHARS_PER_TOKEN} characters), "
        f"{len(plan.slots)} image tags in it ({_tags(plan)}); run as `llmi generate` runs it "
        "(SQLite checkpointer, streamed, durability \"sync\"), tools started as their tags "
        f"close (on) and after the draft (off), alternating; median of {rounds} of each, "
        "each in a fresh artifact folder.",
        ("tools start", "wall", "floor", "wall / floor"),
    )
    report.row("as each tag closes (on)", seconds(walls["on"]), seconds(on_floor),
               ratio(walls["on"] / on_floor))
    report.row("after the draft (off)", seconds(walls["off"]), seconds(off_floor),
               ratio(walls["off"] / off_floor))
    report.row("off / on (ratios)", ratio(walls["off"] / walls["on"]),
               ratio(off_floor / on_floor), "")
    report.notes.append(
        f"The stream ends at {seconds(end)}. Floor on: the later of that and each tag's "
        "close plus its chain (its latency, after the image it edits); floor off: the "
        f"stream's end plus the critical path ({seconds(critical_path(plan.slots))}). Tags "
        f"close at {', '.join(seconds(model.sent_at(close)) for close in plan.closes)}.")
    report.target(f"wall time with early start at most {TARGET:g}x its floor",
                  walls["on"] <= TARGET * on_floor)
    return report


def _tags(plan: Draft) -> str:
    return ", ".join(f"{slot.source}{'' if slot.edits is None else f' of image {slot.edits}'} "
                     f"({slot.seconds:g} s)" for slot in plan.slots)
