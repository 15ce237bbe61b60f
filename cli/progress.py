"""Live progress of a run, per slot, on the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

_STYLE = {"queued": "dim", "started": "yellow", "finished": "green", "failed": "red"}
_LABEL = {"queued": "queued", "started": "running", "finished": "done", "failed": "failed"}


class SlotProgress:
    """Shows each slot's state as a table on a terminal, or as one line per change elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.slots: dict[tuple[str, int], dict[str, Any]] = {}
        self.live = Live(self._table(), console=console, auto_refresh=False) if console.is_terminal else None

    def __enter__(self) -> SlotProgress:
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.stop()

    def step(self, node: str, update: dict[str, Any] | None) -> None:
        """A node finished; the planner's update announces the slots."""
        if node == "planner" and update:
            for result in update.get("results", []):
                self.slot({**result, "status": "failed"})
            self.note(f"planner wrote {len(update.get('segments', []))} segments, "
                      f"{len(update.get('requests', [])) + len(update.get('results', []))} image slots")
        elif node in ("draft", "rank") and update:
            for candidate in update.get("candidates", []):
                self.note(_candidate_line(node, candidate))

    def event(self, event: dict[str, Any]) -> None:
        """A custom stream event of a node (see ``llmi.events``)."""
        kind = event.get("llmi")
        who = f"{event['candidate']} " if event.get("candidate") else ""
        if kind == "slot":
            self.slot(event)
        elif kind == "repair":
            self.note(f"{who}repair of image {event['slot']} ({event['kind']}): {event['tried']}")
        elif kind == "candidate":
            reward = f" (plan reward {event['reward']:.2f})" if event.get("reward") is not None else ""
            self.note(f"candidate {event['id']}: {event['status']}{reward}")

    def slot(self, event: dict[str, Any]) -> None:
        self.slots[(event.get("candidate") or "", event["slot"])] = event
        if self.live:
            self.live.update(self._table(), refresh=True)
        else:
            self.console.print(self._line(event), highlight=False)

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    def _line(self, event: dict[str, Any]) -> str:
        status = event["status"]
        detail = _detail(event)
        seconds = f" {event['seconds']:.1f}s" if event.get("seconds") else ""
        who = f"{event['candidate']} " if event.get("candidate") else ""
        return (f"[{_STYLE[status]}]{who}image {event['slot']} {event['source']}: {_LABEL[status]}"
                f"{seconds}[/] {detail}")

    def _table(self) -> Table:
        table = Table("candidate", "image", "source", "status", "time", "detail", expand=True)
        for key in sorted(self.slots):
            event = self.slots[key]
            slot = event["slot"]
            status = event["status"]
            detail = _detail(event)
            seconds = f"{event['seconds']:.1f}s" if event.get("seconds") else ""
            table.add_row(key[0], str(slot), event["source"], f"[{_STYLE[status]}]{_LABEL[status]}[/]",
                          seconds, detail)
        return table


def _candidate_line(node: str, candidate: dict[str, Any]) -> str:
    name = f"candidate {candidate['id']}"
    if node == "draft":
        if candidate.get("error"):
            return f"{name}: planning failed: {candidate['error']}"
        temperature = candidate["sampling"]["temperature"]
        return f"{name}: planned (temperature {'default' if temperature is None else temperature})"
    return f"{name}: reward {(candidate.get('scores') or {}).get('reward', 0):.2f}"


def _detail(event: dict[str, Any]) -> str:
    """The description, or for a failure the error's last line (a traceback's exception)."""
    if event["status"] != "failed":
        return event.get("description") or ""
    lines = (event.get("error") or "").strip().splitlines()
    return lines[-1] if lines else ""
