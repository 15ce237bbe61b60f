"""Running a graph over a dataset's items, several at a time, and scoring each document.

Every item is a LangGraph thread checkpointed in ``DIR/checkpoints.sqlite``, and its
line goes to ``DIR/results.jsonl`` the moment it is scored. Running the same evaluation
again skips the items that have a line with status ``ok``, continues an item that was
interrupted from its last checkpoint, and runs again the items that ended in an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from llmi import stopping
from llmi.artifacts import ArtifactStore
from llmi.checkpoints import open_checkpointer, thread_config
from llmi.context import Context
from llmi.evaluation.protocols import LLMI, check_folder
from llmi.evaluation.records import (
    OPENING, Document, EvalItem, ItemRun, ItemScore, ResultLine,
)
from llmi.evaluation.report import item_dir, summary_table, write_pages, write_summary
from llmi.evaluation.results import ResultsFile, write_predictions
from llmi.evaluation.scorers.base import Scorer
from llmi.judge.scoring import describe_error

RESULTS = "results.jsonl"
CHECKPOINTS = "checkpoints.sqlite"
DOCUMENT_KEYS = ("draft", "segments", "results", "inputs", "repairs", "outputs")

GraphFactory = Callable[[Any], CompiledStateGraph]
"""Compiles the graph to evaluate with the checkpointer it is given."""


class Evaluation:
    """One evaluation: a dataset's items, the graph that writes their documents, the scorers."""

    def __init__(
        self,
        items: Sequence[EvalItem],
        out: Path,
        *,
        graph: GraphFactory,
        scorers: Sequence[Scorer],
        context: Context,
        graph_name: str = "document",
        dataset: str = "",
        concurrency: int = 4,
        protocol: str = LLMI,
    ) -> None:
        self.items = list(items)
        self.out = out
        self.graph = graph
        self.scorers = list(scorers)
        self.context = context
        self.graph_name = graph_name
        self.dataset = dataset
        self.concurrency = max(1, concurrency)
        self.protocol = protocol
        self.results = ResultsFile(out / RESULTS)
        self.store = ArtifactStore(context.artifact_dir)

    def run(self, console: Console | None = None) -> dict[str, Any]:
        """Run the items that have no ``ok`` line yet, then report on every item."""
        console = console or Console(stderr=True)
        done = self.results.read()
        check_folder(self.protocol, {line["protocol"] for line in done.values()},
                     str(self.results.path))
        pending = [(i, item) for i, item in enumerate(self.items)
                   if done.get(item["id"], {}).get("status") != "ok"]
        skipped = len(self.items) - len(pending)
        if skipped:
            console.print(f"[dim]{skipped} of {len(self.items)} items already done in "
                          f"{self.results.path}; running the other {len(pending)}[/]",
                          highlight=False)
        stopping.clear()
        with open_checkpointer(str(self.out / CHECKPOINTS)) as saver, \
                _progress(console, len(self.items), skipped) as advance:
            graph = self.graph(saver)
            pool = ThreadPoolExecutor(self.concurrency)
            futures = [pool.submit(self.run_item, graph, i, item) for i, item in pending]
            recorded: set[Future[ResultLine]] = set()
            try:
                for future in as_completed(futures):
                    self._record(future, recorded, advance)
            except KeyboardInterrupt:
                self._stop(futures, recorded, advance)
                raise
            finally:
                # Items not started are dropped rather than awaited.
                pool.shutdown(wait=False, cancel_futures=True)
        return self.report(console)

    def _record(self, future: Future[ResultLine], recorded: set[Future[ResultLine]],
                advance: Callable[[ResultLine], None]) -> None:
        line = future.result()
        self.results.append(line)
        recorded.add(future)
        advance(line)

    def _stop(self, futures: Sequence[Future[ResultLine]], recorded: set[Future[ResultLine]],
              advance: Callable[[ResultLine], None]) -> None:
        """Interrupted: ask the items in flight to stop, give them a moment, and record
        those that finished; a stopped item resumes from its checkpoint next time."""
        stopping.request()
        for future in futures:
            future.cancel()
        done, _ = wait(futures, timeout=stopping.STOP_GRACE_S)
        for future in done - recorded:
            if not future.cancelled() and future.exception() is None:
                self._record(future, recorded, advance)

    def run_item(self, graph: CompiledStateGraph, index: int, item: EvalItem) -> ResultLine:
        """Write the item's document (or finish an interrupted one), then score it."""
        started = time.monotonic()
        if "error" in item:
            return self._line(index, item, {}, {}, started, error=item["error"])
        try:
            document = self._document(graph, item)
        except stopping.Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the others
            return self._line(index, item, {}, {}, started, error=describe_error(exc))
        run = ItemRun(item=item, document=document, seconds=round(time.monotonic() - started, 3))
        scores = {scorer.name: self._score(scorer, run) for scorer in self.scorers}
        return self._line(index, item, document, scores, started)

    def report(self, console: Console) -> dict[str, Any]:
        """``summary.json``, the HTML pages and the terminal table, from ``results.jsonl``."""
        by_id = self.results.read()
        lines = [by_id[item["id"]] for item in self.items if item["id"] in by_id]
        summary = self.summary(lines)
        write_summary(self.out, summary)
        if any(item["data_source"] == OPENING for item in self.items):
            write_predictions(self.out, lines, self.store)
        index = write_pages(self.out, lines, self.store)
        console.print(summary_table(summary))
        console.print(f"[dim]results {self.results.path}\nreport  {index}[/]", highlight=False)
        return summary

    def summary(self, lines: Sequence[ResultLine]) -> dict[str, Any]:
        ok = [line for line in lines if line["status"] == "ok"]
        summary: dict[str, Any] = {
            "dataset": self.dataset,
            "graph": self.graph_name,
            "protocol": self.protocol,
            "items": len(self.items),
            "ok": len(ok),
            "errors": sum(line["status"] == "error" for line in lines),
            "scorers": self._summaries(ok),
        }
        splits = sorted({line["item"]["split"] for line in ok})
        if len(splits) > 1:
            summary["splits"] = {
                split: self._summaries([line for line in ok if line["item"]["split"] == split])
                for split in splits
            }
        return summary

    def _summaries(self, lines: Sequence[ResultLine]) -> dict[str, Any]:
        return {
            scorer.name: scorer.summarize(
                [line["scores"][scorer.name] for line in lines if scorer.name in line["scores"]]
            )
            for scorer in self.scorers
        }

    def _document(self, graph: CompiledStateGraph, item: EvalItem) -> Document:
        # A thread per protocol: an item's checkpoint never finishes under the other one.
        thread = f"eval:{item['id']}" if self.protocol == LLMI else \
            f"eval:{self.protocol}:{item['id']}"
        config = thread_config(thread)
        context = replace(self.context, out_dir=str(item_dir(self.out, item["id"])))
        state = graph.get_state(config)
        if not state.values or state.next:
            start = None if state.values else {
                "prompt": item["prompt"], "images": item["images"], "image_num": item["image_num"],
            }
            # "sync": an item killed in the middle of a step resumes at that step.
            graph.invoke(start, config, context=context, durability="sync")
            state = graph.get_state(config)
        return Document(**{key: state.values[key] for key in DOCUMENT_KEYS if key in state.values})

    def _score(self, scorer: Scorer, run: ItemRun) -> ItemScore:
        try:
            return scorer.score(run, self.store)
        except Exception as exc:  # noqa: BLE001 - a broken scorer loses its score, not the item
            return ItemScore(score=None, details={},
                             errors=[f"the {scorer.name} scorer failed: {describe_error(exc)}"])

    def _line(
        self, index: int, item: EvalItem, document: Document, scores: dict[str, ItemScore],
        started: float, *, error: str | None = None,
    ) -> ResultLine:
        return ResultLine(
            id=item["id"],
            index=index,
            protocol=self.protocol,
            status="error" if error else "ok",
            error=error,
            seconds=round(time.monotonic() - started, 3),
            item=item,
            document=document,
            scores=scores,
        )


@contextmanager
def _progress(console: Console, total: int, done: int) -> Iterator[Callable[[ResultLine], None]]:
    """A progress bar; the function it yields counts one finished item."""
    errors = 0
    with Progress(
        TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[errors]}"), TimeRemainingColumn(),
        console=console, transient=False,
    ) as progress:
        task = progress.add_task("eval", total=total, completed=done, errors="")

        def advance(line: ResultLine) -> None:
            nonlocal errors
            if line["status"] == "error":
                errors += 1
                progress.console.print(f"[red]item {line['id']}:[/] {line['error']}",
                                       highlight=False, soft_wrap=True)
            progress.update(task, advance=1,
                            errors=f"[red]{errors} failed[/]" if errors else "")

        yield advance
