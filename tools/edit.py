"""Edit: change an input image or an earlier image of the document."""

from __future__ import annotations

from typing import Any

from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools.base import Backend, BackendFactory, BackendTool
from llmi.tools.images_api import images_server, openai_edit
from llmi.tools.synthesis import synthesis_settings


def diffusers_backend(argument: str) -> Backend:
    # Imported on use: torch and diffusers are an optional extra, and slow to import.
    from llmi.tools.pipelines import image_edit

    return image_edit(argument)


class EditTool(BackendTool):
    source = "edit"
    required_params = ("img_index", "prompt")
    setting = "edit_backend"
    guidance = (
        "change an input image or an image earlier in this document, keeping the rest. "
        "params: {'img_index': the index of the image to edit, 'prompt': the change}"
    )
    params_in_cache_key = False
    takes_references = True

    def cache_settings(self, context: Context, request: ImageRequest) -> dict[str, Any] | None:
        """As diffusion's, with the edit size and the edit server; the cache adds the image
        edited. None when the seed is drawn."""
        settings = synthesis_settings(request, context, self.choice(context),
                                      images_server(context, edit=True))
        return None if settings is None else settings | {"edit_size": context.edit_size}

    def how_to_configure(self) -> str:
        return (
            "set LLMI_EDIT=diffusers:<instruction-editing model id or path> for a local pipeline, "
            "or LLMI_EDIT=openai:<model> for an OpenAI-compatible images API"
        )


edit = EditTool({"diffusers": diffusers_backend, "openai": openai_edit})


def register_backend(name: str, factory: BackendFactory) -> None:
    edit.register(name, factory)
