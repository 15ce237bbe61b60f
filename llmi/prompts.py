"""The prompts that teach a chat model the tag protocol."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.resources import files

LLMI_PROMPT = "llmi"
LLM_I_PROMPT = "llm-i"
PLANNER_PROMPTS = (LLMI_PROMPT, LLM_I_PROMPT)
"""The values of the context's ``planner_prompt``."""

PLANNER_SYSTEM = """\
You write documents that mix text and images. Write the whole document in \
Markdown, in one pass, and wherever an image belongs, put one image tag on its \
own line instead of the image:

<imgen>{{'source': SOURCE, 'description': WHAT THE IMAGE SHOWS, 'params': {{...}}}}</imgen>

Choose the source by what the image must be:
{sources}

Rules for tags:
- The tag body is a Python dict literal with the keys 'source', 'description' and 'params'.
- Images are numbered from 0: {numbering}
- An 'edit' tag's 'img_index' must point at an input image or at a tag that comes \
earlier in the document, never at itself or a later one.
- Code for charts may assume plt, pd, sns and np are already imported. Build the \
data inside the code, draw one figure, and do not call plt.show() or plt.savefig().
- When an image shows a subject (a character, an object, a place) that an earlier \
image showed, add 'refs' with the earlier image's number to its 'diffusion' or 'edit' \
params, so that it looks the same: {{'prompt': 'the same red fox asleep in its den', \
'refs': [1]}}.
- Use at most {max_images} images. Do not wrap tags in code fences.

Let the text carry the document: each image should add something the words \
around it refer to."""

REPAIR_SYSTEM = """\
You fix chart code that failed. The code runs with plt, pd, sns and np already \
imported and must draw one matplotlib figure without calling plt.show() or \
plt.savefig(). Reply with the corrected code only, in one ```python fenced block."""

REPAIR_USER = """\
The chart should show: {description}

This code failed:

```python
{code}
```

The error was:

```
{error}
```"""


QUERY_SYSTEM = """\
You write web image search queries. A search for an image found nothing usable. \
Write one better query: a few concrete keywords naming what the picture shows, \
the way people caption photos, without quotes or search operators. Reply with the \
query only, on one line."""

QUERY_USER = """\
The image should show: {description}

The query {query!r} failed: {error}"""

RETAG_SYSTEM = """\
You fix image tags in a document that mixes text and images. A tag reads

<imgen>{{'source': SOURCE, 'description': WHAT THE IMAGE SHOWS, 'params': {{...}}}}</imgen>

and its body is a Python dict literal. The sources are:
{sources}

An 'edit' tag's 'img_index' must point at an input image or at an earlier image. \
Reply with the corrected tag only: one <imgen>...</imgen> tag that keeps what the \
original meant."""

RETAG_USER = """\
The document:

{draft}

Image {slot} of it is this tag, which could not be read:

{tag}

The error was: {error}"""


def retag_system(guidance: Mapping[str, str]) -> str:
    return RETAG_SYSTEM.format(sources=_sources(guidance))


REVISE_SYSTEM = """\
You rewrite one image tag of a finished document that mixes text and images, as the \
user asks. A tag reads

<imgen>{{'source': SOURCE, 'description': WHAT THE IMAGE SHOWS, 'params': {{...}}}}</imgen>

and its body is a Python dict literal. The sources are:
{sources}

Images are numbered from 0: the user's input images first, then the tags of the \
document in order. An 'edit' tag's 'img_index', and the numbers in 'refs', may point \
only at images that come before the one you rewrite. Keep what the user does not ask \
to change, and make the image fit the text around it. Reply with the new tag only: \
one <imgen>...</imgen> tag."""

REVISE_USER = """\
The text around image {slot}:

{around}

Image {slot} is this tag now:

<imgen>{tag}</imgen>

Rewrite it as the user asks: {instruction}"""


def revise_system(guidance: Mapping[str, str]) -> str:
    return REVISE_SYSTEM.format(sources=_sources(guidance))


def _sources(guidance: Mapping[str, str]) -> str:
    return "\n".join(f"- '{source}': {text}" for source, text in guidance.items())


def planner_system(guidance: Mapping[str, str], *, n_inputs: int, max_images: int,
                   chosen: str | None = LLMI_PROMPT) -> str:
    """The planner's system prompt that ``chosen`` (the context's ``planner_prompt``)
    picks: llmi's own, built from the tools' guidance, or LLM-I's training prompt as it is
    (which says nothing of limits, tools' guidance or input images)."""
    if chosen == LLM_I_PROMPT:
        return llm_i_training_prompt()
    if chosen != LLMI_PROMPT:
        raise ValueError(f"planner_prompt {chosen!r} is not one of {', '.join(PLANNER_PROMPTS)}")
    sources = _sources(guidance)
    if n_inputs:
        numbering = (
            f"the user's {n_inputs} input image(s) are 0-{n_inputs - 1}, "
            f"and the tags of your document count on from {n_inputs}, in order."
        )
    else:
        numbering = "the tags of your document count from 0, in order."
    return PLANNER_SYSTEM.format(sources=sources, numbering=numbering, max_images=max_images)


@cache
def llm_i_training_prompt() -> str:
    """LLM-I's training system prompt (``system_prompts/training/llmi.txt``), byte for byte;
    ``llm_i/NOTICE`` says where it comes from."""
    return (files("llmi") / "llm_i" / "training_prompt.txt").read_text(encoding="utf-8")


POLISH_SYSTEM = """\
You revise the text of a finished document so that it matches its images. Each \
image stands in the text as a marker such as [[IMAGE 3]]. Some images could not be \
made: the text must no longer describe or refer to a missing image as if it were \
there, and should not promise what no image shows. Keep everything else: the \
content, the Markdown structure, the tone and the language. Keep every marker \
exactly once, in the same order and at the same place in the flow of the text. \
Reply with the revised document only."""

POLISH_USER = """\
The document was written for this request: {request}

DOCUMENT:
{document}

IMAGES:
{images}"""


SUBJECTS_SYSTEM = """\
You plan the images of a document so that a subject shown in several of them looks \
the same in each. A subject is one particular character, animal, person, object or \
place: the same fox in three illustrations, the same product seen from two sides. \
Images that only show the same kind of thing (two different dogs, two cities) or \
share a style do not share a subject.

You are given the document's images in order: each one's number, the tool that will \
make it, what it should show and the text around it. Input images were given by the \
user.

Reply with JSON only: {"subjects": [{"name": "<a short name>", "description": "<what \
it looks like, in one sentence>", "slots": [<the numbers of the images that show it>]}]}. \
List only subjects shown in two or more images, give each image at most one subject, \
and reply {"subjects": []} when no subject recurs."""

SUBJECTS_USER = """\
The user's request:
<request>
{request}
</request>

The images:

{images}"""
