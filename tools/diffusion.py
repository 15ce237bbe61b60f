"""Diffusion: synthesized images of imagined scenes."""

from __future__ import annotations

from llmi.tools.base import BackendFactory, BackendTool


class DiffusionTool(BackendTool):
    source = "diffusion"
    required_params = ("prompt",)
    setting = "diffusion_backend"
    guidance = (
        "imagined, creative or illustrative scenes that need not exist. "
        "params: {'prompt': a detailed text-to-image prompt}"
    )


diffusion = DiffusionTool()


def register_backend(name: str, factory: BackendFactory) -> None:
    diffusion.register(name, factory)
