"""The ``llmi`` command: generate a document, or run the offline demo."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import openai
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console

from llmi import __version__
from llmi.artifacts import NotAnImage, inspect_image
from llmi.context import Context, default_cache_dir
from llmi.demo import LABEL, PROMPT, RecordedModel
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_tts_graph
from llmi.models import ModelNotConfigured
from llmi.nodes.candidates import NoCandidate
from llmi.nodes.intake import BadInputImage
from llmi.progress import SlotProgress


class CliError(Exception):
    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        return args.run(args, console)
    except CliError as exc:
        console.print(f"[bold red]llmi:[/] {exc.reason}", highlight=False, soft_wrap=True)
        console.print(f"[dim]hint: {exc.hint}[/]", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[bold red]llmi:[/] interrupted")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmi",
        description="Write an interleaved text-and-image document: a chat model writes the "
        "text and picks a tool (search, diffusion, code, edit) for every image.",
    )
    parser.add_argument("--version", action="version", version=f"llmi {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="write a document from a prompt")
    generate.add_argument("prompt", help="what the document should be")
    generate.add_argument("--image", action="append", default=[], metavar="PATH",
                          help="an input image (repeatable); input images take the first image indices")
    generate.add_argument("--out", metavar="DIR", help="output folder (default: $LLMI_OUT or llmi-out)")
    generate.add_argument("--candidates", type=_positive, metavar="N",
                          help="sample N candidate documents and keep the best (default: $LLMI_CANDIDATES or 1)")
    generate.add_argument("--keep", type=_positive, metavar="K",
                          help="candidates whose plans survive screening and run their tools "
                          "(default: $LLMI_KEEP or 1)")
    generate.add_argument("--images", type=int, metavar="N", dest="image_num", default=0,
                          help="images asked for: -1 none, 0 any (default), 99 at least one, n exactly n")
    generate.set_defaults(run=_generate)

    demo = commands.add_parser("demo", help="run offline on recorded model replies, no keys needed")
    demo.add_argument("--out", metavar="DIR", default="llmi-demo", help="output folder (default: llmi-demo)")
    demo.set_defaults(run=_demo)
    return parser


def _generate(args: argparse.Namespace, console: Console) -> int:
    ctx = Context(out_dir=args.out, candidates=args.candidates, keep=args.keep)
    if not ctx.model:
        raise CliError(
            "no chat model is configured",
            "set LLMI_MODEL to a model name, and OPENAI_BASE_URL to your server "
            "(vLLM, SGLang, Ollama) or OPENAI_API_KEY for OpenAI; or try `llmi demo`",
        )
    for path in args.image:
        _check_image(path)
    console.print(f"[dim]model {ctx.model} at {ctx.base_url or 'api.openai.com'}[/]", highlight=False)
    images = [str(Path(p).resolve()) for p in args.image]
    return _run({"prompt": args.prompt, "images": images, "image_num": args.image_num}, ctx, console)


def _demo(args: argparse.Namespace, console: Console) -> int:
    console.print(f"[bold yellow]{LABEL}[/]")
    ctx = Context(out_dir=args.out)
    return _run({"prompt": PROMPT}, ctx, console, model=RecordedModel())


def _run(inputs: dict[str, Any], ctx: Context, console: Console,
         model: BaseChatModel | None = None) -> int:
    run_id = str(uuid.uuid4())
    config = {"configurable": {"thread_id": run_id}}
    with _checkpointer() as saver, SlotProgress(console) as progress:
        builder = build_tts_graph(model=model) if ctx.candidates > 1 else build_graph(model=model)
        graph = builder.compile(checkpointer=saver, name="llmi")
        try:
            for _, mode, chunk in graph.stream(inputs, config, context=ctx, subgraphs=True,
                                               stream_mode=["custom", "updates"]):
                if mode == "custom" and chunk.get("llmi") == "slot":
                    progress.slot(chunk)
                elif mode == "updates":
                    for node, update in chunk.items():
                        progress.step(node, update)
        except ModelNotConfigured as exc:
            raise CliError(str(exc), "or try `llmi demo`") from None
        except openai.APIConnectionError as exc:
            raise _server_error(ctx, exc) from None
        except openai.APIStatusError as exc:
            raise CliError(f"the model server refused the request ({exc.status_code}): "
                           f"{_first_line(exc.message)}",
                           "check LLMI_MODEL and OPENAI_API_KEY") from None
        except NoCandidate as exc:
            raise CliError(str(exc), "check the model server; see `llmi generate --help`") from None
        except BadInputImage as exc:
            raise CliError(str(exc), "pass PNG, JPEG, WebP or GIF files with --image") from None
        outputs = graph.get_state(config).values.get("outputs", {})
    console.print(f"[dim]run {run_id}[/]", highlight=False)
    for key in ("markdown", "html", "manifest"):
        print(outputs[key])
    return 0


def _server_error(ctx: Context, exc: openai.APIConnectionError) -> CliError:
    where = ctx.base_url or "api.openai.com"
    if isinstance(exc, openai.APITimeoutError):
        reason = f"the model server at {where} did not answer within {ctx.model_timeout:g} s"
    else:
        cause = exc.__cause__ or exc
        reason = f"the model server at {where} did not answer ({_first_line(str(cause)) or 'connection failed'})"
    return CliError(reason, "start the server, or set OPENAI_BASE_URL to a running "
                    "OpenAI-compatible server; LLMI_MODEL_TIMEOUT sets the wait")


def _check_image(path: str) -> None:
    try:
        inspect_image(Path(path).read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read input image {path!r}: {exc.strerror}",
                       "check the --image path") from None
    except NotAnImage as exc:
        raise CliError(f"input image {path!r} is {exc}", "pass PNG, JPEG, WebP or GIF files") from None


def _checkpointer() -> AbstractContextManager[SqliteSaver]:
    """The CLI's own SQLite checkpointer, so a run can be inspected afterwards."""
    path = default_cache_dir() / "checkpoints.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver.from_conn_string(str(path))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


if __name__ == "__main__":
    sys.exit(main())
