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
from llmi.state import DocumentState, Size


class BadInputImage(ValueError):
    """An input image that cannot be read."""


def take_inputs(state: DocumentState, runtime: Runtime[Context]) -> dict:
    """Store the input images; they take the first ``img_index`` values, in order."""
    ctx = context_of(runtime)
    store = ArtifactStore(ctx.artifact_dir)
    inputs, sizes = [], []
    for path in state.get("images", []):
        data, size = _read(Path(path))
        # A store that cannot be written raises its own OSError: that is not the image's fault.
        inputs.append(store.put(data, max_pixels=ctx.max_input_pixels))
        sizes.append(size)
    return {"inputs": inputs, "input_sizes": sizes}


def _read(path: Path) -> tuple[bytes, Size]:
    """The image's bytes and its size as given (upright); raises BadInputImage."""
    try:
        data = path.read_bytes()
        inspect_image(data, decode=True)
    except (OSError, NotAnImage) as exc:
        raise BadInputImage(f"input image {path.name!r}: {exc}") from None
    width, height = shown_size(data)
    return data, Size(width=width, height=height)
