"""Qwen-Image-Edit's processor for still images, for machines without torchvision.

Qwen-Image-Edit and Qwen-Image-Edit-Plus name transformers' ``Qwen2VLProcessor``, whose
video processor needs torchvision, although the pipelines only ever hand it still images.
Where no torchvision built for the installed torch imports (a CPU torch has no matching
wheel on PyPI, whose torchvision is built for CUDA), the diffusers backend loads the
processor as this class instead: the published tokenizer and image-processor settings,
transformers' PIL image preprocessing, and no video part.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import AutoTokenizer, Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

try:
    from transformers import Qwen2VLImageProcessorPil as PilImageProcessor
except ImportError:  # before transformers 5.x named it, the default one was PIL-based
    from transformers import Qwen2VLImageProcessor as PilImageProcessor

PUBLISHED_CLASS = "Qwen2VLProcessor"


class StillImageProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without its video processor."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        # The attributes Qwen2VLProcessor.__init__ sets before it asks for a video processor.
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template,
                                **kwargs)


def still_image_processor(model: str) -> StillImageProcessor:
    """The processor of the pipeline at ``model`` (a hub id or a folder), for still images."""
    return StillImageProcessor(
        image_processor=PilImageProcessor.from_pretrained(model, subfolder="processor"),
        tokenizer=AutoTokenizer.from_pretrained(model, subfolder="processor"),
    )


@functools.cache
def torchvision_imports() -> bool:
    # A torchvision built for another torch is found, then fails with a RuntimeError.
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True
