"""Run the benchmarks, print each report, and append the run to ``bench/RESULTS.md``.

    python -m bench [NAME ...] [--quick] [--results FILE | --no-record]

Exits 1 when a benchmark misses a target, 2 when one fails to run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from bench.report import RESULTS, Report, append, run_heading

BENCHMARKS = ("overhead", "scheduling", "streaming", "consistency", "chart_executor", "tts_scaling", "cache",
              "memory", "diffusion", "one_chart", "startup")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and shorter latencies: a smoke run, not a figure")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="the Markdown file each run is appended to (default: %(default)s)")
    parser.add_argument("--no-record", action="store_true", help="print only; append nothing")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - set(BENCHMARKS)):
        parser.error(f"no benchmark named {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    console = Console()
    heading = run_heading(names, args.quick)
    console.print(Markdown(heading))
    if not args.no_record:
        append(args.results, heading)
    missed, failed = [], []
    for name in names:
        with console.status(f"running {name}"):
            try:
                report: Report = importlib.import_module(f"bench.{name}").run(args.quick)
            except Exception:  # noqa: BLE001 - one broken benchmark must not lose the others
                failed.append(name)
                console.print(f"[red]{name} failed:[/red]\n{traceback.format_exc()}")
                continue
        text = report.markdown()
        console.print(Markdown(text))
        if not args.no_record:
            append(args.results, text)
        missed += [f"{name}: {target.text}" for target in report.targets if not target.met]
    for line in missed:
        console.print(f"[yellow]target missed[/yellow] {line}")
    if not args.no_record:
        console.print(f"appended to {args.results}")
    return 2 if failed else 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
