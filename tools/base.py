"""The interface every image tool implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from llmi.context import Context, env_name
from llmi.state import ImageRequest


NOT_CONFIGURED = "config"
"""The ``kind`` of a ToolError whose tool has no backend configured (``NotConfigured``)."""
INFRASTRUCTURE_KINDS = frozenset({NOT_CONFIGURED, "quota", "timeout"})


class ToolError(Exception):
    """A tool could not make its image; the message says why, for the slot.

    ``kind`` names the failure for programs: ``config`` (no backend, no key),
    ``quota``, ``http``, ``timeout``, ``unsafe_url``, ``too_large``, ``too_small``,
    ``not_image``, ``no_result``, ``backend``. ``transient`` failures (time-outs, 429, 5xx) are worth retrying.
    """

    def __init__(self, reason: str, *, kind: str = "backend", transient: bool = False) -> None:
        super().__init__(reason)
        self.kind = kind
        self.transient = transient

    @property
    def infrastructure(self) -> bool:
        """The tool's service failed (down, refused, out of quota, too slow, not
        configured) rather than the request: no fault of the document's."""
        return self.transient or self.kind in INFRASTRUCTURE_KINDS


class NotConfigured(ToolError):
    """The tool has no backend; the message says how to configure one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, kind=NOT_CONFIGURED)


@dataclass(frozen=True)
class ToolCall:
    """Everything a tool gets for one request."""

    request: ImageRequest
    context: Context
    deadline_s: float
    """Seconds the tool has for this request."""
    source_image: bytes | None = None
    """For edits: the bytes of the image being edited."""
    references: tuple[bytes, ...] = ()
    """The bytes of the images whose subject or style the new image keeps (the request's
    ``refs``), in the order of ``refs``. A backend that cannot use them makes the image
    without them and says so in its provenance (``without_references``)."""


@dataclass(frozen=True)
class ToolOutput:
    data: bytes
    """Encoded image (PNG, JPEG, WebP or GIF)."""
    backend: str
    provenance: dict[str, Any] = field(default_factory=dict)


REFERENCES_IGNORED = "references_ignored"
"""Provenance key of an image made without the references its request had: why."""


def without_references(reason: str) -> dict[str, Any]:
    """Provenance of an image its backend made without the request's references, because
    ``reason`` ("dall-e-3 takes no reference images"). Dispatch tells the user once a run."""
    return {REFERENCES_IGNORED: reason}


@runtime_checkable
class ImageTool(Protocol):
    """Makes one image for one request. Called from worker threads."""

    source: str
    """The tag's ``source`` value this tool answers to."""
    required_params: tuple[str, ...]
    """Keys a tag's ``params`` must hold; the parser checks them."""
    guidance: str
    """One line for the planner's prompt: when to use this source, and its params.

    A tool may also have ``takes_references = True``: its tags may carry ``refs``, and its
    calls get the referenced images (``ToolCall.references``)."""

    def __call__(self, call: ToolCall) -> ToolOutput: ...


class CacheRules(Protocol):
    """What an ``ImageTool`` may add so that the tool cache reuses its images.

    The cache keys a request on its source, the tool's class, the image it edits (if any)
    and what ``cache_settings`` returns. A tool without rules is not cached, unless it
    serves a built-in source: then it follows that source's rules, as a stand-in should.

    The request's params join the key as they are, unless the tool has a class attribute
    ``params_in_cache_key = False``: the built-in tools say so, because their settings
    hold the params that decide the image (an edit's ``img_index`` does not: the image it
    points at does).
    """

    def cache_settings(self, context: Context, request: ImageRequest) -> dict[str, Any] | None:
        """JSON-able values that decide the request's image (a backend, a model, a size,
        the seed that applies), never a secret; None when its image must not be reused."""


Backend = Callable[[ToolCall], ToolOutput]
BackendFactory = Callable[[str], Backend]
"""Builds a backend from the part of the setting after ``name:``."""


class BackendTool:
    """A tool whose work is done by a backend chosen by one context setting.

    The setting reads ``name`` or ``name:argument``, for example
    ``diffusers:stabilityai/sdxl-turbo``; backends register under a name.
    """

    source: str
    required_params: tuple[str, ...]
    guidance: str
    setting: str
    """Name of the Context field that picks the backend."""

    def __init__(self, backends: Mapping[str, BackendFactory] | None = None) -> None:
        self.backends: dict[str, BackendFactory] = dict(backends or {})

    def register(self, name: str, factory: BackendFactory) -> None:
        self.backends[name] = factory

    def __call__(self, call: ToolCall) -> ToolOutput:
        return self.backend(call.context)(call)

    def choice(self, context: Context) -> str:
        """The backend setting, ``name`` or ``name:argument``."""
        return getattr(context, self.setting) or ""

    def backend(self, context: Context) -> Backend:
        name, _, argument = self.choice(context).partition(":")
        if not name:
            raise NotConfigured(f"no {self.source} backend is configured: {self.how_to_configure()}")
        if name not in self.backends:
            raise NotConfigured(f"unknown {self.source} backend {name!r}: {self.how_to_configure()}")
        return self.backends[name](argument)

    def how_to_configure(self) -> str:
        setting = env_name(self.setting)
        if self.backends:
            return f"set {setting} to one of {', '.join(sorted(self.backends))}"
        return (
            f"register one with llmi.tools.{self.source}.register_backend(name, factory) "
            f"and set {setting}=name"
        )
