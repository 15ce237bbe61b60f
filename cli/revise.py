"""``llmi revise``: make one image of a finished document again, from a new tag.

The new tag is given (``--tag``) or written by the planner's model from an instruction
(``--instruction``), and read as the planner's tags are (``llmi.revision``). The run's
thread then goes on from dispatch, as if the node before dispatch had asked for that slot
and the images made from it (edits of it, images that keep its subject) as their next
attempts: only those are made, every other image keeps its result, and the verifier and
the assembler finish the document as they do any run. The document as it was is kept
under ``DIR/versions/<n>/`` first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from llmi.context import Context
    from llmi.state import ImageRequest
    from llmi.tools.registry import ToolRegistry

DISPATCH = "dispatch"


def add_revise_parser(commands: Any) -> None:
    """The ``revise`` command's arguments, on the subparsers ``commands``."""
    from llmi.cli.parser import _cache_flag, _whole

    revise = commands.add_parser(
        "revise", help="make one image of a finished document again",
        description="Give one image of a finished run a new tag, or have the model rewrite "
        "its tag from an instruction, and make that image again with the images made from it "
        "(its edits, and images that keep its subject). Every other image stays as it is. The "
        "document is written again; the previous one is kept in DIR/versions/N, and the "
        "manifest's revisions record each revision.",
    )
    revise.add_argument("thread", metavar="ID", help="the run's ID, as `llmi generate` printed it")
    revise.add_argument("--slot", type=_whole, required=True, metavar="N",
                        help="the image to revise, numbered as img_index counts (input images first)")
    change = revise.add_mutually_exclusive_group(required=True)
    change.add_argument("--tag", metavar="TAG",
                        help="the new tag: \"{'source': ..., 'description': ..., 'params': {...}}\"")
    change.add_argument("--instruction", metavar="TEXT",
                        help="what to change, in words: the model rewrites the image's tag")
    revise.add_argument("--out", metavar="DIR", help="output folder (default: the run's own)")
    _cache_flag(revise)


def revise_command(args: argparse.Namespace, console: Console) -> int:
    """Revise image ``args.slot`` of finished run ``args.thread``; see the module."""
    from llmi.checkpoints import thread_config
    from llmi.cli.commands import _check_output_folder, _stream, saved_run
    from llmi.revision import keep_version, revision
    from llmi.tools.registry import default_tools

    with saved_run(args) as (saver, settings, ctx, graph):
        values = _finished(graph, args.thread)
        before = _node_before_dispatch(graph, args.thread)
        _check_slot(values, args.slot, args.thread)
        tools = default_tools()
        tag, request = _new_request(args, values, tools, ctx)
        update, rerun = revision_update(values, request)
        target = _check_output_folder(settings.out_dir, "--out")
        version = keep_version(Path(values["outputs"]["dir"]), target)
        _tell(console, args.slot, rerun, version, target)
        update["revisions"] = [revision(version=version, slot=args.slot, tag=tag, rerun=rerun,
                                        instruction=args.instruction)]
        graph.update_state(thread_config(args.thread, settings.metadata()), update, as_node=before)
        return _stream(graph, None, settings, ctx, console, saver, args.thread)


def _finished(graph: Any, thread: str) -> dict[str, Any]:
    """The state of the finished run ``thread``; a CliError for one that has not finished
    or that ended without a document."""
    from llmi.checkpoints import thread_config
    from llmi.cli.commands import CliError

    state = graph.get_state(thread_config(thread))
    if state.next or state.tasks:
        raise CliError(f"run {thread} has not finished: only a finished document can be revised",
                       f"finish it with `llmi resume {thread}`, then revise it")
    if not state.values.get("outputs"):
        raise CliError(f"run {thread} ended without a document",
                       "start a new one with `llmi generate`")
    return state.values


def _node_before_dispatch(graph: Any, thread: str) -> str:
    from llmi.cli.commands import CliError

    before = node_before(graph, DISPATCH)
    if before is None:
        raise CliError(f"run {thread} was made by a graph without a {DISPATCH} node of its own "
                       "(the test-time-scaling graph): it cannot be revised one image at a time",
                       "revise a run of `llmi generate` without --candidates")
    return before


def node_before(graph: Any, node: str) -> str | None:
    """The node of the compiled ``graph`` that leads into ``node`` on the way there, not
    back from it (a plain edge before a conditional one); None when no node does."""
    edges = graph.get_graph().edges
    after = {node}
    while grown := {e.target for e in edges if e.source in after} - after:
        after |= grown
    leading = sorted((e.conditional, e.source) for e in edges
                     if e.target == node and e.source not in after)
    return leading[0][1] if leading else None


def _check_slot(values: dict[str, Any], slot: int, thread: str) -> None:
    from llmi.cli.commands import CliError

    n_inputs = len(values.get("inputs") or [])
    slots = [s["slot"] for s in values.get("segments") or [] if s["kind"] == "slot"]
    if 0 <= slot < n_inputs:
        raise CliError(f"image {slot} is an input image: only images the document made can be "
                       "revised", _slots_hint(slots))
    if slot not in slots:
        raise CliError(f"run {thread}'s document has no image {slot}", _slots_hint(slots))


def _slots_hint(slots: list[int]) -> str:
    if not slots:
        return "its document has no images"
    return f"pick one of its images with --slot: {', '.join(map(str, slots))}"


def _new_request(args: argparse.Namespace, values: dict[str, Any], tools: ToolRegistry,
                 ctx: Context) -> tuple[str, ImageRequest]:
    """The slot's new tag (its body) and request, as the slot's next attempt."""
    from llmi.revision import revised_request

    slot = args.slot
    old = [r["attempt"] for key in ("requests", "results")
           for r in values.get(key) or [] if r["slot"] == slot]
    if args.tag is not None:
        text, origin = args.tag, "--tag"
    else:
        text, origin = _rewritten(args.instruction, slot, values, tools, ctx), "the model's tag"
    return revised_request(text, slot, required_params=tools.required_params(),
                           reference_sources=tools.reference_sources(),
                           attempt=max(old, default=-1) + 1, origin=origin)


def _rewritten(instruction: str, slot: int, values: dict[str, Any], tools: ToolRegistry,
               ctx: Context) -> str:
    """The planner's model's reply when asked to rewrite the slot's tag from ``instruction``."""
    from llmi.cli.commands import CliError
    from llmi.models import ModelNotConfigured, SettingRefused, chat_model
    from llmi.nodes.verifier import surrounding_text
    from llmi.revision import rewrite_tag

    try:
        model = chat_model(ctx)
    except ModelNotConfigured:
        raise CliError("--instruction needs a chat model to rewrite the tag, and none is configured",
                       "set LLMI_MODEL (and OPENAI_BASE_URL or OPENAI_API_KEY), or give the new "
                       "tag with --tag") from None
    try:
        return rewrite_tag(model, slot=slot, tag=_tag_now(values, slot), instruction=instruction,
                           around=surrounding_text(values.get("segments") or [], slot),
                           guidance={source: tool.guidance for source, tool in tools.items()})
    except SettingRefused as exc:
        raise CliError(str(exc), f"change {exc.setting}") from None


def _tag_now(values: dict[str, Any], slot: int) -> str:
    """The body of the slot's tag as it stands: its request's, else the draft's (a tag
    the parser could not read has no request)."""
    from llmi.revision import current_tag
    from llmi.tags import tag_bodies

    request = next((r for r in values.get("requests") or [] if r["slot"] == slot), None)
    if request is not None:
        return current_tag(request)
    bodies = tag_bodies(values.get("draft") or "")
    ordinal = slot - len(values.get("inputs") or [])
    return bodies[ordinal].strip() if 0 <= ordinal < len(bodies) else ""


def revision_update(values: dict[str, Any], request: ImageRequest) -> tuple[dict[str, Any], list[int]]:
    """The state update that runs ``request`` and the images of the document made from its
    slot as their next attempts, in a round of their own; and the slots it runs."""
    from llmi.nodes.verifier.repairs import rerun_dependents

    in_document = {s["slot"] for s in values.get("segments") or [] if s["kind"] == "slot"}
    # A slot dropped in review keeps its request on record; it is made no more.
    others = [r for r in values.get("requests") or [] if r["slot"] in in_document]
    again = [request, *rerun_dependents([request], others)]
    results = values.get("results") or []
    fresh = max([values.get("round", 0), *(r.get("round", 0) + 1 for r in results)])
    return {"requests": again, "round": fresh}, [r["slot"] for r in again]


def _tell(console: Console, slot: int, rerun: list[int], version: int | None, out: Path) -> None:
    from llmi.revision import VERSIONS

    made = ", ".join(map(str, rerun))
    kept = (f"the previous document is kept in {out / VERSIONS / str(version)}" if version
            else "the previous document was not on disk: no version of it is kept")
    console.print(f"[dim]revising image {slot}: making images {made} again; {kept}[/]",
                  highlight=False, soft_wrap=True)
