"""The ISG judge's prompts, in our own words.

They follow ISG's (Chen et al. 2025, ``ISG_eval/get_judge_prompt.py``): the same tasks,
inputs in the same order, scales and JSON keys. A block question is scored 1-10 under
``"Judge"`` (ISG's ``Score`` requirement, the one its ``calculate_performance.py`` reads),
an image question is answered ``"Yes"`` or ``"No"`` under ``"Judge"``, and the holistic
judgment scores five dimensions and an ``overall_score``, each 1-10.
"""

from __future__ import annotations

_REPLY = (
    'Reply in JSON with your judgment under "Judge" and your reason under "Reason", '
    "and nothing else: no introduction, no summary."
)

SCORE_REQUIREMENT = (
    "Give a score from 1 to 10, and your reason: how well the given content bears the "
    "question out. 10: the question is answered perfectly; 1: not answered at all."
)

TEXT_TEXT = f"""\
You are given two texts and a question about them. Judge whether the question holds \
for the two texts.

How to judge:
{{requirement}}

{_REPLY}

Text 1:
[Start of Text 1]
{{text1}}
[End of Text 1]
Text 2:
[Start of Text 2]
{{text2}}
[End of Text 2]
Question:
[Start of Question]
{{question}}
[End of Question]

Judge the question now."""

TEXT_IMAGE = f"""\
You are given a text, an image and a question about the two. Judge whether the \
question holds.

How to judge:
{{requirement}}

{_REPLY}

Text: [Start of Text] {{text}} [End of Text]
Image: the image above.
Question: [Start of Question] {{question}} [End of Question]

Judge the question now."""

IMAGE_IMAGE = f"""\
You are given two images (above, in order) and a question about them. Judge whether \
the question holds.

How to judge:
{{requirement}}

{_REPLY}

Question: [Start of Question] {{question}} [End of Question]

Judge the question now."""

IMAGE_QUESTION = """\
You answer questions about images. Look at the image above and answer the question \
about it (such as "Is there a dog in this image?" or "Is the dog blue?") with "Yes" \
or "No", and say briefly why.

Reply in JSON, and nothing else:
{{"Judge": "Yes" or "No", "Reason": "<your explanation>"}}

The question:
{question}
Answer it now, in JSON with "Judge" and "Reason"."""

_DIMENSIONS = ("coherence", "content_accuracy", "relevance_and_responsiveness",
               "visual_textual_alignment", "creativity_and_originality")

HOLISTIC_QUERY = """\
You are an impartial assistant. You are given a multimodal query, with one or more \
images, a multimodal answer that interleaves text and images, and a golden answer to \
the query. Judge how correct and relevant the answer is to the query, on these \
dimensions:
1. Coherence: how well its text and images work together to convey one message or story.
2. Content Accuracy: whether its text and its images are factually correct.
3. Relevance and Responsiveness: how well it addresses the query.
4. Visual-Textual Alignment: how well its images match and support their text.
5. Creativity and Originality: how novel and imaginative its text and images are.

Score each dimension from 1 to 10 with a brief explanation, and give an overall score \
from 1 to 10, in JSON of this shape:
{shape}

The query:""".format(shape="{" + ", ".join(
    f'"{name}": {{"score": 0, "explanation": ""}}' for name in _DIMENSIONS)
    + ', "overall_score": 0, "final_thoughts": ""}')
HOLISTIC_ANSWER = "The answer:"
HOLISTIC_GOLDEN = "The golden answer:"
HOLISTIC_CLOSING = (
    "Judge the answer now: reply in JSON with a 1-10 score for each dimension, an "
    "overall score from 1 to 10, and a brief explanation for each."
)
MISSING_IMAGE = "[an image that was not made]"
