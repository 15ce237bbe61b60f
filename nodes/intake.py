"""Intake node: input images into the artifact store."""

from __future__ import annotations

from pathlib import Path

from langgraph.runtime import Runtime

from llmi.artifacts import ArtifactStore, NotAnImage
from llmi.context import Context, context_of
from llmi.state import DocumentState


class BadInputImage(ValueError):
    """An input image that cannot be read."""


def take_inputs(state: DocumentState, runtime: Runtime[Context]) -> dict:
    """Store the input images; they take the first ``img_index`` values, in order."""
    store = ArtifactStore(context_of(runtime).artifact_dir)
    inputs = []
    for path in state.get("images", []):
        try:
            inputs.append(store.put_file(path))
        except (OSError, NotAnImage) as exc:
            raise BadInputImage(f"input image {Path(path).name!r}: {exc}") from None
    return {"inputs": inputs}
