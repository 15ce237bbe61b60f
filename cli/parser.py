"""The ``llmi`` command's arguments: the parser and the checks of each value.

It imports nothing beyond the standard library and llmi's light modules, so that
``llmi --help`` and a mistyped flag answer at once; ``llmi.cli.commands`` runs what it
parses.
"""

from __future__ import annotations

import argparse

from llmi import __version__
from llmi.cli.export import add_export_parser, formats_argument
from llmi.cli.revise import add_revise_parser
from llmi.cli.server_command import add_server_parser
from llmi.evaluation.records import ISG, OPENING, UEVAL
from llmi.evaluation.protocols import LLMI, PROTOCOLS
from llmi.evaluation.scorers import NAMES

SCORERS = [name.replace("_", "-") for name in NAMES]


def build_parser() -> argparse.ArgumentParser:
    """The parser; the command a line names is its ``command``."""
    parser = argparse.ArgumentParser(
        prog="llmi",
        description="Write an interleaved text-and-image document: a chat model writes the "
        "text and picks a tool (search, diffusion, code, edit) for every image.",
    )
    parser.add_argument("--version", action="version", version=f"llmi {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")

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
    generate.add_argument("--images", type=_image_num, metavar="N", dest="image_num", default=0,
                          help="images asked for: -1 none, 0 any (default), 99 at least one, "
                          "1 to 98 exactly that many")
    generate.add_argument("--format", type=formats_argument, default=("md", "html"),
                          metavar="FORMATS", help="the document's files to write and print, "
                          "comma-separated from md, html, pdf, docx (default: md,html; "
                          "Markdown and HTML are always written)")
    generate.add_argument("--thread", metavar="ID",
                          help="name the run, to resume it with `llmi resume ID` (default: a new uuid)")
    generate.add_argument("--review", action="store_true",
                          help="stop after planning, before any tool runs, to accept, edit or "
                          "drop the plan's images (with --candidates, the plan screening keeps); "
                          "without a terminal, write DIR/plan.json and exit 3 "
                          "(default: $LLMI_REVIEW, off)")
    _cache_flag(generate)

    resume = commands.add_parser(
        "resume", help="continue an interrupted run from its last checkpoint",
        description="Continue a run that was interrupted (killed, Ctrl-C, a server that went "
        "away) from its last checkpoint, with the settings it started with. Tool calls that "
        "had finished are not made again: their images come from the tool cache. "
        "LLMI_CHECKPOINT_URL names the checkpoint store (default: SQLite in the cache folder).",
    )
    resume.add_argument("thread", metavar="ID", help="the run's ID, as `llmi generate` printed it")
    resume.add_argument("--out", metavar="DIR", help="output folder (default: the run's own)")
    resume.add_argument("--plan", metavar="FILE",
                        help="the reviewed plan (the plan.json a run waiting for review wrote, "
                        "edited or not) to continue that run with")
    _cache_flag(resume)

    add_revise_parser(commands)
    add_export_parser(commands)

    demo = commands.add_parser("demo", help="run offline on recorded model replies, no keys needed")
    demo.add_argument("--out", metavar="DIR", default="llmi-demo", help="output folder (default: llmi-demo)")

    evaluate = commands.add_parser(
        "eval", help="write and score a document for every item of a dataset",
        description="Run the document graph (or, with --candidates, the test-time-scaling "
        "graph) over a dataset and score every document. Results go to DIR/results.jsonl as "
        "each item ends; run the same command again to resume: finished items are not run "
        "again. DIR also gets summary.json, index.html and a page per item.",
    )
    evaluate.add_argument("dataset", help="JSONL, JSON or Parquet: LLM-I's schema (chat "
                          "messages, extra_info), {prompt, images, criteria} per item, or "
                          "OpenING's test_data.jsonl, UEval's Parquet or ISG-Bench.jsonl "
                          "as published")
    evaluate.add_argument("--format", choices=[OPENING, UEVAL, ISG], help="read the dataset "
                          "as this benchmark's published file (default: told from its first item)")
    evaluate.add_argument("--out", metavar="DIR", default="llmi-eval",
                          help="output folder (default: llmi-eval)")
    evaluate.add_argument("--scorer", action="append", default=[], choices=SCORERS,
                          help="a scorer (repeatable; default: every one that applies: rubric "
                          "when items have criteria and a judge is set, reward, tool-use; "
                          "for OpenING opening and tool-use, for UEval ueval and tool-use, "
                          "for ISG isg and tool-use)")
    evaluate.add_argument("--protocol", choices=PROTOCOLS, default=LLMI,
                          help="llmi (default): llmi's settings, planner prompt and judges; "
                          "llm-i: LLM-I's evaluation of LLMI-Bench: one pass with its training "
                          "prompt, no repairs, one candidate, the rubric judged as LLM-I does")
    evaluate.add_argument("--candidates", type=_positive, metavar="N",
                          help="sample N candidate documents per item and keep the best")
    evaluate.add_argument("--keep", type=_positive, metavar="K",
                          help="candidates whose plans survive screening")
    evaluate.add_argument("--concurrency", type=_positive, default=4, metavar="N",
                          help="items run at the same time (default: 4)")
    evaluate.add_argument("--split", help="only the items of this split")
    evaluate.add_argument("--limit", type=_positive, metavar="N", help="only the first N items")
    _cache_flag(evaluate)

    picture = commands.add_parser("graph", help="print the Mermaid source of the graph")
    picture.add_argument("--tts", action="store_true", help="the test-time-scaling graph")
    add_server_parser(commands)
    return parser


def _cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true",
                        help="call every tool again instead of reusing the images of identical "
                        "earlier requests (default: $LLMI_TOOL_CACHE, on)")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _image_num(text: str) -> int:
    """LLM-I's count of images asked for: -1 none, 0 any, 99 at least one, n exactly n."""
    value = _whole(text)
    if not -1 <= value <= 99:
        raise argparse.ArgumentTypeError(
            f"must be -1 (none), 0 (any), 99 (at least one) or 1 to 98 (exactly that many), "
            f"not {value}")
    return value
