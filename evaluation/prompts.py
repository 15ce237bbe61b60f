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

# LLM-I's judge of LLMI-Bench (evaluation/eval_text_only.py and eval_mm.py,
# BenchJudgeCLient), word for word and space for space: its system prompt, and the
# evaluation prompt of eval_text_only.py that its f-string makes, indentation included.
# eval_mm.py's adds one sentence under "# CONTEXT"; it judges items with input images.
LLM_I_SYSTEM = ("You are an expert AI performance evaluator. Your task is to objectively "
                "assess an AI-generated report based on a specific criterion.")
LLM_I_EVALUATION = """
        # CONTEXT
{context}        ## Original Benchmark Prompt:
        {question}

        ## AI-Generated Report Text (Images are provided visually):
        {answer_text}

        # TASK
        You must evaluate the "AI-Generated Report" against the single criterion below.
        Your response MUST be a single JSON object with two keys: "score" and "justification". Do not add any text before or after the JSON object.

        ## Scoring Scale:
        - 0: Not Met
        - 1: Partially Met
        - 2: Fully Met or Exceeded

        ## CRITERION TO EVALUATE:
        {criterion}

        ## REQUIRED OUTPUT FORMAT (JSON ONLY):
        {{
        "score": <0, 1, or 2>,
        "justification": "A concise explanation for the score."
        }}
        """
LLM_I_INPUT_CONTEXT = """        The full context, including the original prompt's text and images, and the AI's generated report (text and images), is provided below.

"""
LLM_I_IMAGE = "<image>"
"""Where an image stands in the evaluation prompt: each input image and each image of the
report, in order, goes after the text before its mark."""
LLM_I_NO_JUSTIFICATION = "No justification provided."

# OpenING's generation script asks for as many text-image pairs as its reference output
# holds, in these words, before the input (gpt-dalle_generation.py).
OPENING_PAIRS = "The number of generated text-image pairs can be {count}: "
OPENING_INPUT_IMAGE = "[Input image {index}]"

# The OpenING judge follows OpenING's GPT-score protocol (Zhou et al. 2025,
# prompts/detailed_score_system.txt and GPT_score_A.py): the same seven criteria, in its
# order of importance, each scored 0-10 with a justification, in its JSON shape.
OPENING_SYSTEM = """\
You evaluate interleaved image-text content written by a model. The model's input \
follows "INPUT:": a question or instruction asking for interleaved content, which may \
include images. Its answer follows "OUTPUT:": text with images interleaved.

Each image stands right after the marks <IMG_i></IMG_i>, numbered from 0 across the \
input and the output together. {images}

Score the output on seven criteria, most important first:
1. Correctness: is the content accurate and valid for the input: logical, factual text \
that is present; reasonable, faithful images that are present.
2. Image-Text Coherency: do the images and the text match, each reflecting and \
completing the other.
3. Multi-step Consistency: is the content consistent throughout, above all in style and \
entities across images, and in the coherence of its steps of text.
4. Content Quality: are the images clear and realistic, and the text correct in grammar \
and language.
5. Human Preference Alignment: does the text avoid undesirable content (this weighs \
most), and do the images meet aesthetic standards.
6. Completeness: does the output give every step it is meant to, without omissions.
7. Content Richness: are the images varied, and the text detailed while staying \
meaningful.

Scale, for each criterion: 0-2 major deficiencies; 3-5 minor issues; 6-8 good, with \
minor improvements needed; 9-10 exemplary.

Be objective and thorough; weigh the images in every criterion. Reply with JSON only:
{{"scores": {{"Correctness": {{"Score": <0-10>, "Justification": "<brief explanation>"}}, \
"Image-Text Coherency": {{...}}, "Multi-step Consistency": {{...}}, \
"Content Quality": {{...}}, "Human Preference Alignment": {{...}}, "Completeness": {{...}}, \
"Content Richness": {{...}}}}}}"""
OPENING_SEEN = "You see the images themselves."
OPENING_UNSEEN = "The images are not shown: a note in brackets says what each one shows."

OPENING_INPUT = "INPUT: "
OPENING_OUTPUT = "\nOUTPUT: "
OPENING_NO_OUTPUT = "\nOUTPUT: None"
OPENING_IMAGE = " <IMG_{index}></IMG_{index}>"
OPENING_IMAGE_NOTE = "[made by {source}: {description}]"
OPENING_INPUT_NOTE = "[an image the user supplied]"
OPENING_REPLY = "\nReply with the JSON result only."
