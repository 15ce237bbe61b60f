"""Live progress of a run on the terminal: the draft as the planner writes it, then each slot."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llmi.tools.base import NOT_CONFIGURED

_STYLE = {"queued": "dim", "started": "yellow", "finished": "green", "failed": "red"}
_LABEL = {"queued": "queued", "started": "running", "finished": "done", "failed": "failed"}
_TEXT_LINES = 8
"""Lines of the draft's end that the live area shows while the planner writes."""
_REDRAW_S = 0.1
"""The least time between two redraws for new text, which comes a few characters at a time."""


class SlotProgress:
    """Shows each slot's state as a table on a terminal, or as one line per change elsewhere.

    On a terminal, the draft's last lines show above the table while the planner writes
    (each test-time-scaling candidate's, which draft at once, as a count of characters);
    elsewhere, one line says that it started writing.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.slots: dict[tuple[str, int], dict[str, Any]] = {}
        self.texts: dict[str, str] = {}
        """The draft so far of the planner (""), or of each candidate by its id."""
        self.notices: set[str] = set()
        """The notices printed so far: each is printed once a run."""
        self.unconfigured: set[str] = set()
        """The sources whose tool had no backend configured, explained so far."""
        self.drawn = 0.0
        self.live = Live(self._view(), console=console, auto_refresh=False) if console.is_terminal else None

    def __enter__(self) -> SlotProgress:
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.stop()

    def step(self, node: str, update: dict[str, Any] | None) -> None:
        """A node finished; the planner's update announces the slots."""
        if node in ("planner", "draft"):
            for candidate in (update or {}).get("candidates", [{"id": ""}]):
                self.texts.pop(candidate["id"], None)
            self._draw()
        if node == "planner" and update:
            for result in update.get("results", []):
                self.slot({**result, "status": "failed"})
            self.note(f"planner wrote {len(update.get('segments', []))} segments, "
                      f"{len(update.get('requests', [])) + len(update.get('results', []))} image slots")
        elif node in ("draft", "rank") and update:
            for candidate in update.get("candidates", []):
                self.note(_candidate_line(node, candidate))
        if isinstance(update, dict):
            for result in update.get("results") or []:
                if result.get("failure") == NOT_CONFIGURED:
                    self.explain_unconfigured(result)

    def explain_unconfigured(self, result: dict[str, Any]) -> None:
        """A slot failed because its tool has no backend: say once a run, for each tool,
        that its images are left out of the document and how to configure it."""
        source = result["source"]
        if source not in self.unconfigured:
            self.unconfigured.add(source)
            how = " ".join((result.get("error") or "").split())
            self.console.print(Text(f"{source} images are left out of the document: {how}",
                                    style="yellow"), soft_wrap=True)

    def event(self, event: dict[str, Any]) -> None:
        """A custom stream event of a node (see ``llmi.events``)."""
        kind = event.get("llmi")
        who = f"{event['candidate']} " if event.get("candidate") else ""
        if kind == "text":
            self.text(event)
        elif kind == "slot":
            self.slot(event)
        elif kind == "repair":
            self.note(f"{who}repair of image {event['slot']} ({event['kind']}): {event['tried']}")
        elif kind == "candidate":
            reward = f" (plan reward {event['reward']:.2f})" if event.get("reward") is not None else ""
            self.note(f"candidate {event['id']}: {event['status']}{reward}")
        elif kind == "notice":
            self.notice(event["text"])

    def notice(self, text: str) -> None:
        """Something the user should know about the whole run, such as a backend that makes
        its images without their references; each one once, whichever candidate said it."""
        if text not in self.notices:
            self.notices.add(text)
            self.console.print(Text(text), soft_wrap=True)

    def text(self, event: dict[str, Any]) -> None:
        who = event.get("candidate") or ""
        if who not in self.texts and not self.live:
            self.note(f"candidate {who}: writing its plan" if who else "the planner is writing")
        self.texts[who] = ("" if event.get("restart") else self.texts.get(who, "")) + event["text"]
        if time.monotonic() - self.drawn >= _REDRAW_S:
            self._draw()

    def slot(self, event: dict[str, Any]) -> None:
        self.slots[(event.get("candidate") or "", event["slot"])] = event
        if self.live:
            self._draw()
        else:
            self.console.print(self._line(event), highlight=False)

    def _draw(self) -> None:
        if self.live:
            self.live.update(self._view(), refresh=True)
            self.drawn = time.monotonic()

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    def _line(self, event: dict[str, Any]) -> str:
        status = event["status"]
        detail = _detail(event)
        seconds = f" {event['seconds']:.1f}s" if event.get("seconds") else ""
        who = f"{event['candidate']} " if event.get("candidate") else ""
        return (f"[{_STYLE[status]}]{who}image {event['slot']} {event['source']}: {_LABEL[status]}"
                f"{seconds}[/] {detail}")

    def _view(self) -> RenderableType:
        writing: list[RenderableType] = [
            Text(f"candidate {who}: writing its plan, {len(text):,} characters", style="dim")
            for who, text in sorted(self.texts.items()) if who]
        if "" in self.texts:
            writing.append(Panel(self._tail(self.texts[""]), title="the planner is writing",
                                 title_align="left", border_style="dim"))
        return Group(*writing, self._table())

    def _tail(self, text: str) -> Text:
        """The last lines of ``text`` as the live area's panel wraps them."""
        lines = Text(text[-self.console.width * _TEXT_LINES:]).wrap(self.console, self.console.width - 4)
        return Text("\n").join(lines[-_TEXT_LINES:])

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
