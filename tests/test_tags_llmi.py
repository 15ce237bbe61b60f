"""Parity with LLM-I's own parser: the tags LLM-I's checkpoints write, read as LLM-I reads them.

The oracle below restates LLM-I's code (github.com/ByteDance-BandAI/LLM-I at a20e409): the
tag pattern of ``interleaved_generation_concurrent`` (imageutils/interleaved_gen.py),
``parse_image_tag`` (verl/utils/reward_score/llmi_rm.py) and ``sanitize_code``
(imageutils/code_exec.py), which every code string goes through before it runs.

Where llmi departs from LLM-I on purpose, a test says so: characters beyond ASCII in code
stay as written (``sanitize_code`` garbles them); a code string read as a Python literal
is unescaped once (``sanitize_code`` unescapes it a second time); a body that is JSON reads
as JSON where a Python literal would mean otherwise (``\\/``, escaped surrogate pairs);
blank code is a slot error (LLM-I runs it and counts the blank chart).
"""

from __future__ import annotations

import ast
import codecs
import io
import json
import re
import string
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from llmi.context import Context
from llmi.tags import parse_draft
from llmi.state import ImageRequest
from llmi.tools.base import ToolCall
from llmi.tools.code import code as code_tool
from llmi.tools.code import unfenced

REQUIRED = {
    "search": ("query",),
    "diffusion": ("prompt",),
    "code": ("code",),
    "edit": ("img_index", "prompt"),
}
EXAMPLE = Path(__file__).resolve().parent / "corpus" / "llmi" / "training_prompt_example.txt"


# LLM-I, restated.

LLM_I_TAG = r"<imgen>({.*?})</imgen>"
"""interleaved_generation_concurrent in imageutils/interleaved_gen.py."""
LLM_I_CODE_TAG = (
    r"^\s*{'source': 'code', 'description': '([^']*)', 'params': {'code': '(.*)'}}\s*$"
)
"""parse_image_tag in verl/utils/reward_score/llmi_rm.py."""


def llm_i_tag_bodies(content: str) -> list[str]:
    return re.findall(LLM_I_TAG, content, flags=re.DOTALL)


def llm_i_parse_image_tag(dict_string: str) -> dict[str, Any] | None:
    """parse_image_tag in verl/utils/reward_score/llmi_rm.py."""
    if "'source': 'code'" in dict_string:
        match = re.search(LLM_I_CODE_TAG, dict_string, re.DOTALL)
        if match:
            description, code = match.groups()
            return {"source": "code", "description": description, "params": {"code": code}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = ast.literal_eval(dict_string)
    except Exception:
        return None
    return parsed if isinstance(parsed, dict) else None


def llm_i_sanitize_code(code: str) -> str:
    """sanitize_code in imageutils/code_exec.py: what runs of a tag's code string."""
    code = re.sub(r"^```(?:python)?", "", code.strip(), flags=re.IGNORECASE)
    code = re.sub(r"```$", "", code.strip())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return codecs.decode(code, "unicode_escape")
    except Exception:
        code = code.replace("\\n", "\n").replace("\\t", "\t")
        return code.replace('\\"', '"').replace("\\'", "'")


def llm_i_code(body: str) -> str:
    """The code string LLM-I's parser takes from a code tag, before sanitize_code."""
    tag = llm_i_parse_image_tag(body)
    assert tag is not None
    return tag["params"]["code"]


def llm_i_reads_code_tag(body: str) -> bool:
    return re.search(LLM_I_CODE_TAG, body, re.DOTALL) is not None


# What llmi makes of the same text.

def only_request(draft: str, *, n_inputs: int = 0) -> ImageRequest:
    plan = parse_draft(draft, REQUIRED, n_inputs=n_inputs)
    assert plan.failures == []
    [request] = plan.requests
    return request


def code_tag(description: str, code: str) -> str:
    """A tag body in LLM-I's code-tag shape, its code string written as is."""
    return f"{{'source': 'code', 'description': '{description}', 'params': {{'code': '{code}'}}}}"


def test_the_training_prompts_example_reads_as_in_llm_i() -> None:
    draft = EXAMPLE.read_text(encoding="utf-8")
    [body] = llm_i_tag_bodies(draft)
    theirs = llm_i_parse_image_tag(body)
    assert theirs is not None
    plan = parse_draft(draft, REQUIRED)
    assert plan.failures == []
    [request] = plan.requests
    assert (request["source"], request["description"]) == ("code", theirs["description"])
    code = unfenced(request["params"]["code"])
    assert code == llm_i_sanitize_code(theirs["params"]["code"])
    assert code.splitlines()[-1] == "plt.axhline(y=0, color='k', linestyle='--')"
    compile(code, "<chart>", "exec")
    texts = [s["text"] for s in plan.segments if s["kind"] == "text"]
    assert texts == [
        "Here is the sine wave from 0 to 4 pi.",
        "Different from the cosine wave, the sine wave....",
    ]


@pytest.mark.slow
def test_the_training_prompts_example_draws_its_chart() -> None:
    request = only_request(EXAMPLE.read_text(encoding="utf-8"))
    context = Context(code_timeout=30, code_memory_mb=2048)
    output = code_tool(ToolCall(request=request, context=context, deadline_s=60))
    chart = Image.open(io.BytesIO(output.data))
    assert chart.format == "PNG"
    assert chart.width > chart.height  # figsize=(10, 4)


NON_ASCII = st.characters(min_codepoint=0x80, categories=("L", "N", "P", "S"))
PLAIN = st.text(string.ascii_letters + string.digits + " ()[]{}=+-*/.,:;#_", min_size=1)
ESCAPED = [("'", "\\'"), ('"', '\\"'), ("\n", "\\n"), ("\t", "\\t"), ("\\", "\\\\")]
AS_IS = ["'", '"', "\n", "'}}", "}}"]
CODE_PIECES = st.one_of(
    PLAIN.map(lambda text: (text, text)),
    st.sampled_from(ESCAPED + [(piece, piece) for piece in AS_IS]),
    NON_ASCII.map(lambda char: (char, char)),
    NON_ASCII.map(lambda char: (char, char.encode("unicode_escape").decode("ascii"))),
)
"""(what the code holds, how it may stand in a code string in LLM-I's format): quotes
escaped or not, newlines raw or escaped, non-ASCII as written or as an escape."""
DESCRIPTIONS = st.text(
    st.one_of(st.sampled_from(string.ascii_letters + ' "\\-\n'), NON_ASCII), max_size=30
)


@settings(max_examples=300, deadline=None)
@given(st.lists(CODE_PIECES, min_size=1, max_size=30), DESCRIPTIONS)
def test_code_tags_in_llm_i_format_run_the_code_llm_i_runs(
    pieces: list[tuple[str, str]], description: str
) -> None:
    code = "".join(meant for meant, _ in pieces)
    written = "".join(text for _, text in pieces)
    assume(code.strip() == code != "")
    draft = f"Before.\n<imgen>{code_tag(description, written)}</imgen>\nAfter."
    [body] = llm_i_tag_bodies(draft)
    assert llm_i_parse_image_tag(body) == {
        "source": "code", "description": description, "params": {"code": written},
    }
    if written.isascii():
        assert llm_i_sanitize_code(written) == code
    request = only_request(draft)
    assert (request["source"], request["description"]) == ("code", description.strip())
    assert unfenced(request["params"]["code"]) == code


ASCII_CODE = st.lists(st.sampled_from(
    ["\\", "\\\\", "\\x4", "\\x41", "\\u00e9", "\\U0001F600", "\\N{BULLET}", "\\N{NO SUCH}",
     "\\141", "\\8", "\\d", "\\n", "\\t", "\\'", '\\"', "'", '"', "\n", " ", "'}}", "{", "x",
     "0", "plt.plot([1])"]
), max_size=12).map("".join)
"""Code strings of ASCII escapes that decode and escapes that do not."""


@settings(max_examples=300, deadline=None)
@given(ASCII_CODE)
def test_any_ascii_code_string_reads_as_llm_i_runs_it(written: str) -> None:
    body = code_tag("a chart", written)
    assert llm_i_code(body) == written
    runs = llm_i_sanitize_code(written)
    plan = parse_draft(f"<imgen>{body}</imgen>", REQUIRED)
    if runs.strip():
        assert [r["params"]["code"] for r in plan.requests] == [runs]
    else:  # LLM-I runs the empty code and counts the blank chart it draws
        [failure] = plan.failures
        assert failure["error"] == "bad tag: the code tag's params lack 'code'"


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="<`"), min_size=1)
"""Any text but tags and fences (test_a_fenced_code_string_runs_without_its_fence)."""
PARAMS = {
    "search": st.fixed_dictionaries({"query": TEXT.filter(str.strip)}),
    "diffusion": st.fixed_dictionaries({"prompt": TEXT.filter(str.strip)}),
    "code": st.fixed_dictionaries({"code": TEXT.filter(str.strip)}),
    "edit": st.fixed_dictionaries(
        {"img_index": st.integers(0, 2), "prompt": TEXT.filter(str.strip)}
    ),
}
TAGS = st.sampled_from(sorted(PARAMS)).flatmap(lambda source: st.fixed_dictionaries(
    {"source": st.just(source), "description": TEXT, "params": PARAMS[source]}
))


@settings(max_examples=300, deadline=None)
@given(TAGS, st.sampled_from([repr, lambda tag: json.dumps(tag, ensure_ascii=False)]))
def test_literal_tags_of_every_source_read_as_in_llm_i(tag: dict[str, Any], write: Any) -> None:
    body = write(tag)
    theirs = llm_i_parse_image_tag(body)
    assert theirs is not None
    if llm_i_reads_code_tag(body):
        assume(body.isascii())  # non-ASCII code: test_non_ascii_code_stays_as_written
        theirs["params"]["code"] = llm_i_sanitize_code(theirs["params"]["code"])
    request = only_request(f"<imgen>{body}</imgen>", n_inputs=3)
    assert request["source"] == theirs["source"]
    assert request["description"] == theirs["description"].strip()
    assert request["params"] == theirs["params"]


def test_non_ascii_code_stays_as_written() -> None:
    written = "plt.bar(['Kyoto', 'Ōsaka'], [1, 2])\\nplt.title('京都 — rainfall')"
    body = code_tag("Rainfall", written)
    code = only_request(f"<imgen>{body}</imgen>")["params"]["code"]
    assert code == "plt.bar(['Kyoto', 'Ōsaka'], [1, 2])\nplt.title('京都 — rainfall')"
    # LLM-I's unicode_escape reads the UTF-8 bytes of each such character as Latin-1.
    garbled = code.encode("utf-8").decode("latin-1")
    assert llm_i_sanitize_code(llm_i_code(body)) == garbled


def test_a_literal_code_string_is_unescaped_once() -> None:
    body = """{'source': 'code', 'params': {'code': 'plt.title("a\\\\nb")'}, 'description': 'd'}"""
    code = only_request(f"<imgen>{body}</imgen>")["params"]["code"]
    assert code == 'plt.title("a\\nb")'
    compile(code, "<chart>", "exec")
    theirs = llm_i_code(body)
    assert theirs == code
    with pytest.raises(SyntaxError):  # the newline unescaped a second time ends the string
        compile(llm_i_sanitize_code(theirs), "<chart>", "exec")


@pytest.mark.parametrize("body", [
    code_tag("Line", "```python\\nplt.plot([1, 2])\\n```"),
    json.dumps({"source": "code", "description": "Line",
                "params": {"code": "```python\nplt.plot([1, 2])\n```"}}),
])
def test_a_fenced_code_string_runs_without_its_fence(body: str) -> None:
    code = unfenced(only_request(f"<imgen>{body}</imgen>")["params"]["code"])
    assert code == "plt.plot([1, 2])"
    assert llm_i_sanitize_code(llm_i_code(body)).strip() == code


def test_a_code_tags_description_is_taken_as_written_as_in_llm_i() -> None:
    body = code_tag("Sales\\nCosts", "plt.plot([1])")
    theirs = llm_i_parse_image_tag(body)
    assert theirs is not None and theirs["description"] == "Sales\\nCosts"
    assert only_request(f"<imgen>{body}</imgen>")["description"] == "Sales\\nCosts"


@pytest.mark.parametrize(("source", "params", "meant"), [
    ("search", '{"query": "AC\\/DC live"}', {"query": "AC/DC live"}),
    ("diffusion", '{"prompt": "a cat \\ud83d\\ude00"}', {"prompt": "a cat \U0001f600"}),
])
def test_a_json_body_reads_as_json_where_a_python_literal_means_otherwise(
    source: str, params: str, meant: dict[str, str]
) -> None:
    body = f'{{"source": "{source}", "description": "d", "params": {params}}}'
    theirs = llm_i_parse_image_tag(body)
    assert theirs is not None and theirs["params"] != meant  # "\\/" kept; lone surrogates
    assert only_request(f"<imgen>{body}</imgen>")["params"] == meant
