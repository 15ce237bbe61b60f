"""Intake node: input images into the artifact store.

Each image is decoded whole first, so one cut short or broken past its header fails the
run here, before any model call, rather than an edit of it later. One larger than
``max_input_pixels`` is stored scaled down, so what reads it (the planner's model, the
judges, an edit, which comes back at its source's size) gets a sensible size.
"""

from __future__ import annotations

from pathlib import Path

from langgraph.runtime import Runtime

from llmi.artifacts import ArtifactStore, NotAnImage, inspect_image, shown_size
from llmi.context import Context, context_of
from llmi.state import DocumentState, ImageRef, Size


class BadInputImage(ValueError):
    """An input image that cannot be read."""


def take_inputs(state: DocumentState, runtime: Runtime[Context]) -> dict:
    """Store the input images; they take the first ``img_index`` values, in order."""
    ctx = context_of(runtime)
    store = ArtifactStore(ctx.artifact_dir)
    inputs, sizes = [], []
    for path in state.get("images", []):
        try:
            ref, size = _take_in(Path(path).read_bytes(), store, ctx.max_input_pixels)
        except (OSError, NotAnImage) as exc:
            raise BadInputImage(f"input image {Path(path).name!r}: {exc}") from None
        inputs.append(ref)
        sizes.append(size)
    return {"inputs": inputs, "input_sizes": sizes}


def _take_in(data: bytes, store: ArtifactStore, max_pixels: int) -> tuple[ImageRef, Size]:
    """The image stored, at most ``max_pixels`` large (0: any size), and its size as given
    (upright). Raises NotAnImage."""
    inspect_image(data, decode=True)
    width, height = shown_size(data)
    return store.put(data, max_pixels=max_pixels), Size(width=width, height=height)
