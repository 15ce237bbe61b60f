"""Edit: change an input image or an earlier image of the document."""

from __future__ import annotations

from llmi.tools.base import BackendFactory, BackendTool


class EditTool(BackendTool):
    source = "edit"
    required_params = ("img_index", "prompt")
    setting = "edit_backend"
    guidance = (
        "change an input image or an image earlier in this document, keeping the rest. "
        "params: {'img_index': the index of the image to edit, 'prompt': the change}"
    )


edit = EditTool()


def register_backend(name: str, factory: BackendFactory) -> None:
    edit.register(name, factory)
