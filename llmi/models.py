"""The chat models behind the planner, the repairs and the judges."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from llmi.context import Context


class ModelNotConfigured(RuntimeError):
    """No chat model is configured for this run."""


def chat_model(
    ctx: Context, *, temperature: float | None = None, seed: int | None = None
) -> BaseChatModel:
    """The planner's OpenAI-compatible chat model: OpenAI, vLLM, SGLang or Ollama.

    ``temperature`` and ``seed`` override the context's sampling (test-time scaling
    samples each candidate differently).
    """
    if not ctx.model:
        raise ModelNotConfigured(
            "no chat model is configured: set LLMI_MODEL (and OPENAI_BASE_URL for a "
            "local server such as vLLM or Ollama, OPENAI_API_KEY for a hosted one)"
        )
    return _openai(ctx, ctx.model, ctx.base_url,
                   ctx.temperature if temperature is None else temperature, seed)


def judge_model(ctx: Context, *, vision: bool = False) -> BaseChatModel | None:
    """The text judge, or with ``vision`` the vision judge; None when not configured."""
    name = ctx.vision_judge_model if vision else ctx.judge_model
    if not name:
        return None
    return _openai(ctx, name, ctx.judge_base_url or ctx.base_url, 0.0, None)


def _openai(
    ctx: Context, model: str, base_url: str | None, temperature: float, seed: int | None
) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=base_url or None,
        # Local OpenAI-compatible servers accept any key, but the client insists on one.
        api_key=ctx.api_key or ("EMPTY" if base_url else None),
        temperature=temperature,
        seed=seed,
        timeout=ctx.model_timeout,
        max_retries=1,
    )
