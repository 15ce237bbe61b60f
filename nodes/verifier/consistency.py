"""The consistency check: whether an image made from references shows their subject.

An image whose request had ``refs`` (by the tag, or linked by subject) should show the same
subject as the images it was made from. The vision judge sees the references and the new
image and says ``same`` or ``different``; an image it cannot judge is ``unchecked``, and
keeps its place in the document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmi.artifacts import ArtifactStore
from llmi.judge import Judge
from llmi.state import Consistency, ImageRef, ImageResult, Subject


def check_consistency(
    result: ImageResult,
    images: Mapping[int, ImageRef],
    subjects: Sequence[Subject],
    store: ArtifactStore,
    judge: Judge,
) -> Consistency:
    """The vision judge's verdict on a made image with ``refs``: does it show their subject?"""
    missing = [index for index in result["refs"] if index not in images]
    if missing:
        return unchecked(f"reference image {missing[0]} has no image")
    try:
        image = store.get(result["image"])
        references = [store.get(images[index]) for index in result["refs"]]
    except (OSError, ValueError) as exc:
        return unchecked(f"an image is missing from the artifact store ({exc})")
    return judge.check_consistency(image, references, subject_of(result, subjects))


def subject_of(result: ImageResult, subjects: Sequence[Subject]) -> str:
    """The result's subject in words: "Mira: a girl with a red scarf", or its name alone."""
    name = result.get("subject") or ""
    described = next((s for s in subjects if s["name"] == name and s["description"]), None)
    return f"{name}: {described['description']}" if described else name


def unchecked(reason: str) -> Consistency:
    return Consistency(verdict="unchecked", reason=reason)


def mismatch(result: ImageResult) -> str | None:
    """Why a made image does not show its references' subject, or None when it is not
    known not to."""
    consistency = result.get("consistency")
    if not result["ok"] or not consistency or consistency["verdict"] != "different":
        return None
    return ("verifier: the image shows a different subject from its references "
            f"({consistency['reason']})")
