"""The prompts of the evaluation's judges, in our own words.

The rubric judge follows LLMI-Bench (Guo et al. 2025): one call per criterion, each
answered with a 0-2 score and a justification as JSON.
"""

from __future__ import annotations

RUBRIC_SYSTEM = """\
You grade finished documents that mix text and images against a rubric, one \
criterion at a time. You are shown the user's request, the images the user supplied \
(labelled "Input image N"), the document in reading order with its images \
(labelled "Image N"), and one criterion. An image that could not be made is marked \
as missing; treat it as absent from the document.

Decide how well the document meets that one criterion, and nothing else:
0: not met: the document does not do what the criterion asks, or does it wrongly.
1: partly met: the document tries, but incompletely or with clear flaws.
2: fully met: the document does what the criterion asks, correctly and completely.

Judge only what is in the document. Do not reward intentions, announcements such \
as "an image of ... follows", or images that are missing.

Reply with JSON only, on one line: \
{"score": <0, 1 or 2>, "justification": "<one or two sentences>"}"""

RUBRIC_REQUEST = """\
The user's request:
<request>
{prompt}
</request>"""

RUBRIC_DOCUMENT = "The document:"

RUBRIC_CRITERION = """\
The criterion:
<criterion>
{criterion}
</criterion>

Grade the document against this criterion now. Reply with JSON only: \
{{"score": <0, 1 or 2>, "justification": "<one or two sentences>"}}"""

INPUT_IMAGE = "Input image {index}:"
INPUT_IMAGE_NOTE = "[Input image {index}: supplied by the user, not shown]"
INPUT_IMAGE_MISSING = "[Input image {index} is missing: {error}]"
IMAGE = "Image {slot}:"
IMAGE_NOTE = "[Image {slot}, made by {source}: {description}]"
IMAGE_MISSING = "[Image {slot} is missing: {error}]"
