"""The hybrid reward: rule scores, judge answers, the reward formula and ranking."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from helpers import gradient_png, model, tag
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.judge.scoring import (
    Judge,
    RewardWeights,
    Scores,
    describe_error,
    image_count_score,
    parse_scores,
    rank,
    reward,
    rule_score,
    tag_validity,
    tool_success,
)
from llmi.tags import parse_draft
from llmi.state import ImageRef, ImageResult, Segment, failed_result

REQUIRED = {"search": ("query",), "diffusion": ("prompt",), "code": ("code",),
            "edit": ("img_index", "prompt")}
TEXT_JSON = '{{"text": {}, "image": {}}}'
VISION_JSON = '{{"quality": {}, "task_relevance": {}, "text_image_relevance": {}}}'


class Recording(BaseChatModel):
    """Replies in turn with ``replies`` (the last one repeats) and keeps what it was sent."""

    replies: list[str]
    seen: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(self, messages: list[BaseMessage], stop: Any = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.seen.append(messages)
        reply = self.replies[min(len(self.seen), len(self.replies)) - 1]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


class Raising(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "raising"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise TimeoutError("the judge server did not answer in 120 s")


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def made(slot: int, ref: ImageRef, source: str = "search", description: str = "a picture",
         **provenance: Any) -> ImageResult:
    return ImageResult(slot=slot, source=source, description=description, ok=True, image=ref,
                       error=None, tool=source, backend="fake", provenance=provenance,
                       seconds=0.1, attempt=0)


def document(store: ArtifactStore, n_images: int) -> tuple[list[Segment], list[ImageResult]]:
    segments: list[Segment] = [{"kind": "text", "text": "Intro."}]
    results = []
    for slot in range(n_images):
        segments.append({"kind": "slot", "slot": slot})
        results.append(made(slot, store.put(gradient_png(slot))))
    return segments, results


def scores(reward_: float, *, unknown: int = 0, rule: float = 1.0) -> Scores:
    return Scores(rules={"image_count": rule}, llm={}, vision={}, reward=reward_,
                  unknown=[f"llm.k{i}" for i in range(unknown)], errors=[])


def image_urls(message: BaseMessage) -> list[str]:
    return [p["image_url"]["url"] for p in message.content
            if isinstance(p, dict) and p["type"] == "image_url"]


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


# Rule scores


@pytest.mark.parametrize(("image_num", "n_images", "strict", "lenient"), [
    (-1, 0, 1.0, 1.0),
    (-1, 1, 0.0, 0.0),
    (-1, 3, 0.0, 0.0),
    (0, 0, 1.0, 1.0),
    (0, 6, 1.0, 1.0),
    (99, 0, 0.0, 0.0),
    (99, 1, 1.0, 1.0),
    (99, 12, 1.0, 1.0),
    (3, 3, 1.0, 1.0),
    (3, 2, 0.0, 2 / 3),  # too few: 2 / 3
    (3, 4, 0.0, 0.7),  # too many: 1 - 0.3 * 1
    (3, 0, 0.0, 0.0),
    (3, 6, 0.0, 0.1),  # 1 - 0.3 * 3
    (3, 7, 0.0, 0.0),  # max(0, 1 - 0.3 * 4)
    (4, 3, 0.0, 0.75),
    (1, 0, 0.0, 0.0),
    (1, 2, 0.0, 0.7),  # LLM-I's 2 / 1 > 1 becomes 1 - 0.3 * 1
])
def test_image_count_score(image_num: int, n_images: int, strict: float, lenient: float) -> None:
    assert image_count_score(n_images, image_num, lenient=False) == strict
    assert image_count_score(n_images, image_num, lenient=True) == pytest.approx(lenient)


def test_image_count_rejects_unknown_constraints() -> None:
    with pytest.raises(ValueError, match="image_num"):
        image_count_score(1, -2, lenient=False)


def test_tag_validity() -> None:
    assert tag_validity(0, 0) == 1.0
    assert tag_validity(3, 1) == 0.75
    assert tag_validity(0, 2) == 0.0


def test_tool_success_leaves_parser_failures_to_tag_validity(store: ArtifactStore) -> None:
    ref = store.put(gradient_png())
    results = [
        made(0, ref, "search"),
        failed_result(1, "search", "a bridge", "no image found", tool="search"),
        made(2, ref, "code"),
        failed_result(3, "unknown", "", "bad tag: the tag has no source", tool="parser"),
    ]
    assert tool_success(results) == pytest.approx(2 / 3)
    assert tool_success([]) == 1.0


# Judge answers


@pytest.mark.parametrize(("answer", "expected"), [
    ('{"text": 4, "image": 3}', (4, 3)),
    ('Here you go:\n```json\n{"Text": 5, "Image": 2}\n```\nThanks!', (5, 2)),
    ("Text: 4/5\nImage: 3/5", (4, 3)),
    ("text score - 4, image score - 2", (4, 2)),
    ("**Text**: 3\n**Image**: 5", (3, 5)),
    ("TEXT=4 IMAGE=3.5", (4, 4)),
    ("Text score is 4; image rating of 2", (4, 2)),
    ("Text: 8/10, Image: 4 out of 5", (None, 4)),
    ("Text: 7\nImage: 0", (None, None)),
    ("Text: -1, Image: 2", (None, 2)),
    ('{"text": "4/5", "image": {"score": 3, "why": "fine"}}', (4, 3)),
    ('{"scores": {"Text Score": 2, "Image Score": 4}}', (2, 4)),
    ("{'text': 4, 'image': 2}", (4, 2)),
    ("Image 2 is blurry, image 3 fine. Final: Text: 4. Image: 3", (4, 3)),
    ('<think>text: 1, image: 1 at first</think>{"text": 5, "image": 5}', (5, 5)),
    ('{"text": true, "image": null}', (None, None)),
    ("A lovely document, well done.", (None, None)),
    ("Text: 4", (4, None)),
])
def test_parse_scores(answer: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_scores(answer, ("text", "image")) == dict(zip(("text", "image"), expected))


def test_parse_scores_reads_multiword_keys_in_any_spelling() -> None:
    keys = ("quality", "task_relevance", "text_image_relevance")
    answers = [
        '{"Quality": 4, "Task Relevance": 5, "Text-Image Relevance": 3}',
        "Image quality: 4\nTask relevance: 5\nText-image relevance: 3",
        '{"quality_score": 4.4, "task_relevance_score": 5, "text_image_relevance_score": "3"}',
    ]
    for answer in answers:
        assert parse_scores(answer, keys) == {"quality": 4, "task_relevance": 5,
                                              "text_image_relevance": 3}


# The reward


def test_reward_matches_llm_i_formula_with_default_weights(store: ArtifactStore) -> None:
    segments, results = document(store, 2)
    judge = Judge(llm=model(TEXT_JSON.format(4, 2)), vlm=model(VISION_JSON.format(4, 5, 3)))

    got = judge.score("Two pictures of Kyoto", "draft", segments, results, store=store,
                      image_num=2)

    # S_num = 1; S_mllm = mean(0.75, 1, 0.5) = 0.75;
    # S_llm = ((1.4 * 4 + 0.6 * 2) / 2 - 1) / 4 = (3.4 - 1) / 4 = 0.6
    assert got["rules"] == {"tag_validity": 1.0, "tool_success": 1.0, "image_count": 1.0}
    assert got["llm"] == {"text": 4, "image": 2}
    assert got["vision"] == {"quality": 4, "task_relevance": 5, "text_image_relevance": 3}
    assert got["reward"] == pytest.approx(0.2 * 1 + 0.3 * 0.75 * 1 + 0.5 * 0.6)
    assert got["unknown"] == [] and got["errors"] == []


def test_vision_term_is_gated_by_the_rule_score() -> None:
    weights = RewardWeights()
    assert reward(0.0, 1.0, 1.0, weights) == pytest.approx(0.5)
    assert reward(0.5, 1.0, 0.0, weights) == pytest.approx(0.2 * 0.5 + 0.3 * 0.5)


def test_custom_weights_swap_the_ranking(store: ArtifactStore) -> None:
    segments, results = document(store, 1)

    def scored(weights: RewardWeights) -> list[tuple[str, Scores]]:
        fluent = Judge(llm=model(TEXT_JSON.format(5, 5)), vlm=model(VISION_JSON.format(2, 2, 2)),
                       weights=weights)
        pretty = Judge(llm=model(TEXT_JSON.format(2, 2)), vlm=model(VISION_JSON.format(5, 5, 5)),
                       weights=weights)
        return [(name, judge.score("p", "d", segments, results, store=store))
                for name, judge in (("fluent", fluent), ("pretty", pretty))]

    by_default = scored(RewardWeights())
    assert [s["reward"] for _, s in by_default] == pytest.approx([0.775, 0.625])
    assert rank(by_default) == ["fluent", "pretty"]

    vision_heavy = scored(RewardWeights.from_setting("0.2,0.7,0.1"))
    assert [s["reward"] for _, s in vision_heavy] == pytest.approx([0.475, 0.925])
    assert rank(vision_heavy) == ["pretty", "fluent"]


def test_weights_from_setting() -> None:
    assert RewardWeights.from_setting("0.2,0.3,0.5") == RewardWeights()
    assert RewardWeights.from_setting("0.2,0.3,0.5", "1.4,0.6") == RewardWeights()
    assert RewardWeights.from_setting(" 1, 0 ,2 ") == RewardWeights(1.0, 0.0, 2.0)
    assert RewardWeights.from_setting("0.2,0.3,0.5", " 1.5, 0.5") == RewardWeights(
        text=1.5, image=0.5)
    for bad in ["", "0.2,0.3", "0.2,0.3,0.5,0", "a,b,c", "-1,1,1", "0,0,0", "nan,1,1"]:
        with pytest.raises(ValueError, match="reward weight"):
            RewardWeights.from_setting(bad)
    for bad in ["", "1.4", "1.4,0.6,0", "a,b", "-1,1", "0,0", "inf,1"]:
        with pytest.raises(ValueError, match="text judge|reward weight"):
            RewardWeights.from_setting("0.2,0.3,0.5", bad)


def test_text_judge_weights_weigh_text_over_image(store: ArtifactStore) -> None:
    segments, results = document(store, 1)
    answers = {"text": model(TEXT_JSON.format(5, 1)), "image": model(TEXT_JSON.format(1, 5))}

    def reward_of(good: str, weights: RewardWeights) -> float:
        judge = Judge(llm=answers[good], vlm=model(VISION_JSON.format(5, 5, 5)), weights=weights)
        return judge.score("p", "d", segments, results, store=store, image_num=1)["reward"]

    # S_llm = (w_text * (5 - 1) / 4 + w_image * (1 - 1) / 4) / (w_text + w_image)
    assert reward_of("text", RewardWeights()) == pytest.approx(0.2 + 0.3 + 0.5 * 1.4 / 2)
    assert reward_of("image", RewardWeights()) == pytest.approx(0.2 + 0.3 + 0.5 * 0.6 / 2)
    equal = RewardWeights(text=1, image=1)
    assert reward_of("text", equal) == reward_of("image", equal) == pytest.approx(0.75)


def test_weights_need_not_sum_to_one() -> None:
    doubled = RewardWeights(0.4, 0.6, 1.0)
    assert reward(1.0, 0.75, 0.5, doubled) == pytest.approx(reward(1.0, 0.75, 0.5, RewardWeights()))


def test_no_free_image_credit_when_images_were_asked_for(store: ArtifactStore) -> None:
    vlm = Recording(replies=[VISION_JSON.format(5, 5, 5)])
    judge = Judge(llm=model(TEXT_JSON.format(5, 5)), vlm=vlm)
    text_only: list[Segment] = [{"kind": "text", "text": "Only words."}]

    asked = judge.score("p", "Only words.", text_only, [], store=store, image_num=0)
    assert asked["vision"] == {} and asked["unknown"] == []
    assert asked["reward"] == pytest.approx(0.2 + 0.3 * 0 + 0.5)

    not_asked = judge.score("p", "Only words.", text_only, [], store=store, image_num=-1)
    assert not_asked["reward"] == pytest.approx(1.0)
    assert vlm.seen == []

    with_image = judge.score("p", "d", *document(store, 1), store=store, image_num=0)
    assert rank([("words", asked), ("picture", with_image)]) == ["picture", "words"]


def test_screen_rules_and_no_image_plan() -> None:
    judge = Judge(llm=model(TEXT_JSON.format(5, 5)))
    draft = "Kyoto.\n" + tag("search", query="Kinkaku-ji") + "\n" + tag("diffusion") + "\nEnd."
    plan = parse_draft(draft, REQUIRED)

    got = judge.screen("p", draft, plan.requests, plan.failures, image_num=2, lenient=True)
    assert got["rules"] == {"tag_validity": 0.5, "image_count": 0.5}
    assert got["vision"] == {}
    # the vision term is not judged at screening: its weight is left out
    assert got["reward"] == pytest.approx((0.2 * 0.25 + 0.5 * 1) / 0.7)

    empty = judge.screen("p", "Only words.", [], [], image_num=99)
    assert empty["rules"]["image_count"] == 0.0
    assert empty["reward"] == pytest.approx(0.5)


def test_score_counts_tags_tools_and_missing_results(store: ArtifactStore) -> None:
    ref = store.put(gradient_png())
    segments: list[Segment] = [{"kind": "slot", "slot": s} for s in range(4)]
    results = [
        made(0, ref),
        failed_result(1, "search", "x", "no image found", tool="search"),
        failed_result(2, "unknown", "", "bad tag: unreadable", tool="parser"),
    ]  # slot 3 has no result

    got = Judge().score("p", "d", segments, results, store=store, image_num=3, lenient=True)

    assert got["rules"] == pytest.approx(
        {"tag_validity": 0.75, "tool_success": 1 / 3, "image_count": 1 / 3})


# Unknown scores


def test_failing_and_confused_judges_are_recorded_as_unknown(store: ArtifactStore) -> None:
    segments, results = document(store, 1)
    judge = Judge(llm=Raising(), vlm=model("What a lovely picture!"))

    got = judge.score("p", "d", segments, results, store=store, image_num=1)

    assert got["llm"] == {"text": None, "image": None}
    assert got["vision"] == dict.fromkeys(("quality", "task_relevance", "text_image_relevance"))
    assert got["unknown"] == ["llm.text", "llm.image", "vision.quality",
                              "vision.task_relevance", "vision.text_image_relevance"]
    assert "TimeoutError" in got["errors"][0] and "120 s" in got["errors"][0]
    assert "What a lovely picture!" in got["errors"][1]
    assert got["reward"] == pytest.approx(1.0)  # the rules alone


def test_an_unreadable_answer_is_asked_for_once_more(store: ArtifactStore) -> None:
    segments, results = document(store, 1)
    vlm = Recording(replies=["What a lovely picture!", VISION_JSON.format(4, 4, 4)])
    llm = Recording(replies=["Text: 5. Image: I cannot tell.", "Image: 3", "Text: 1, Image: 1"])

    got = Judge(llm=llm, vlm=vlm).score("p", "d", segments, results, store=store, image_num=1)

    assert len(vlm.seen) == 2 and len(llm.seen) == 2  # one retry, no more
    assert got["vision"] == {"quality": 4, "task_relevance": 4, "text_image_relevance": 4}
    assert got["llm"] == {"text": 5, "image": 3}  # each score from the answer that gave it
    assert got["errors"] == []


def test_a_judge_unreadable_twice_or_failing_is_not_asked_a_third_time() -> None:
    confused = Recording(replies=["No idea."])
    scores, errors = Judge(llm=confused).judge_text("p", "d")
    assert scores == {"text": None, "image": None} and len(confused.seen) == 2
    assert "No idea." in errors[0]

    scores, errors = Judge(llm=Raising()).judge_text("p", "d")
    assert scores == {"text": None, "image": None} and "TimeoutError" in errors[0]


def test_partly_unknown_judge_uses_its_known_scores() -> None:
    got = Judge(llm=model("Text: 5. Image: I cannot tell.")).screen("p", "d", [], [], image_num=-1)
    assert got["llm"] == {"text": 5, "image": None}
    assert got["unknown"] == ["llm.image"]
    assert "image" in got["errors"][0]
    assert got["reward"] == pytest.approx(1.0)


def test_without_judge_models_the_rules_rank(store: ArtifactStore) -> None:
    judge = Judge()
    good = parse_draft("a\n" + tag("search", query="q") + "\nb", REQUIRED)
    broken = parse_draft("a\n" + tag("search", query="q") + tag("nope") + "\nb", REQUIRED)
    none = parse_draft("Only words.", REQUIRED)

    screened = {name: judge.screen("p", "d", plan.requests, plan.failures, image_num=99)
                for name, plan in (("broken", broken), ("none", none), ("good", good))}

    assert screened["good"]["reward"] == 1.0
    assert screened["broken"]["reward"] == pytest.approx(0.5)
    assert screened["none"]["reward"] == 0.0
    assert any("no text judge" in e for e in screened["good"]["errors"])
    assert rank(list(screened.items())) == ["good", "broken", "none"]


# Ranking


def test_rank_breaks_ties_deterministically() -> None:
    scored = [
        ("b", scores(0.5)),
        ("a", scores(0.5)),
        ("unsure", scores(0.5, unknown=2)),
        ("weak-rules", scores(0.5, rule=0.4)),
        ("best", scores(0.9, unknown=5)),
        ("noise", scores(0.1 + 0.2 + 0.2)),  # 0.5000000000000001
    ]
    expected = ["best", "a", "b", "noise", "weak-rules", "unsure"]
    assert rank(scored) == expected
    assert rank(list(reversed(scored))) == expected
    assert rule_score({"tag_validity": 0.5, "image_count": 0.5}) == 0.25


# The vision judge's view


def test_vision_judge_sees_inputs_and_document_images_in_order(store: ArtifactStore) -> None:
    photo, search, edit = gradient_png(1), gradient_png(2), gradient_png(3)
    input_ref, search_ref, edit_ref = store.put(photo), store.put(search), store.put(edit)
    segments: list[Segment] = [
        {"kind": "text", "text": "The old bridge."},
        {"kind": "slot", "slot": 1},
        {"kind": "text", "text": "Rain over it."},
        {"kind": "slot", "slot": 2},
        {"kind": "slot", "slot": 3},
    ]
    results = [
        made(1, search_ref, "search", "the bridge in 1900"),
        failed_result(2, "diffusion", "rain over the bridge", "server down", tool="diffusion"),
        made(3, edit_ref, "edit", "the photo at night", edited=input_ref["sha256"]),
    ]
    vlm = Recording(replies=[VISION_JSON.format(4, 4, 4)])

    Judge(vlm=vlm).score("Bridge story", "d", segments, results, store=store,
                         inputs=[input_ref], image_num=3)

    (system, human), = vlm.seen
    assert "text_image_relevance" in system.content
    assert image_urls(human) == [data_url(photo), data_url(search), data_url(edit)]
    texts = [p["text"] for p in human.content if p["type"] == "text"]
    order = ["Bridge story", "Input image 0:", "The document:", "The old bridge.",
             "Image 1 (search; should show: the bridge in 1900):", "Rain over it.",
             "[Image 2 is missing. It should have shown: rain over the bridge]",
             "Image 3 (edit of image 0; should show: the photo at night):"]
    positions = [next(i for i, t in enumerate(texts) if wanted in t) for wanted in order]
    assert positions == sorted(positions)
    label = human.content.index(
        {"type": "text", "text": "Image 1 (search; should show: the bridge in 1900):"})
    assert human.content[label + 1]["image_url"]["url"] == data_url(search)


def test_unreadable_stored_image_is_described_as_missing(store: ArtifactStore) -> None:
    ref = store.put(gradient_png())
    store.path(ref).unlink()
    vlm = Recording(replies=[VISION_JSON.format(1, 1, 1)])
    Judge(vlm=vlm).score("p", "d", [{"kind": "slot", "slot": 0}], [made(0, ref)], store=store)
    (_, human), = vlm.seen
    assert image_urls(human) == []
    assert any("Image 0 is missing" in p["text"] for p in human.content if p["type"] == "text")


# Relevance checks


@pytest.mark.parametrize(("answer", "verdict"), [
    ('{"match": "yes", "reason": "It shows the Golden Pavilion."}', True),
    ('```json\n{"match": "no", "reason": "It shows a dog."}\n```', False),
    ('{"match": false, "reason": "wrong chart"}', False),
    ("Yes. The chart shows the monthly rainfall.", True),
    ("NO - the photo shows Osaka castle", False),
    ("It is hard to say.", None),
])
def test_check_relevance(answer: str, verdict: bool | None) -> None:
    vlm = Recording(replies=[answer])
    image = gradient_png()
    ok, reason = Judge(vlm=vlm).check_relevance(image, "Kinkaku-ji", "The golden temple.")
    assert ok is verdict and reason
    (_, human), = vlm.seen
    assert image_urls(human) == [data_url(image)]
    assert "Kinkaku-ji" in human.content[1]["text"] and "golden temple" in human.content[1]["text"]


def test_check_relevance_without_or_with_a_failing_vlm() -> None:
    assert Judge().check_relevance(gradient_png(), "x", "y")[0] is None
    ok, reason = Judge(vlm=Raising()).check_relevance(gradient_png(), "x", "y")
    assert ok is None and "TimeoutError" in reason
    ok, reason = Judge(vlm=model("yes")).check_relevance(b"not an image", "x", "y")
    assert ok is False and "not a readable image" in reason


# Consistency checks


@pytest.mark.parametrize(("answer", "verdict"), [
    ('{"match": "yes", "reason": "The same fox with the white-tipped tail."}', "same"),
    ('```json\n{"match": "no", "reason": "This fox is grey."}\n```', "different"),
    ("No - another fox altogether.", "different"),
    ("Hard to say at this size.", "unchecked"),
])
def test_check_consistency(answer: str, verdict: str) -> None:
    vlm = Recording(replies=[answer])
    first, second, new = gradient_png(1), gradient_png(2), gradient_png(3)
    checked = Judge(vlm=vlm).check_consistency(new, [first, second], "Rufus: a red fox")
    assert checked["verdict"] == verdict and checked["reason"]
    (system, human), = vlm.seen
    assert "same subject" in system.content
    # The references first, the new image last, the subject named between them.
    assert image_urls(human) == [data_url(first), data_url(second), data_url(new)]
    assert human.content[-1] == {"type": "image_url", "image_url": {"url": data_url(new)}}
    assert "Rufus: a red fox" in human.content[-2]["text"]


def test_check_consistency_that_cannot_be_given_is_unchecked() -> None:
    image = gradient_png()
    assert Judge().check_consistency(image, [image])["verdict"] == "unchecked"
    failed = Judge(vlm=Raising()).check_consistency(image, [image])
    assert failed["verdict"] == "unchecked" and "TimeoutError" in failed["reason"]
    vlm = Recording(replies=["yes"])
    unreadable = Judge(vlm=vlm).check_consistency(image, [b"not an image"])
    assert unreadable["verdict"] == "unchecked" and "not a readable image" in unreadable["reason"]
    assert vlm.seen == []


def test_the_document_judge_weighs_recurring_subjects_and_sees_what_keeps_them(
    store: ArtifactStore,
) -> None:
    photo, first, later = (store.put(gradient_png(seed)) for seed in (1, 2, 3))
    keeping = {**made(2, later, "diffusion", "Rufus asleep"), "refs": [0, 1], "subject": "Rufus"}
    segments: list[Segment] = [{"kind": "slot", "slot": 1}, {"kind": "slot", "slot": 2}]
    vlm = Recording(replies=[VISION_JSON.format(4, 4, 4)])
    Judge(vlm=vlm).score("Rufus", "d", segments, [made(1, first, "diffusion", "Rufus"), keeping],
                         store=store, inputs=[photo])
    (system, human), = vlm.seen
    assert "recurs across images" in system.content
    texts = [p["text"] for p in human.content if p["type"] == "text"]
    assert "Image 1 (diffusion; should show: Rufus):" in texts
    assert ("Image 2 (diffusion; keeps Rufus from input image 0 and image 1; "
            "should show: Rufus asleep):") in texts


# Configuration


def test_judge_from_context() -> None:
    ctx = Context(judge_model="judge", vision_judge_model="eyes",
                  judge_base_url="http://127.0.0.1:9/v1", reward_weights="0.1,0.2,0.7",
                  text_judge_weights="1.5,0.5")
    judge = Judge.from_context(ctx)
    assert judge.llm.model_name == "judge" and judge.vlm.model_name == "eyes"
    assert judge.weights == RewardWeights(0.1, 0.2, 0.7, text=1.5, image=0.5)

    bare = Judge.from_context(Context(judge_model="", vision_judge_model=""))
    assert bare.llm is None and bare.vlm is None and bare.weights == RewardWeights()


def test_a_judges_error_names_no_folder_of_the_machine(tmp_path: Path) -> None:
    error = FileNotFoundError(2, "No such file or directory", str(tmp_path / "cache" / "x.png"))
    described = describe_error(error)
    assert described == "FileNotFoundError: [Errno 2] No such file or directory: '…/x.png'"
