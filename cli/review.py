"""A run that stops at its plan for review (``llmi generate --review``), on the command line.

On a terminal (stdin and stdout both), the plan is shown, and the user accepts it, edits it
as JSON in ``$EDITOR`` (then ``$VISUAL``, ``vi``, ``nano``), or quits, leaving the run to
resume. Elsewhere, the plan is written to ``DIR/plan.json`` (DIR: the run's output folder)
and the command says how to go on: ``llmi resume RUN_ID --plan DIR/plan.json``, after
editing the file or not. Either way the run waits, checkpointed, and the command exits
with ``WAITING``. ``llmi.plans`` says what an edit may change.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.prompt import Prompt
from rich.syntax import Syntax
from rich.text import Text

from llmi.artifacts import OUTPUT_MODE, write_atomic
from llmi.errors import LlmiError
from llmi.plans import ACCEPT, PlanError, ReviewPlan, read_edit

WAITING = 3
"""The exit status of a command that leaves its run waiting for the plan's review."""
PLAN_FILE = "plan.json"
_EDITORS = ("vi", "nano")


class PlanFileError(LlmiError):
    """A plan file that cannot be read, or an editor that cannot be started."""


def on_terminal() -> bool:
    """Whether a person can answer here: stdin and stdout are both terminals."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def review(plan: ReviewPlan, console: Console, *, thread_id: str, out_dir: str) -> Any | None:
    """The answer to resume the run with, or None when the run is left waiting (the plan
    written to a file, or the user quit) and the command has said how to go on."""
    if on_terminal():
        answer = TerminalReview(console).ask(plan)
        if answer is not None:
            return answer
        console.print(f"the run waits for its plan: `llmi resume {thread_id}` shows it again",
                      highlight=False, soft_wrap=True)
        return None
    path = write_plan(plan, out_dir)
    problems = plan.get("errors") or []
    for problem in problems:
        console.print(f"[red]{problem}[/]", highlight=False, soft_wrap=True)
    console.print(f"the run waits for its plan, written to {path}; edit it or not, then "
                  f"continue with `llmi resume {thread_id} --plan {path}`",
                  highlight=False, soft_wrap=True)
    return None


def write_plan(plan: ReviewPlan, out_dir: str) -> Path:
    path = Path(out_dir).expanduser().resolve() / PLAN_FILE
    write_atomic(path, plan_text(plan).encode("utf-8"), mode=OUTPUT_MODE)
    return path


def plan_text(plan: ReviewPlan) -> str:
    """The plan as its file holds it; the errors of an earlier edit are not part of it."""
    return json.dumps({key: value for key, value in plan.items() if key != "errors"},
                      indent=2, ensure_ascii=False) + "\n"


def read_plan_file(path: str, shown: ReviewPlan) -> Any:
    """The edited plan in the file at ``path``, checked against the plan ``shown``;
    PlanFileError or PlanError (every problem, with its slot) when it cannot be used."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFileError(f"cannot read the plan file {path}: {exc.strerror}",
                            "pass the plan.json the run wrote, or a copy of it") from None
    except UnicodeDecodeError:
        raise PlanFileError(f"the plan file {path} is not UTF-8 text",
                            "save it as UTF-8 JSON") from None
    try:
        edited = json.loads(text)
    except ValueError as exc:
        raise PlanFileError(f"the plan file {path} is not JSON: {exc}",
                            "fix the JSON, or write the plan again with "
                            "`llmi resume RUN_ID` and edit that") from None
    read_edit(edited, shown)
    return edited


class TerminalReview:
    """The plan on a terminal: shown, then accepted, edited in an editor, or left."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def ask(self, plan: ReviewPlan) -> Any | None:
        """The plan as accepted or edited; None when the user quits."""
        self.console.print(plan_view(plan))
        text = plan_text(plan)
        while True:
            choice = Prompt.ask("[bold]accept the plan, edit it, or quit?[/]",
                                choices=["accept", "edit", "quit"], default="accept",
                                console=self.console)
            if choice == "accept":
                return ACCEPT
            if choice == "quit":
                return None
            text = edited_in_editor(text)
            try:
                read_edit(text, plan)
            except PlanError as exc:
                self.console.print(problems_view(exc.problems))
                continue
            return json.loads(text)


def plan_view(plan: ReviewPlan) -> RenderableType:
    """Each image of the plan with the text around it, failed tags, and any problems."""
    parts: list[RenderableType] = []
    if plan.get("candidate"):
        parts.append(Text(f"the plan of candidate {plan['candidate']}, which screening kept",
                          style="bold"))
    if plan.get("errors"):
        parts.append(problems_view(plan["errors"]))
    for slot in plan["slots"]:
        body: list[RenderableType] = []
        if slot.get("before"):
            body.append(Text(slot["before"], style="dim italic"))
        body.append(Text(slot["description"] or "(no description)", style="bold"))
        body.append(Syntax(json.dumps(slot["params"], indent=2, ensure_ascii=False), "json",
                           word_wrap=True, background_color="default"))
        if slot.get("after"):
            body.append(Text(slot["after"], style="dim italic"))
        parts.append(Panel(Group(*body), title=f"image {slot['index']}: {slot['source']}",
                           title_align="left"))
    for failed in plan["failed"]:
        parts.append(Panel(Text(failed["error"]), title=f"image {failed['index']}: tag failed",
                           title_align="left", border_style="red"))
    parts.append(Text("edit: change a slot's source, description or params; delete a slot's "
                      "entry to drop its image", style="dim"))
    return Group(*parts)


def problems_view(problems: list[str]) -> RenderableType:
    return Panel(Text("\n".join(problems)), title="the edited plan cannot be used",
                 title_align="left", border_style="red")


def edited_in_editor(text: str) -> str:
    """``text`` after the user edited it in their editor."""
    with tempfile.TemporaryDirectory(prefix="llmi-plan-") as folder:
        path = Path(folder) / PLAN_FILE
        path.write_text(text, encoding="utf-8")
        try:
            subprocess.run([*editor_command(), str(path)], check=False)
        except OSError as exc:
            raise PlanFileError(f"cannot start the editor: {exc.strerror}",
                                "set EDITOR to an editor on your PATH") from None
        return path.read_text(encoding="utf-8")


def editor_command() -> list[str]:
    """The user's editor: ``$EDITOR``, ``$VISUAL``, then ``vi`` or ``nano``."""
    for name in ("EDITOR", "VISUAL"):
        if os.environ.get(name, "").strip():
            return shlex.split(os.environ[name])
    for editor in _EDITORS:
        if shutil.which(editor):
            return [editor]
    raise PlanFileError("no editor found: EDITOR and VISUAL are not set, and neither vi nor "
                        "nano is on PATH", "set EDITOR, for example EDITOR=nano")
