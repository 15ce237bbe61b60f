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

from llmi.errors import LlmiError


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
    """The planner's temperature (repairs and polish use it too); negative sends none, so
    the model's default applies. Models that take only their default are sent none."""
    max_tokens: int | None = _env("LLMI_MAX_TOKENS", 0)
    """Most tokens one reply of the planner's model may have, reasoning included; 0 sends
    no limit, so the server's default applies."""
    model_timeout: float | None = _env("LLMI_MODEL_TIMEOUT", 120.0)
    """Seconds the chat model may be silent, on each try: before its reply starts, and
    between two pieces of a streamed reply (the planner's), so a streamed reply may take
    longer; a reply read whole must come within it."""
    model_retries: int | None = _env("LLMI_MODEL_RETRIES", 2)
    """Tries after the first of a chat model request that failed for a passing reason (no
    connection, no reply in time, HTTP 408, 409, 429 or 5xx), with the openai client's
    backoff; a refusal for exhausted quota is not tried again."""
    search_backend: str | None = _env("LLMI_SEARCH", "")
    """``tavily`` or ``library``; empty picks the library when one is set, else Tavily with a key."""
    tavily_api_key: str | None = _env("TAVILY_API_KEY", "", secret=True)
    tavily_base_url: str | None = _env("LLMI_TAVILY_BASE_URL", "https://api.tavily.com")
    image_library: str | None = _env("LLMI_IMAGE_LIBRARY", "")
    """Folder of captioned images that the ``library`` search backend ranks."""
    search_candidates: int | None = _env("LLMI_SEARCH_CANDIDATES", 5)
    """Image results of a search that are tried, best first."""
    allow_private_hosts: str | None = _env("LLMI_ALLOW_PRIVATE_HOSTS", "")
    """Comma-separated ``host`` or ``host:port`` entries downloads may reach although private."""
    download_max_bytes: int | None = _env("LLMI_DOWNLOAD_MAX_BYTES", 20_000_000)
    download_timeout: float | None = _env("LLMI_DOWNLOAD_TIMEOUT", 20.0)
    """Seconds one image download may take in all."""
    connect_timeout: float | None = _env("LLMI_CONNECT_TIMEOUT", 5.0)
    """Seconds to connect, and between two reads, of one download."""
    min_image_side: int | None = _env("LLMI_MIN_IMAGE_SIDE", 256)
    """Downloaded images whose shorter side is smaller are rejected."""
    max_input_pixels: int | None = _env("LLMI_MAX_INPUT_PIXELS", 2048 * 2048)
    """Input images of more pixels are scaled down to this many (aspect kept) as they are
    taken in; 0 keeps them as they come. Nothing downstream uses more: OpenAI's vision
    models fit every image into 2048x2048 before they read it, and edit models work at
    about one megapixel (Qwen-Image-Edit resizes its input to about 1024x1024, FLUX.1
    Kontext's resolutions are about one megapixel, gpt-image's largest size is 1536x1024).
    An edit comes back at its source's size, so a 48-megapixel photo would otherwise be
    edited into a 48-megapixel image."""
    diffusion_backend: str | None = _env("LLMI_DIFFUSION", "")
    """``diffusers:<model id or path>`` or ``openai:<model>``."""
    edit_backend: str | None = _env("LLMI_EDIT", "")
    """``diffusers:<model id or path>`` or ``openai:<model>``."""
    images_base_url: str | None = _env("LLMI_IMAGES_BASE_URL", "")
    """Base URL of the OpenAI-compatible images API; empty falls back to ``base_url``."""
    edit_base_url: str | None = _env("LLMI_EDIT_BASE_URL", "")
    """Base URL of the images API that edits (a server of its own, as vLLM-Omni serves one
    model per server); empty falls back to ``images_base_url``."""
    edit_api_key: str | None = _env("LLMI_EDIT_API_KEY", "", secret=True)
    """Key of the edit server; empty falls back to ``api_key``."""
    image_size: str | None = _env("LLMI_IMAGE_SIZE", "")
    """Size of generated images, ``WxH``; empty leaves it to the backend: a diffusers
    pipeline's native size (512x512 for SD 1.5, 1024x1024 for SDXL or Flux), the images
    API's own default size."""
    edit_size: str | None = _env("LLMI_EDIT_SIZE", "")
    """Size of edited images, ``WxH``; empty keeps the source image's size."""
    diffusion_steps: int | None = _env("LLMI_DIFFUSION_STEPS", 0)
    """Denoising steps; 0 keeps the pipeline's default."""
    diffusion_guidance: float | None = _env("LLMI_DIFFUSION_GUIDANCE", -1.0)
    """Guidance scale; negative keeps the pipeline's default."""
    seed: int | None = _env("LLMI_SEED", -1)
    """Seed of the first image; negative draws one. The seed used is recorded."""
    device: str | None = _env("LLMI_DEVICE", "")
    """Torch device for diffusers; empty picks CUDA, then Apple MPS, then CPU."""
    max_images: int | None = _env("LLMI_MAX_IMAGES", 12)
    """Image tags past this many in one document become failed slots."""
    slot_timeout: float | None = _env("LLMI_SLOT_TIMEOUT", 180.0)
    """Seconds one image may take before its slot is failed."""
    max_parallel: int | None = _env("LLMI_MAX_PARALLEL", 16)
    """Image requests that run at the same time."""
    early_tools: bool | None = _env("LLMI_EARLY_TOOLS", True)
    """Start each cacheable image request as its tag closes in the planner's streamed
    draft, before the draft ends (see ``llmi.tools.early``); 0 waits for the whole draft."""
    review: bool | None = _env("LLMI_REVIEW", False)
    """Stop after planning, before any tool runs, for a person to accept, edit or drop the
    plan's images (``llmi.nodes.review``); no tool starts early."""
    consistency: str | None = _env("LLMI_CONSISTENCY", "auto")
    """How images of one subject are kept alike: ``auto`` links the slots that show the
    same subject with one model call after planning, and makes each later image of a
    subject from its first (``llmi.nodes.subjects``); ``tags`` uses only the ``refs`` the
    tags carry; ``off`` makes every image on its own."""
    ip_adapter: str | None = _env("LLMI_IP_ADAPTER", "")
    """IP-Adapter weights that let a Stable Diffusion or SDXL pipeline take reference
    images: ``<model id or path>[:<subfolder>[:<weight file>]]``, for example
    ``h94/IP-Adapter:models:ip-adapter_sd15.bin``; empty: such pipelines take none."""
    code_timeout: float | None = _env("LLMI_CODE_TIMEOUT", 20.0)
    code_memory_mb: int | None = _env("LLMI_CODE_MEMORY_MB", 2048)
    code_sandbox: str | None = _env("LLMI_CODE_SANDBOX", "strict")
    """``strict``: chart code runs only in a jail of its own namespaces (bubblewrap);
    ``process``: process limits alone where no jail can be had; ``off``: trusted code."""
    bwrap: str | None = _env("LLMI_BWRAP", "")
    """The bubblewrap binary of the chart jail; empty takes ``bwrap`` on PATH."""
    code_pool: bool | None = _env("LLMI_CODE_POOL", True)
    """Fork each chart's process from a warm one with the libraries imported; 0 starts a
    fresh interpreter per chart."""
    repair_rounds: int | None = _env("LLMI_REPAIR_ROUNDS", 2)
    planner_prompt: str | None = _env("LLMI_PLANNER_PROMPT", "llmi")
    """The planner's system prompt: ``llmi``, llmi's own, or ``llm-i``, LLM-I's training
    prompt as published, for models trained by LLM-I (``llmi eval --protocol llm-i``)."""
    judge_model: str | None = _env("LLMI_JUDGE_MODEL", "")
    """Text judge: scores a draft's text and tags; empty leaves those scores unknown."""
    vision_judge_model: str | None = _env("LLMI_VISION_JUDGE_MODEL", "")
    """Vision judge: scores the images, and checks each image against its text."""
    judge_temperature: float | None = _env("LLMI_JUDGE_TEMPERATURE", 0.0)
    """The text judge's temperature; negative sends none (the model's default)."""
    judge_max_tokens: int | None = _env("LLMI_JUDGE_MAX_TOKENS", 0)
    """Most tokens one reply of the text judge may have; 0 sends no limit."""
    vision_judge_temperature: float | None = _env("LLMI_VISION_JUDGE_TEMPERATURE", 0.0)
    """The vision judge's temperature; negative sends none (the model's default)."""
    vision_judge_max_tokens: int | None = _env("LLMI_VISION_JUDGE_MAX_TOKENS", 0)
    """Most tokens one reply of the vision judge may have; 0 sends no limit."""
    judge_base_url: str | None = _env("LLMI_JUDGE_BASE_URL", "")
    """Server of the judges; empty falls back to ``base_url``."""
    reward_weights: str | None = _env("LLMI_REWARD_WEIGHTS", "0.2,0.3,0.5")
    """Weights of the image-count, vision and text scores in the reward."""
    text_judge_weights: str | None = _env("LLMI_TEXT_JUDGE_WEIGHTS", "1.4,0.6")
    """Weights of the text judge's text and image scores in the text score: LLM-I's
    recipe for LLMs; its recipe for MLLMs uses ``1.5,0.5``."""
    candidates: int | None = _env("LLMI_CANDIDATES", 1)
    """Candidate documents test-time scaling samples."""
    keep: int | None = _env("LLMI_KEEP", 1)
    """Candidates that survive the plan screening and run their tools."""
    artifact_dir: str | None = _env("LLMI_ARTIFACTS", str(default_cache_dir() / "artifacts"))
    """Folder of the content-addressed artifact store."""
    out_dir: str | None = _env("LLMI_OUT", "llmi-out")
    """Folder the assembler writes the document into."""
    tool_cache: bool | None = _env("LLMI_TOOL_CACHE", True)
    """Reuse the image of an identical earlier tool request (see ``llmi.tools.cache``); 0 turns it off."""
    checkpoint_url: str | None = _env("LLMI_CHECKPOINT_URL", "", secret=True)
    """Where the CLI checkpoints runs: a ``postgresql://`` URL, or a SQLite file (a path or
    ``sqlite:///path``); empty is ``checkpoints.sqlite`` in the cache folder."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) is None:
                raw = os.environ.get(f.metadata["env"])
                default = f.metadata["default"]
                value = default if raw in (None, "") else _coerce(f.metadata["env"], raw, default)
                setattr(self, f.name, value)


class SettingError(LlmiError, ValueError):
    """An environment variable holds a value its setting cannot take."""

    def __init__(self, name: str, raw: str, expected: str) -> None:
        super().__init__(f"{name}={raw!r} is not {expected}",
                         f"set {name} to a value of that kind, or unset it for the default")
        self.name = name


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}


def _coerce(name: str, raw: str, like: Any) -> Any:
    text = raw.strip()
    try:
        if isinstance(like, bool):
            return _BOOLEANS[text.lower()]
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
    except (KeyError, ValueError):
        expected = {bool: "one of 1, true, yes, on, 0, false, no, off", int: "a whole number",
                    float: "a number"}[type(like)]
        raise SettingError(name, raw, expected) from None
    return raw


AUTO, TAGS, OFF = "auto", "tags", "off"
CONSISTENCY = (AUTO, TAGS, OFF)
"""The values of the context's ``consistency``."""


def consistency_of(ctx: Context) -> str:
    """The context's ``consistency``; SettingError names its variable and values."""
    if ctx.consistency not in CONSISTENCY:
        raise SettingError(env_name("consistency"), str(ctx.consistency),
                           f"one of {', '.join(CONSISTENCY)}")
    return ctx.consistency


def env_name(field_name: str) -> str:
    """The environment variable a field falls back to."""
    return {f.name: f.metadata["env"] for f in fields(Context)}[field_name]


def context_of(runtime: Any) -> Context:
    """The run's context, or one built from the environment when none was given."""
    ctx = getattr(runtime, "context", None)
    return ctx if isinstance(ctx, Context) else Context(**(ctx or {}))
