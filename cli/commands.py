"""The ``llmi`` command: generate a document, resume a run, the offline demo, eval, graph.

This module imports only what reading the arguments needs; each command imports what it
runs (LangGraph, the model clients, the evaluation) when it starts, so that ``llmi
--help`` and a mistyped flag answer at once.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmi.cli.export import export_command
from llmi.cli.parser import build_parser
from llmi.cli.revise import revise_command
from llmi.cli.server_command import server_command
from llmi.context import Context, consistency_of, env_name
from llmi.errors import LlmiError
from llmi.graphs import GraphName, graph_for

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph import StateGraph
    from langgraph.types import StateSnapshot
    from rich.console import Console

    from llmi.cli.runs import RunSettings


class CliError(LlmiError):
    """A command that cannot do what it was asked, for a reason the user can fix."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from llmi.cli.failures import STORAGE_ERRORS, explain

    console = Console(stderr=True)
    try:
        with _signals_interrupt():
            return _COMMANDS[args.command](args, console)
    except LlmiError as exc:
        _say(console, exc.reason, exc.hint)
        return 2
    except STORAGE_ERRORS as exc:
        failure = explain(exc, Context(out_dir=getattr(args, "out", None)))
        _say(console, failure.reason, failure.hint)
        return 2
    except KeyboardInterrupt as exc:
        interrupt = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        _say(console, interrupt.reason, interrupt.hint)
        return 128 + interrupt.signum


def _say(console: Console, reason: str, hint: str) -> None:
    """The command's last words: one ``llmi:`` line, and a ``hint:`` line when there is one."""
    console.print(f"[bold red]llmi:[/] {reason}", highlight=False, soft_wrap=True)
    if hint:
        console.print(f"[dim]hint: {hint}[/]", highlight=False, soft_wrap=True)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the command stopped; ``hint`` says how to go on."""

    def __init__(self, signum: int, hint: str = "") -> None:
        super().__init__(signum)
        self.signum, self.hint = signum, hint

    @property
    def reason(self) -> str:
        return "interrupted" if self.signum == signal.SIGINT else \
            f"stopped by {signal.Signals(self.signum).name}"

    def with_hint(self, hint: str) -> Interrupted:
        return Interrupted(self.signum, hint)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread, so a run stops as it does
    for Ctrl-C (SIGTERM's default would end the process at once, its run unfinished)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _generate(args: argparse.Namespace, console: Console) -> int:
    ctx = Context(out_dir=args.out, candidates=args.candidates, keep=args.keep,
                  tool_cache=False if args.no_cache else None, review=args.review or None)
    # Everything is checked before the first model call.
    _require_model(ctx)
    _check_scaling(ctx)
    _check_review(ctx)
    consistency_of(ctx)
    _check_image_num(args.image_num, ctx)
    for path in args.image:
        _check_image(path)
    _check_output_folder(ctx.out_dir, "--out (or LLMI_OUT)")
    _check_artifact_folder(ctx)
    console.print(f"[dim]model {ctx.model} at {ctx.base_url or 'api.openai.com'}[/]", highlight=False)
    images = [str(Path(p).resolve()) for p in args.image]
    return _run({"prompt": args.prompt, "images": images, "image_num": args.image_num}, ctx,
                console, thread_id=args.thread, formats=args.format)


def _evaluate(args: argparse.Namespace, console: Console) -> int:
    from llmi.evaluation.datasets import DatasetError, load_items
    from llmi.evaluation.protocols import generation_context, protocol_scorers
    from llmi.evaluation.runner import Evaluation
    from llmi.evaluation.scorers import build_scorers

    # An evaluation runs unattended: no run stops for its plan's review.
    ctx = Context(candidates=args.candidates, keep=args.keep,
                  tool_cache=False if args.no_cache else None, review=False)
    _require_model(ctx)
    _check_scaling(ctx)
    consistency_of(ctx)
    generation = generation_context(args.protocol, ctx)
    out = _check_output_folder(args.out, "--out")
    _check_artifact_folder(ctx)
    try:
        items = load_items(args.dataset, image_dir=out / "inputs", format=args.format)
    except DatasetError as exc:
        raise CliError(str(exc), "see `llmi eval --help` for the dataset forms") from None
    items = [item for item in items if args.split in (None, item["split"])][: args.limit]
    if not items:
        raise CliError(f"no items of split {args.split!r} in {args.dataset}",
                       "check --split against the items' extra_info.split")
    try:
        scorers, notes = build_scorers([n.replace("-", "_") for n in args.scorer], ctx, items)
        scorers = protocol_scorers(args.protocol, scorers, ctx)
    except ValueError as exc:
        raise CliError(str(exc), "or pick other scorers with --scorer") from None
    for note in notes:
        console.print(f"[yellow]{note}[/]", highlight=False, soft_wrap=True)
    name = graph_for(generation.candidates)
    evaluation = Evaluation(
        items, out, scorers=scorers, context=generation, concurrency=args.concurrency,
        graph=lambda saver: _builder(name).compile(checkpointer=saver, name="llmi"),
        graph_name=name, dataset=str(args.dataset), protocol=args.protocol,
    )
    try:
        summary = evaluation.run(console)
    except Interrupted as exc:
        raise exc.with_hint(f"run the same command again to resume: the items finished so "
                            f"far are in {out / 'results.jsonl'}") from None
    return 1 if summary["errors"] else 0


def _builder(name: GraphName, model: BaseChatModel | None = None) -> StateGraph:
    # Each graph module builds its own graph for langgraph.json when imported: import one.
    if name == "tts":
        from llmi.graphs.tts import build_tts_graph

        return build_tts_graph(model=model)
    from llmi.graphs.document import build_graph

    return build_graph(model=model)


def _require_model(ctx: Context) -> None:
    if not ctx.model:
        raise CliError(
            "no chat model is configured",
            "set LLMI_MODEL to a model name, and OPENAI_BASE_URL to your server "
            "(vLLM, SGLang, Ollama) or OPENAI_API_KEY for OpenAI; or try `llmi demo`",
        )


def _demo(args: argparse.Namespace, console: Console) -> int:
    from llmi.cli.demo import LABEL, PROMPT, demo_context

    _check_output_folder(args.out, "--out")
    console.print(f"[bold yellow]{LABEL}[/]")
    ctx = demo_context(args.out)
    _check_artifact_folder(ctx)
    return _run({"prompt": PROMPT}, ctx, console, model="recorded")


def _run(inputs: dict[str, Any], ctx: Context, console: Console, model: str = "",
         thread_id: str | None = None, formats: tuple[str, ...] = ("md", "html")) -> int:
    """Start a new run, checkpointed as thread ``thread_id`` (default: a new uuid), with
    the model the environment names, or ``recorded``: the demo's recorded replies; it
    prints the document's files of ``formats`` when it ends."""
    from llmi.tools.code import start_chart_zygote

    start_chart_zygote(ctx)  # first: its imports overlap all of llmi's and the model's reply
    from llmi.checkpoints import latest
    from llmi.cli.runs import RunSettings

    thread_id = thread_id or str(uuid.uuid4())
    settings = RunSettings.of(ctx, model=model, formats=formats)
    with _checkpointer(ctx) as saver:
        if latest(saver, thread_id) is not None:
            raise CliError(f"run {thread_id} already exists",
                           f"continue it with `llmi resume {thread_id}`, or pick another --thread")
        console.print(f"[dim]run {thread_id} (if it stops, continue it with "
                      f"`llmi resume {thread_id}`)[/]", highlight=False, soft_wrap=True)
        graph = _graph(settings, saver)
        return _stream(graph, inputs, settings, ctx, console, saver, thread_id)


def _picture(args: argparse.Namespace, console: Console) -> int:
    builder = _builder("tts" if args.tts else "document")
    # draw_mermaid is offline; draw_mermaid_png may call a remote renderer.
    print(builder.compile().get_graph().draw_mermaid())
    return 0


def _resume(args: argparse.Namespace, console: Console) -> int:
    """Continue a run from its last checkpoint, with the settings it was started with."""
    from llmi.checkpoints import thread_config
    from llmi.cli.review import WAITING, read_plan_file

    with saved_run(args) as (saver, settings, ctx, graph):
        state = graph.get_state(thread_config(args.thread))
        if args.plan and not state.interrupts:
            raise CliError(f"run {args.thread} is not waiting for its plan's review",
                           "--plan answers a run that `llmi generate --review` stopped at its plan")
        # A step that finished its writes but was stopped before the next checkpoint has
        # nothing next, yet its writes are pending in ``tasks``: resuming applies them.
        if not state.next and not state.tasks:
            outputs = state.values.get("outputs") or {}
            if not outputs:
                raise CliError(f"run {args.thread} ended without a document",
                               "start a new one with `llmi generate`")
            elsewhere = " (--out applies only to a run that has not finished)" if args.out else ""
            console.print(f"run {args.thread} has already finished; its document{elsewhere}:",
                          highlight=False, soft_wrap=True)
            _print_outputs(outputs)
            return 0
        at = state.next or tuple(task.name for task in state.tasks)
        resume: Any = None
        if state.interrupts:
            # The review node reads the context: the run goes on as it started, reviewing.
            ctx = settings.context(review=True)
            if args.plan:
                resume = _answered(read_plan_file(args.plan, state.interrupts[0].value))
            else:
                resume = _reviewed(state, console, args.thread, ctx)
                if resume is None:
                    return WAITING
        console.print(f"[dim]resuming run {args.thread} at {', '.join(at)}[/]",
                      highlight=False, soft_wrap=True)
        return _stream(graph, resume, settings, ctx, console, saver, args.thread)


@contextmanager
def saved_run(args: argparse.Namespace) -> Iterator[tuple[BaseCheckpointSaver, RunSettings,
                                                           Context, Any]]:
    """The run ``args.thread`` names, for the block: the checkpointer that holds it, the
    settings it started with (``args.out`` and ``args.no_cache`` applied), its context and
    its compiled graph. The chart zygote starts first, its imports overlapping the graph's."""
    from llmi.cli.runs import saved_settings
    from llmi.tools.code import start_chart_zygote

    out = _check_output_folder(args.out, "--out") if args.out else None
    env = Context()
    with _checkpointer(env) as saver:
        settings = saved_settings(saver, args.thread, env, out=out, no_cache=args.no_cache)
        ctx = settings.context()
        start_chart_zygote(ctx)
        yield saver, settings, ctx, _graph(settings, saver)


def _graph(settings: RunSettings, saver: BaseCheckpointSaver) -> Any:
    """The run's graph, compiled with ``saver``; the demo's answers with recorded replies."""
    model = None
    if settings.model == "recorded":
        from llmi.cli.demo import RecordedModel

        model = RecordedModel()
    return _builder(settings.graph, model).compile(checkpointer=saver, name="llmi")


def _stream(graph: Any, inputs: Any, settings: RunSettings, ctx: Context, console: Console,
            saver: BaseCheckpointSaver, thread_id: str) -> int:
    """Run (``inputs``), resume (``None``) or answer (a ``Command``) the thread on ``graph``
    (compiled with ``saver``) until it ends, each stop for the plan's review answered
    (``llmi.cli.review``); prints the document's outputs. The exit status: 0, or WAITING
    when the run is left waiting for its review."""
    from llmi.cli.review import WAITING

    while True:
        state = _streamed(graph, inputs, settings, ctx, console, saver, thread_id)
        if not state.interrupts:
            _print_outputs(state.values.get("outputs", {}), settings.formats)
            return 0
        inputs = _reviewed(state, console, thread_id, ctx)
        if inputs is None:
            return WAITING


def _reviewed(state: StateSnapshot, console: Console, thread_id: str, ctx: Context) -> Any:
    """The command that resumes a run stopped for its plan's review with the user's answer;
    None when the run is left waiting."""
    from llmi.cli.review import review

    answer = review(state.interrupts[0].value, console, thread_id=thread_id, out_dir=ctx.out_dir)
    return None if answer is None else _answered(answer)


def _answered(answer: Any) -> Any:
    from langgraph.types import Command

    return Command(resume=answer)


def _streamed(graph: Any, inputs: Any, settings: RunSettings, ctx: Context, console: Console,
              saver: BaseCheckpointSaver, thread_id: str) -> StateSnapshot:
    """One stream of the thread on ``graph``, to its end or its next stop; the state then."""
    from llmi.checkpoints import thread_config
    from llmi.cli.failures import STORAGE_ERRORS, explain
    from llmi.cli.progress import SlotProgress
    from llmi.models import ModelNotConfigured, SettingRefused
    from llmi.nodes.candidates import NoCandidate
    from llmi.nodes.intake import BadInputImage
    from llmi.reasoning import NoAnswer
    from llmi.stopping import RunThread

    config = thread_config(thread_id, settings.metadata())
    run = RunThread(lambda: stream_run(graph, inputs, config, ctx))
    with SlotProgress(console) as progress:
        try:
            for _, mode, chunk in run.chunks():
                if mode == "custom":
                    progress.event(chunk)
                elif mode == "updates":
                    for node, update in chunk.items():
                        progress.step(node, update)
        except Interrupted as exc:
            run.stop()
            raise exc.with_hint(f"continue it with `llmi resume {thread_id}`") from None
        except ModelNotConfigured as exc:
            raise CliError(str(exc), "or try `llmi demo`") from None
        except NoAnswer as exc:
            raise CliError(str(exc), "the document is the answer that follows a model's "
                           "reasoning; LLMI_MAX_TOKENS sets the planner's token limit") from None
        except SettingRefused as exc:
            raise CliError(str(exc), f"change {exc.setting}") from None
        except NoCandidate as exc:
            raise CliError(str(exc), "check the model server; see `llmi generate --help`") from None
        except BadInputImage as exc:
            raise CliError(str(exc), "pass PNG, JPEG, WebP or GIF files with --image") from None
        except STORAGE_ERRORS as exc:
            failure = explain(exc, ctx, run=thread_id if _saved(saver, thread_id) else None)
            raise CliError(failure.reason, failure.hint) from None
    return graph.get_state(config)


def stream_run(graph: Any, inputs: Any, config: dict[str, Any],
               ctx: Context) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """A run of ``graph`` (compiled with a checkpointer) as the command makes it: the
    chunks of its custom events and node updates, subgraphs included, as
    ``(namespace, mode, chunk)``."""
    # "sync": each checkpoint is committed before the next step starts, so a run killed in
    # the middle of a step resumes at that step.
    return graph.stream(inputs, config, context=ctx, subgraphs=True,
                        stream_mode=["custom", "updates"], durability="sync")


def _saved(saver: BaseCheckpointSaver, thread_id: str) -> bool:
    """Whether the run has a checkpoint to resume from, as far as the store can say."""
    from llmi.checkpoints import latest
    from llmi.cli.failures import STORAGE_ERRORS

    try:
        return latest(saver, thread_id) is not None
    except STORAGE_ERRORS:
        return False


def _print_outputs(outputs: dict[str, str], formats: Sequence[str] = ("md", "html")) -> None:
    """The paths of the document's files of ``formats`` (``pdf`` and ``docx`` made here,
    by ``llmi.export``), then of its manifest."""
    from llmi.export import export_document

    for path in export_document(outputs["dir"], formats).values():
        print(path)
    print(outputs["manifest"])


def _check_image(path: str) -> None:
    from llmi.artifacts import NotAnImage, inspect_image

    try:
        inspect_image(Path(path).read_bytes(), decode=True)
    except OSError as exc:
        raise CliError(f"cannot read input image {path!r}: {exc.strerror}",
                       "check the --image path") from None
    except NotAnImage as exc:
        raise CliError(f"input image {path!r} is {exc}", "pass PNG, JPEG, WebP or GIF files") from None


def _checkpointer(ctx: Context) -> AbstractContextManager[BaseCheckpointSaver]:
    """The CLI's checkpointer (SQLite, or PostgreSQL: see ``llmi.checkpoints``); it raises
    CheckpointStoreError on entry when the store cannot be opened."""
    from llmi.checkpoints import open_checkpointer

    return open_checkpointer(ctx.checkpoint_url)


def _check_scaling(ctx: Context) -> None:
    """Candidates and keep, from the flags or the environment, are counts that fit together."""
    for name in ("candidates", "keep"):  # the flags are checked already; these come from it
        if getattr(ctx, name) < 1:
            raise CliError(f"{env_name(name)} must be 1 or more, not {getattr(ctx, name)}",
                           f"set {env_name(name)} to a whole number of 1 or more, or unset it")
    if ctx.keep > ctx.candidates:
        raise CliError(f"keep is {ctx.keep} but candidates is {ctx.candidates}: a run keeps only "
                       "candidates it samples",
                       "lower --keep or raise --candidates (LLMI_KEEP and LLMI_CANDIDATES "
                       "set them when the flags are not given)")


def _check_review(ctx: Context) -> None:
    """A reviewed run shows one plan: with test-time scaling, the one that screening keeps."""
    if ctx.review and ctx.keep > 1:
        raise CliError(f"a reviewed run shows one plan, but keep is {ctx.keep}: each kept "
                       "candidate's plan would stop the run for its own review",
                       f"keep one candidate (--keep 1), or drop --review (or "
                       f"{env_name('review')})")


def _check_image_num(image_num: int, ctx: Context) -> None:
    if 0 < image_num < 99 and image_num > ctx.max_images:
        raise CliError(f"--images {image_num} asks for more images than one document may have "
                       f"({env_name('max_images')} is {ctx.max_images})",
                       f"ask for fewer, or raise {env_name('max_images')}")


def _check_output_folder(folder: str, setting: str) -> Path:
    """The output folder, made when missing and proved writable, so that a run cannot reach
    the assembler only to fail there."""
    return _check_writable(folder, "output folder", setting)


def _check_artifact_folder(ctx: Context) -> None:
    """The artifact store's folder, proved writable, so that no tool's image is lost."""
    _check_writable(ctx.artifact_dir, "artifact folder", env_name("artifact_dir"))


def _check_writable(folder: str, what: str, setting: str) -> Path:
    """``folder``, made when missing and proved writable by a probe file written and
    removed; a CliError naming ``what`` and its ``setting`` when it is not."""
    out = Path(folder).expanduser().resolve()
    hint = f"pass a folder you can write to with {setting}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file" if blocker else exc.strerror
        raise CliError(f"cannot make the {what} {out}: {why}", hint) from None
    try:
        with tempfile.TemporaryFile(dir=out, prefix=".llmi-probe-") as probe:
            probe.write(b"llmi")
            probe.flush()
    except OSError as exc:
        raise CliError(f"cannot write in the {what} {out}: {exc.strerror}", hint) from None
    return out


_COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "generate": _generate, "resume": _resume, "revise": revise_command, "export": export_command,
    "demo": _demo, "eval": _evaluate, "graph": _picture, "server": server_command,
}
