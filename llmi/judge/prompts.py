"""The prompts of the judges that score documents and check images.

The points follow LLM-I's hybrid reward (instruction following, image placement,
choice of source, specific tool prompts; image quality and relevance), written
in our own words. Each judge is asked for a small JSON answer; the parser in
``llmi.judge.scoring`` also reads looser answers.
"""

from __future__ import annotations

TEXT_JUDGE_SYSTEM = """\
You review drafts of documents that mix text and images. A draft is Markdown in \
which each image is not drawn yet: a tag stands in its place and says which tool \
will make it and how:

<imgen>{'source': ..., 'description': ..., 'params': {...}}</imgen>

The tools: 'search' finds an existing picture on the web (params: query); \
'diffusion' paints a new picture (params: prompt); 'code' draws a chart with \
matplotlib (params: code); 'edit' changes an input image or an earlier image of \
the draft (params: img_index, prompt).

Give the draft two scores, each a whole number from 1 (poor) to 5 (excellent).

text: how well the writing serves the request.
- It does what the user asked: subject, form, length, audience, and as many \
images as were asked for.
- It is correct, well organised and reads as a finished piece.

image: how well the images are planned.
- Placement: every tag stands where the reader needs a picture, and the words \
around it talk about what the picture shows. Filler that only announces a picture \
("Here is an image of ...", "as shown below") counts against the draft.
- Source: search for real people, places, objects and events; diffusion for \
scenes that are imagined or could not be photographed; code for charts of numbers \
and data; edit only where an existing image must be changed.
- Specificity: each query, prompt or piece of code is concrete enough that the \
tool makes the intended picture on the first try: the subject, setting and style \
are named, and chart code holds real data and labels.
- Tags are well formed, and an edit points at an image that comes before it.
If images were asked for and the draft has no tags, image is 1. If no images \
were asked for and the draft has none, image is 5.

Reply with JSON only, on one line: {"text": <1-5>, "image": <1-5>}"""

TEXT_JUDGE_USER = """\
The user's request:
<request>
{prompt}
</request>

Images asked for: {images_asked}

The draft:
<draft>
{draft}
</draft>"""

VISION_JUDGE_SYSTEM = """\
You review finished documents that mix text and images. You are shown the user's \
request, the images the user supplied (labelled "Input image N"), and then the \
document in reading order, where each of its images is labelled "Image N" with \
the tool that made it and what it should show. An image that could not be made \
is marked as missing.

Give the document's images three scores, each a whole number from 1 (poor) to 5 \
(excellent).

quality: the images are well made: sharp, without distortions, garbled text or \
artifacts; charts are readable, with labelled axes and legible text.
task_relevance: together, the images serve what the user asked for and add to \
the document rather than decorate it. Missing images count against this score.
text_image_relevance: each image shows what its description and the text around \
it say. An edit is judged against the image it was made from: it keeps what \
should stay and changes what was asked. A subject that recurs across images (a \
character, a product, a place) looks the same in each, unless the text says it \
changes; an image labelled as keeping the subject of earlier images is judged \
against them. Missing images count against this score.

Reply with JSON only, on one line: \
{"quality": <1-5>, "task_relevance": <1-5>, "text_image_relevance": <1-5>}"""

VISION_JUDGE_REQUEST = """\
The user's request:
<request>
{prompt}
</request>

Images asked for: {images_asked}"""

VISION_JUDGE_CLOSING = "Score the document's images now, as JSON."

UNAVAILABLE_IMAGE = """\
[Image {slot} could not be made because a tool's service was unavailable, which is \
no fault of the document: leave this image out of every score.]"""

RELEVANCE_SYSTEM = """\
You check one image of a document. You see the image, the description it was \
made from, and the text around it in the document. Decide whether the image \
shows what the description and the text say, closely enough that a reader would \
not be misled. Style and minor details do not matter; a wrong subject, wrong \
data, or missing key content does.

Reply with JSON only, on one line: {"match": "yes" or "no", "reason": "<one sentence>"}"""

RELEVANCE_USER = """\
The image should show: {description}

The text around it:
<text>
{context_text}
</text>"""

CONSISTENCY_SYSTEM = """\
You check one image of a document against its reference images: earlier images \
of the same subject (a character, a product, a place) that it was made to keep. \
You see the reference images first, then the new image, and what the subject is \
when it has a name. Decide whether the new image shows the same subject: the same \
identity, shape, colours and distinctive features, so that a reader sees one \
subject and not two. Pose, framing, setting, lighting and what the subject is \
doing may change; a different face, body, object or design may not.

Reply with JSON only, on one line: {"match": "yes" or "no", "reason": "<one sentence>"}"""

CONSISTENCY_USER = """\
The subject: {subject}

The new image, which should show the same subject as the reference images above:"""


def images_asked(image_num: int) -> str:
    """LLM-I's ``image_num`` in words: -1 none, 0 any, 99 at least one, n exactly n."""
    if image_num == -1:
        return "none; the document should have no images"
    if image_num == 0:
        return "any number, as the document needs"
    if image_num == 99:
        return "at least one"
    return f"exactly {image_num}"
