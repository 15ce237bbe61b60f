"""Revising one image of a finished document: its new tag, the previous version kept, the record.

``llmi revise`` (``llmi.cli.revise``) gives a slot of a finished run a new tag, written by
the user or by the planner's model from an instruction, and runs the thread again from
dispatch: only that slot and the images made from it are made again. Before that, the
document as it was is copied under the output folder's ``versions/<n>/``; each revision
is kept in the state's ``revisions``, which the manifest records.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from llmi.errors import LlmiError
from llmi.models import PLANNER
from llmi.prompts import REVISE_USER, revise_system
from llmi.reasoning import NoAnswer, answer_of
from llmi.state import ImageRequest, Revision
from llmi.tags import CLOSE, OPEN, TagError, read_body, read_tag, tag_bodies

VERSIONS = "versions"
"""The folder, in the output folder, that keeps the versions a revision replaced."""
DOCUMENT_FILES = ("document.md", "document.html", "manifest.json", "assets")
"""What the assembler writes: one version of the document."""


class RevisionError(LlmiError):
    """A revision that cannot be made as asked; nothing was changed."""


def current_tag(request: ImageRequest) -> str:
    """The body of the tag that would make ``request``, in the protocol's syntax; the
    references linked by subject are written into its params, as a tag writes them."""
    params = dict(request["params"])
    if request.get("refs"):
        params["refs"] = list(request["refs"])
    return repr({"source": request["source"], "description": request["description"],
                 "params": params})


def revised_request(
    text: str,
    slot: int,
    *,
    required_params: Mapping[str, tuple[str, ...]],
    reference_sources: Collection[str],
    attempt: int,
    origin: str,
) -> tuple[str, ImageRequest]:
    """The body of the one tag in ``text`` (a whole ``<imgen>`` tag, or only its body) and
    its request, as slot ``slot``'s ``attempt``.

    The tag is read as the planner's are, by the tag parser's rules for slot ``slot``, so
    that an edit or ``refs`` may point only at earlier images. ``origin`` names where the
    text came from in the error of one that cannot be read.
    """
    bodies = tag_bodies(text if OPEN in text else f"{OPEN}{text.strip()}{CLOSE}")
    if len(bodies) != 1:
        raise RevisionError(f"{origin} holds {len(bodies)} image tags, not one",
                            "give one tag: {'source': ..., 'description': ..., 'params': {...}}")
    try:
        request = read_tag(slot, read_body(bodies[0]), required_params,
                           reference_sources=reference_sources)
    except TagError as exc:
        raise RevisionError(f"{origin} is not a tag llmi can run: {exc}",
                            "write it as the planner does: {'source': 'search', 'description': "
                            "'...', 'params': {'query': '...'}}") from None
    return bodies[0].strip(), {**request, "attempt": attempt}


def rewrite_tag(
    model: BaseChatModel,
    *,
    slot: int,
    tag: str,
    around: str,
    instruction: str,
    guidance: Mapping[str, str],
) -> str:
    """The model's reply when asked, once, to rewrite image ``slot``'s ``tag`` as
    ``instruction`` says, given the text ``around`` it and the tools' ``guidance``."""
    user = REVISE_USER.format(slot=slot, around=around or "(no text)", tag=tag,
                              instruction=instruction)
    reply = model.invoke([SystemMessage(revise_system(guidance)), HumanMessage(user)])
    try:
        return answer_of(reply, who=PLANNER.name, limit=PLANNER.limit_setting)
    except NoAnswer as exc:
        raise RevisionError(str(exc), "try again, or give the new tag with --tag") from None


def keep_version(previous: Path, out: Path) -> int | None:
    """Copy the document in ``previous`` under ``out/versions/<n>``, ``n`` the first free
    number from 1; None, and nothing copied, when ``previous`` holds none of its files.

    The copy is made under a temporary name and renamed into place: a version folder is
    always whole.
    """
    present = [previous / name for name in DOCUMENT_FILES if (previous / name).exists()]
    if not present:
        return None
    versions = out / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    number = next(n for n in range(1, len(list(versions.iterdir())) + 2)
                  if not (versions / str(n)).exists())
    staging = Path(tempfile.mkdtemp(prefix=".version-", dir=versions))
    try:
        for path in present:
            if path.is_dir():
                shutil.copytree(path, staging / path.name)
            else:
                shutil.copy2(path, staging / path.name)
        staging.rename(versions / str(number))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return number


def revision(
    *, version: int | None, slot: int, tag: str, rerun: list[int], instruction: str | None = None
) -> Revision:
    """The record of a revision made now."""
    record = Revision(version=version, slot=slot, tag=tag,
                      at=datetime.now(UTC).isoformat(timespec="seconds"), rerun=rerun)
    if instruction:
        record["instruction"] = instruction
    return record


def revisions_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``revisions``: every revision of the document, in order; nothing for a
    document never revised."""
    revisions = state.get("revisions") or []
    return {"revisions": list(revisions)} if revisions else {}
