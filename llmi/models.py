"""The chat model behind the planner and the repairs."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from llmi.context import Context


class ModelNotConfigured(RuntimeError):
    """No chat model is configured for this run."""


def chat_model(ctx: Context) -> BaseChatModel:
    """An OpenAI-compatible chat model from the context: OpenAI, vLLM, SGLang or Ollama."""
    if not ctx.model:
        raise ModelNotConfigured(
            "no chat model is configured: set LLMI_MODEL (and OPENAI_BASE_URL for a "
            "local server such as vLLM or Ollama, OPENAI_API_KEY for a hosted one)"
        )
    return ChatOpenAI(
        model=ctx.model,
        base_url=ctx.base_url or None,
        # Local OpenAI-compatible servers accept any key, but the client insists on one.
        api_key=ctx.api_key or ("EMPTY" if ctx.base_url else None),
        temperature=ctx.temperature,
        timeout=ctx.model_timeout,
        max_retries=1,
    )
