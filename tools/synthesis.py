"""What the diffusion and edit tools share with their backends: the prompt, the seed that
applies, ``WxH`` sizes, and the settings that decide a synthesized image.

The tool cache keys a synthesized image on these same rules, so a cached image is the one
its backend would make again.
"""

from __future__ import annotations

import io
import re
from typing import Any

from PIL import Image, ImageOps

from llmi.context import Context, env_name
from llmi.state import ImageRequest
from llmi.tools.base import ToolError

Size = tuple[int, int]
"""(width, height) in pixels."""

_WXH = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


def prompt_of(request: ImageRequest) -> str:
    """What the image is drawn from: the ``prompt`` param, else the description."""
    return str(request["params"].get("prompt") or request["description"])


def applied_seed(request: ImageRequest, context: Context) -> int | None:
    """The seed that applies to a request: its ``params['seed']`` (a verifier's retry), else
    ``LLMI_SEED`` + the slot index; None when ``LLMI_SEED`` is negative and a seed is drawn."""
    seed = request["params"].get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return seed
    if context.seed is not None and context.seed >= 0:
        return context.seed + request["slot"]
    return None


def parse_size(text: str) -> Size | None:
    """``1024x768`` (``X`` and ``×`` too, spaces allowed) as (1024, 768); None when it is
    not two sides above zero."""
    match = _WXH.fullmatch(text)
    size = (int(match[1]), int(match[2])) if match else (0, 0)
    return size if all(size) else None


def setting_size(context: Context, setting: str, *, rules: str = "") -> Size | None:
    """The size a setting (``image_size``, ``edit_size``) names; None when it is unset.

    A value that is not ``WxH`` is a ``config`` error naming the variable, and ``rules``
    (what the backend takes) when given.
    """
    text = getattr(context, setting) or ""
    if not text:
        return None
    size = parse_size(text)
    if size is None:
        note = f" ({rules})" if rules else ""
        raise ToolError(f"{env_name(setting)} must read WxH, like 1024x768, not {text!r}{note}",
                        kind="config")
    return size


def size_text(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def synthesis_settings(request: ImageRequest, context: Context, backend: str,
                       images_server: str | None) -> dict[str, Any] | None:
    """What decides a synthesized image, for the tool cache's key; None when its seed is
    drawn, so that its image is new each time. A diffusers pipeline may take references
    through IP-Adapter, so its weights decide an image made from references."""
    seed = applied_seed(request, context)
    if seed is None:
        return None
    adapter = ({"ip_adapter": context.ip_adapter}
               if request.get("refs") and backend.startswith("diffusers") else {})
    return adapter | {
        "prompt": prompt_of(request),
        "backend": backend,
        "images_server": images_server,
        "size": context.image_size,
        "steps": context.diffusion_steps,
        "guidance": context.diffusion_guidance,
        "seed": seed,
    }


def open_image(data: bytes, what: str, *, upright: bool = False) -> Image.Image:
    """``data`` decoded whole, turned by its EXIF orientation when ``upright``; a ToolError
    naming ``what`` ("the source image") when it is not a readable image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return ImageOps.exif_transpose(image) if upright else image
    # Pillow raises many types for broken data (OSError, SyntaxError, EOFError, bombs...).
    except Exception as error:  # noqa: BLE001
        raise ToolError(f"{what} is not a readable image: {error}") from error
