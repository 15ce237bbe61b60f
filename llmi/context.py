"""Run configuration: the graphs' ``context_schema``.

Every field falls back to an environment variable, so the same graph runs from
the CLI, from LangGraph Studio and from code. Nodes read configuration from
the runtime context only; this module is the one place that reads the
environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _env(name: str, default: Any = None, *, secret: bool = False) -> Any:
    return field(default=None, repr=not secret, metadata={"env": name, "default": default})


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmi"


@dataclass(kw_only=True)
class Context:
    """Settings of one llmi run. ``None`` means: take the environment variable."""

    model: str | None = _env("LLMI_MODEL", "")
    """Chat model that writes the document (any OpenAI-compatible server)."""
    base_url: str | None = _env("OPENAI_BASE_URL", "")
    """Base URL of the OpenAI-compatible server: OpenAI, vLLM, SGLang, Ollama."""
    api_key: str | None = _env("OPENAI_API_KEY", "", secret=True)
    temperature: float | None = _env("LLMI_TEMPERATURE", 0.7)
    model_timeout: float | None = _env("LLMI_MODEL_TIMEOUT", 120.0)
    """Seconds to wait for one reply of the chat model."""
    search_backend: str | None = _env("LLMI_SEARCH", "")
    diffusion_backend: str | None = _env("LLMI_DIFFUSION", "")
    edit_backend: str | None = _env("LLMI_EDIT", "")
    max_images: int | None = _env("LLMI_MAX_IMAGES", 12)
    """Image tags past this many in one document become failed slots."""
    slot_timeout: float | None = _env("LLMI_SLOT_TIMEOUT", 180.0)
    """Seconds one image may take before its slot is failed."""
    max_parallel: int | None = _env("LLMI_MAX_PARALLEL", 16)
    """Image requests that run at the same time."""
    code_timeout: float | None = _env("LLMI_CODE_TIMEOUT", 20.0)
    code_memory_mb: int | None = _env("LLMI_CODE_MEMORY_MB", 2048)
    repair_rounds: int | None = _env("LLMI_REPAIR_ROUNDS", 2)
    artifact_dir: str | None = _env("LLMI_ARTIFACTS", str(default_cache_dir() / "artifacts"))
    """Folder of the content-addressed artifact store."""
    out_dir: str | None = _env("LLMI_OUT", "llmi-out")
    """Folder the assembler writes the document into."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) is None:
                raw = os.environ.get(f.metadata["env"])
                default = f.metadata["default"]
                setattr(self, f.name, default if raw in (None, "") else _coerce(raw, default))


def _coerce(raw: str, like: Any) -> Any:
    if isinstance(like, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(raw)
    if isinstance(like, float):
        return float(raw)
    return raw


def env_name(field_name: str) -> str:
    """The environment variable a field falls back to."""
    return {f.name: f.metadata["env"] for f in fields(Context)}[field_name]


def context_of(runtime: Any) -> Context:
    """The run's context, or one built from the environment when none was given."""
    ctx = getattr(runtime, "context", None)
    return ctx if isinstance(ctx, Context) else Context(**(ctx or {}))
