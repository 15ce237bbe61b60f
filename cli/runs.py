"""What the CLI remembers of a run, to resume it with the settings it started with.

Every checkpoint of a CLI run carries, in its metadata under ``llmi_run``, the settings it
was started with (``RunSettings``: which graph, candidates and keep, the output and
artifact folders, the tool cache switch, plan review), so that ``llmi resume ID`` and
``llmi revise ID`` rebuild the same graph and context.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, get_args

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from llmi.context import Context
from llmi.graphs import GraphName, graph_for

METADATA_KEY = "llmi_run"


@dataclass(frozen=True)
class RunSettings:
    """The CLI settings a run started with, kept with its checkpoints."""

    graph: GraphName
    candidates: int
    keep: int
    out_dir: str
    """Absolute, so a run resumed from another folder writes where it would have."""
    artifact_dir: str
    tool_cache: bool
    model: str = ""
    """``recorded`` for the offline demo; empty for the model the environment names."""
    review: bool = False
    """The run stops after planning for its plan's review (``generate --review``)."""
    formats: tuple[str, ...] = ("md", "html")
    """The document's files the run prints when it ends, made when missing
    (``generate --format``: ``pdf`` and ``docx`` by ``llmi.export``)."""

    @classmethod
    def of(cls, ctx: Context, *, model: str = "",
           formats: tuple[str, ...] = ("md", "html")) -> RunSettings:
        return cls(
            graph=graph_for(ctx.candidates),
            candidates=ctx.candidates,
            keep=ctx.keep,
            out_dir=str(Path(ctx.out_dir).expanduser().resolve()),
            artifact_dir=str(Path(ctx.artifact_dir).expanduser().resolve()),
            tool_cache=bool(ctx.tool_cache),
            model=model,
            review=bool(ctx.review),
            formats=tuple(formats),
        )

    def context(self, **overrides: Any) -> Context:
        """The run's context: these settings, the rest from the environment; the demo's
        with the demo's offline tools."""
        values = {name: getattr(self, name) for name in
                  ("candidates", "keep", "out_dir", "artifact_dir", "tool_cache", "review")}
        ctx = Context(**(values | overrides))
        if self.model == "recorded":
            from llmi.cli.demo import with_demo_tools

            ctx = with_demo_tools(ctx)
        return ctx

    def metadata(self) -> dict[str, str]:
        """For ``config["metadata"]``: LangGraph keeps only plain values there, so JSON text."""
        return {METADATA_KEY: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: Any) -> RunSettings | None:
        try:
            raw = json.loads((metadata or {})[METADATA_KEY])
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in raw.items() if k in known}
            if "formats" in values:  # JSON has lists only
                values["formats"] = tuple(values["formats"])
            settings = cls(**values)
        except (KeyError, TypeError, ValueError):
            return None
        return settings if settings.graph in get_args(GraphName) else None


def settings_of(saved: CheckpointTuple, ctx: Context) -> RunSettings:
    """The settings a thread was started with; for a thread without them (started by
    another program), a guess from its state and the environment."""
    found = RunSettings.from_metadata(saved.metadata)
    if found is not None:
        return found
    values = (saved.checkpoint.get("channel_values") or {})
    guessed = RunSettings.of(ctx)
    graph = "tts" if "candidates" in values else "document"
    return RunSettings(**(asdict(guessed) | {"graph": graph}))


def saved_settings(saver: BaseCheckpointSaver, thread: str, env: Context, *,
                   out: Path | None, no_cache: bool) -> RunSettings:
    """The settings run ``thread`` started with, writing into ``out`` when given and without
    the tool cache with ``no_cache``; a CliError for a run the checkpoints do not hold."""
    from llmi.checkpoints import describe, latest
    from llmi.cli.commands import CliError

    saved = latest(saver, thread)
    if saved is None:
        raise CliError(f"no run {thread} in the checkpoints ({describe(env.checkpoint_url)})",
                       "use the ID `llmi generate` printed when the run started; "
                       "LLMI_CHECKPOINT_URL names the checkpoint store it used")
    settings = settings_of(saved, env)
    if out:
        settings = replace(settings, out_dir=str(out))
    if no_cache:
        settings = replace(settings, tool_cache=False)
    return settings
