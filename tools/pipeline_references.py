"""Reference images on local diffusers pipelines: what of a pipeline call they become.

- ``QwenImageEditPlusPipeline`` takes several images: a new image is drawn from the
  references (``image=[...]``), an edit from its source and them (``image=[source, ...]``).
- ``FluxKontextPipeline`` and ``QwenImageEditPipeline`` take one image: a new image is drawn
  from the first reference; an edit works on its source alone.
- The Qwen-Image-Edit pipelines cannot draw without an image: a new image without
  references is drawn on a blank white canvas of the size asked, and provenance says so.
- Stable Diffusion and SDXL pipelines (those with diffusers' ``IPAdapterMixin``) take them
  through IP-Adapter when ``LLMI_IP_ADAPTER`` names its weights: loaded once with the
  pipeline, the references go in as ``ip_adapter_image``.
- Any other pipeline makes the image without them and says so (``without_references``).

The IP-Adapter setting reads ``<model id or path>[:<subfolder>[:<weight file>]]``. Left out,
the subfolder and file are those of h94/IP-Adapter for the pipeline's family:
``models/ip-adapter_sd15.safetensors`` for Stable Diffusion, ``sdxl_models/ip-adapter_sdxl
.safetensors`` for SDXL; an empty subfolder (``path::file``) is the folder itself. The image
encoder is read from ``image_encoder`` inside the subfolder, as ``load_ip_adapter`` reads it,
except for h94's SDXL adapters made for ViT-H (``sdxl_models/*vit-h*``), whose encoder is the
one in ``models/image_encoder``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from diffusers import FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline
from diffusers.loaders import IPAdapterMixin
from PIL import Image

from llmi.context import env_name
from llmi.tools.base import without_references
from llmi.tools.synthesis import Size, open_image, size_text

IP_ADAPTER_SCALE = 0.5
"""How strongly references steer an IP-Adapter; diffusers' IP-Adapter guide: "0.5
typically produces balanced results between the text and image prompt"."""

_ONE_IMAGE = (FluxKontextPipeline, QwenImageEditPipeline)
_MANY_IMAGES = (QwenImageEditPlusPipeline,)
_NEEDS_IMAGE = (QwenImageEditPipeline, QwenImageEditPlusPipeline)
"""Pipelines that cannot draw without an image."""
_CANVAS = (1024, 1024)
"""A blank canvas's size where the size to draw is unknown: the area Qwen-Image-Edit draws."""
_SINGLE_PROMPT = (QwenImageEditPlusPipeline,)
"""Pipelines that refuse a list of prompts ("only supports batch_size=1")."""
_H94_LAYOUT = {False: ("models", "ip-adapter_sd15.safetensors"),
               True: ("sdxl_models", "ip-adapter_sdxl.safetensors")}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


@dataclass(frozen=True)
class CallImages:
    """The images one pipeline call takes besides its prompt, and what to record of them."""

    inputs: dict[str, Any] = field(default_factory=dict)
    """Arguments of the call: ``image``, ``ip_adapter_image``."""
    ip_adapter_scale: float | None = None
    """Set on the pipeline before the call; None where it has no IP-Adapter."""
    references: tuple[bytes, ...] = ()
    """The request's references: calls share a batch only when these are the same."""
    used: int = 0
    ignored: str | None = None
    """Why references were left out, when some were."""
    canvas: str | None = None
    """The size of the blank canvas drawn on, when the pipeline needs an image and got none."""

    def provenance(self, ip_adapter: str | None) -> dict[str, Any]:
        recorded: dict[str, Any] = {"references": self.used} if self.used else {}
        if self.canvas:
            recorded["blank_canvas"] = self.canvas
        if self.used and self.ip_adapter_scale is not None:
            recorded |= {"ip_adapter": ip_adapter, "ip_adapter_scale": self.ip_adapter_scale}
        return recorded | (without_references(self.ignored) if self.ignored else {})


def takes_ip_adapter(pipe: Any, parameters: dict[str, Any]) -> bool:
    """Whether ``pipe`` loads IP-Adapter weights as Stable Diffusion and SDXL do."""
    return isinstance(pipe, IPAdapterMixin) and "ip_adapter_image" in parameters


@dataclass(frozen=True)
class IPAdapterFiles:
    """Where ``load_ip_adapter`` finds an IP-Adapter's weights and image encoder."""

    model: str
    subfolder: str
    weight_name: str
    image_encoder_folder: str = "image_encoder"

    def __str__(self) -> str:
        return f"{self.model}:{self.subfolder}:{self.weight_name}"


def ip_adapter_files(setting: str, pipe: Any) -> IPAdapterFiles:
    """The files of the IP-Adapter ``setting`` names for ``pipe``."""
    model, *rest = setting.strip().split(":", 2)
    subfolder, weight = _H94_LAYOUT["text_encoder_2" in pipe.components]  # SDXL has two
    if rest:
        subfolder = rest[0]
    if len(rest) > 1 and rest[1]:
        weight = rest[1]
    if subfolder == _H94_LAYOUT[True][0] and "vit-h" in weight.lower():
        return IPAdapterFiles(model, subfolder, weight, f"{_H94_LAYOUT[False][0]}/image_encoder")
    return IPAdapterFiles(model, subfolder, weight)


def batches(pipe: Any) -> bool:
    """Whether ``pipe`` draws several prompts in one call."""
    return not isinstance(pipe, _SINGLE_PROMPT)


def generation_images(pipe: Any, references: tuple[bytes, ...], ip_adapter: str | None,
                      size: Size | None) -> CallImages:
    """What the references of a new image of ``size`` become on ``pipe``; ``ip_adapter`` is
    the adapter loaded into it, if any."""
    name = type(pipe).__name__
    if isinstance(pipe, _NEEDS_IMAGE) and not references:
        canvas = size or _CANVAS
        return CallImages({"image": Image.new("RGB", canvas, "white")}, canvas=size_text(canvas))
    images = _references_rgb(references)
    if isinstance(pipe, _MANY_IMAGES):
        return CallImages({"image": images}, references=references, used=len(images))
    if isinstance(pipe, _ONE_IMAGE) and images:
        left = len(images) - 1
        ignored = (f"{name} takes one reference image, so the other {left} were not used"
                   if left else None)
        return CallImages({"image": images[0]}, references=references, used=1, ignored=ignored)
    if ip_adapter is not None:
        return _through_ip_adapter(images, references)
    return CallImages(references=references, ignored=_no_references(
        pipe, references, "takes no reference images",
        f"use a pipeline that does ({FluxKontextPipeline.__name__}, "
        f"{QwenImageEditPlusPipeline.__name__}) or Stable Diffusion / SDXL with "
        f"{env_name('ip_adapter')}"))


def edit_images(pipe: Any, source: Image.Image, references: tuple[bytes, ...],
                ip_adapter: str | None) -> CallImages:
    """What an edit's source and references become on ``pipe``."""
    images = _references_rgb(references)
    if isinstance(pipe, _MANY_IMAGES) and images:
        return CallImages({"image": [source, *images]}, references=references,
                          used=len(images))
    if ip_adapter is not None:
        through = _through_ip_adapter(images, references)
        return replace(through, inputs={"image": source, **through.inputs})
    ignored = _no_references(
        pipe, references, "edits one image and takes no reference images besides it",
        f"{QwenImageEditPlusPipeline.__name__} takes them")
    return CallImages({"image": source}, references=references, ignored=ignored)


def _through_ip_adapter(images: list[Image.Image], references: tuple[bytes, ...]) -> CallImages:
    """The references as the images of the one IP-Adapter loaded. A call without them still
    needs image embeddings once the adapter is loaded (the UNet refuses to run without), so
    it gets a blank image at scale 0, which diffusers' IP-Adapter attention then skips."""
    if not images:
        return CallImages({"ip_adapter_image": [[Image.new("RGB", (64, 64))]]}, 0.0)
    return CallImages({"ip_adapter_image": [images]}, IP_ADAPTER_SCALE, references,
                      len(images))


def _no_references(pipe: Any, references: tuple[bytes, ...], lacks: str,
                   instead: str) -> str | None:
    """Why ``pipe`` made its image without ``references``, and what would use them."""
    if not references:
        return None
    if isinstance(pipe, IPAdapterMixin):
        instead = f"set {env_name('ip_adapter')} to use IP-Adapter"
    return f"{type(pipe).__name__} {lacks}; {instead}"


def _references_rgb(references: tuple[bytes, ...]) -> list[Image.Image]:
    return [readable_rgb(data, f"reference image {number}")
            for number, data in enumerate(references, 1)]


def readable_rgb(data: bytes, what: str) -> Image.Image:
    """``data`` as an RGB image, upright as its EXIF orientation says, transparent parts on
    white (charts often have alpha)."""
    image = open_image(data, what, upright=True)
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")
