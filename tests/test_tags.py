"""The tag parser against the shared planner corpus and hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmi.tags import TagScanner, parse_draft, tag_bodies
from conftest import CORPUS

REQUIRED = {
    "search": ("query",),
    "diffusion": ("prompt",),
    "code": ("code",),
    "edit": ("img_index", "prompt"),
}
CASES = json.loads((CORPUS / "cases.json").read_text())["cases"]


def _parse(name: str):
    case = CASES[name]
    return case, parse_draft((CORPUS / name).read_text(), REQUIRED, n_inputs=case["inputs"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case(name: str) -> None:
    case, plan = _parse(name)
    requests = {r["slot"]: r for r in plan.requests}
    failures = {r["slot"]: r for r in plan.failures}
    assert set(requests) | set(failures) == {tag["index"] for tag in case["tags"]}
    assert not set(requests) & set(failures)
    for tag in case["tags"]:
        slot = tag["index"]
        if tag["ok"] is True:
            assert slot in requests, failures.get(slot)
            assert requests[slot]["source"] == tag["source"]
            assert requests[slot]["depends_on"] == tag.get("depends_on")
        elif tag["ok"] is False:
            assert slot in failures
            assert failures[slot]["source"] == tag["source"]
            assert failures[slot]["error"].startswith("bad tag: ")
        else:
            record = requests.get(slot) or failures[slot]
            assert record["source"] == tag["source"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_tag_text_leaks_into_segments(name: str) -> None:
    _, plan = _parse(name)
    text = "\n".join(s["text"] for s in plan.segments if s["kind"] == "text")
    assert "imgen" not in text
    assert "'params'" not in text and '"params"' not in text
    slots = [s["slot"] for s in plan.segments if s["kind"] == "slot"]
    assert slots == sorted(r["slot"] for r in plan.requests + plan.failures)


def test_code_with_raw_newlines_becomes_runnable_source() -> None:
    _, plan = _parse("ev_report.txt")
    code = plan.requests[0]["params"]["code"]
    assert code.splitlines()[0] == "years = [2020, 2021, 2022, 2023, 2024]"
    assert 'df = pd.DataFrame({"China": china' in code
    compile(code, "<chart>", "exec")
    assert "Leading EV makers' share, 2024" in plan.requests[1]["params"]["code"]


def test_non_ascii_survives() -> None:
    _, plan = _parse("kyoto_travel.txt")
    assert "Kyoto — average rainfall" in plan.requests[2]["params"]["code"]


def test_fence_around_a_tag_is_removed() -> None:
    _, plan = _parse("messy_format.txt")
    text = "\n".join(s["text"] for s in plan.segments if s["kind"] == "text")
    assert "```" not in text
    assert "100 °C" in text


def test_reasons_name_the_problem() -> None:
    _, plan = _parse("malformed.txt")
    errors = {r["slot"]: r["error"] for r in plan.failures}
    assert "unknown source 'video'" in errors[0]
    assert "no params" in errors[1]
    assert "img_index 5" in errors[2]
    assert {r["description"] for r in plan.failures} >= {"Wind turbines turning"}


def test_input_images_take_the_first_indices() -> None:
    _, plan = _parse("with_inputs.txt")
    assert [r["slot"] for r in plan.requests] == [2, 3, 4]
    assert [r["params"]["img_index"] for r in plan.requests] == [0, 1, 2]


def test_edit_cannot_point_at_itself_or_forward() -> None:
    draft = "<imgen>{'source': 'edit', 'params': {'img_index': 0, 'prompt': 'x'}}</imgen>"
    plan = parse_draft(draft, REQUIRED)
    assert plan.requests == []
    assert "img_index 0" in plan.failures[0]["error"]


def test_image_limit_fails_the_extra_tags() -> None:
    tag = "<imgen>{'source': 'search', 'params': {'query': 'q'}}</imgen>\n"
    plan = parse_draft(tag * 3, REQUIRED, max_images=2)
    assert [r["slot"] for r in plan.requests] == [0, 1]
    assert "more than 2 images" in plan.failures[0]["error"]


def test_a_registered_fifth_source_is_accepted() -> None:
    draft = "<imgen>{'source': 'map', 'params': {'place': 'Kyoto'}}</imgen>"
    plan = parse_draft(draft, {**REQUIRED, "map": ("place",)})
    assert plan.requests[0]["source"] == "map"


@pytest.mark.parametrize(
    "body",
    ["", "[1, 2]", "{'source': ", "{{{{", "'''", "{'source': 'code', 'params': {'code': ''}}",
     "{'source': 'edit', 'params': {'img_index': 'two', 'prompt': 'p'}}", "{" * 5000],
)
def test_bad_bodies_become_slot_errors(body: str) -> None:
    plan = parse_draft(f"before <imgen>{body}</imgen> after", REQUIRED)
    assert plan.requests == [] and len(plan.failures) == 1
    assert plan.failures[0]["error"].startswith("bad tag: ")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(
    ["<imgen>", "</imgen>", "{", "}", "'", '"', "\n", "```", "source", ":", "params",
     "'search'", "{'query': 'x'}", "text ", "\\", "img_index", "0"]), max_size=40))
def test_parser_never_raises(pieces: list[str]) -> None:
    plan = parse_draft("".join(pieces), REQUIRED, n_inputs=1)
    for segment in plan.segments:
        if segment["kind"] == "text":
            assert "<imgen>" not in segment["text"] and "</imgen>" not in segment["text"]


def _scanned(draft: str, cuts: list[int], n_inputs: int) -> list:
    scanner = TagScanner(REQUIRED, n_inputs=n_inputs, max_images=12)
    bounds = [0, *sorted(cuts), len(draft)]
    return [request for start, end in zip(bounds, bounds[1:])
            for request in scanner.feed(draft[start:end])]


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_a_streamed_corpus_draft_yields_the_plan_s_requests_as_tags_close(name: str, data) -> None:
    case = CASES[name]
    draft = (CORPUS / name).read_text()
    plan = parse_draft(draft, REQUIRED, n_inputs=case["inputs"], max_images=12)
    cuts = data.draw(st.lists(st.integers(0, len(draft)), max_size=40))
    scanned = _scanned(draft, cuts, case["inputs"])
    assert len({r["slot"] for r in scanned}) == len(scanned)
    # Every request read early is the plan's; only a tag whose closing tag is missing
    # waits for the whole draft.
    assert all(request in plan.requests for request in scanned)
    bodies = tag_bodies(draft)
    closed = {r["slot"] for r in plan.requests
              if f"{bodies[r['slot'] - case['inputs']]}</imgen>" in draft}
    assert {r["slot"] for r in scanned} >= closed


def test_a_tag_is_read_the_moment_its_closing_tag_arrives() -> None:
    scanner = TagScanner(REQUIRED)
    tag = "<imgen>{'source': 'code', 'description': 'd', 'params': {'code': 'plt.plot([1])'}}"
    assert scanner.feed("Intro. " + tag) == []
    assert scanner.feed("</img") == []
    (request,) = scanner.feed("en> and on")
    assert (request["slot"], request["params"]) == (0, {"code": "plt.plot([1])"})
    assert scanner.feed(" and on</imgen>") == []  # a stray closing tag is no new tag
    scanner.restart()
    assert [r["slot"] for r in scanner.feed(tag + "</imgen>")] == [0]
