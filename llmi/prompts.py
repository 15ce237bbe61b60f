"""The prompts that teach a chat model the tag protocol."""

from __future__ import annotations

from collections.abc import Mapping

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


def planner_system(guidance: Mapping[str, str], *, n_inputs: int, max_images: int) -> str:
    sources = "\n".join(f"- '{source}': {text}" for source, text in guidance.items())
    if n_inputs:
        numbering = (
            f"the user's {n_inputs} input image(s) are 0-{n_inputs - 1}, "
            f"and the tags of your document count on from {n_inputs}, in order."
        )
    else:
        numbering = "the tags of your document count from 0, in order."
    return PLANNER_SYSTEM.format(sources=sources, numbering=numbering, max_images=max_images)
