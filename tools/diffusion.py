"""Diffusion: synthesized images of imagined scenes."""

from __future__ import annotations

from typing import Any

from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools.base import Backend, BackendFactory, BackendTool
from llmi.tools.images_api import images_server, openai_generate
from llmi.tools.synthesis import synthesis_settings


def diffusers_backend(argument: str) -> Backend:
    # Imported on use: torch and diffusers are an optional extra, and slow to import.
    from llmi.tools.pipelines import text_to_image

    return text_to_image(argument)


class DiffusionTool(BackendTool):
    source = "diffusion"
    required_params = ("prompt",)
    setting = "diffusion_backend"
    guidance = (
        "imagined, creative or illustrative scenes that need not exist. "
        "params: {'prompt': a detailed text-to-image prompt}"
    )
    params_in_cache_key = False
    takes_references = True

    def cache_settings(self, context: Context, request: ImageRequest) -> dict[str, Any] | None:
        """The prompt, the backend, the images server, the size, steps, guidance and the
        seed that applies; None when the seed is drawn."""
        return synthesis_settings(request, context, self.choice(context),
                                  images_server(context, edit=False))

    def how_to_configure(self) -> str:
        return (
            "set LLMI_DIFFUSION=diffusers:<text-to-image model id or path> for a local pipeline, "
            "or LLMI_DIFFUSION=openai:<model> for an OpenAI-compatible images API"
        )


diffusion = DiffusionTool({"diffusers": diffusers_backend, "openai": openai_generate})


def register_backend(name: str, factory: BackendFactory) -> None:
    diffusion.register(name, factory)
