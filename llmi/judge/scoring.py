"""LLM-I's hybrid reward: rule scores, a text judge and a vision judge.

The reward of a document (Guo et al. 2025, arXiv 2509.13642; LLM-I's
``verl/workers/reward_manager/llmi.py``) is

    R = w_num * S_num + w_mllm * S_mllm * S_num + w_llm * S_llm

with every 1-5 judge score mapped to 0-1 by (x - 1) / 4. S_mllm is the mean of the vision
judge's three scores; S_llm is the text judge's text and image scores weighted 1.4 and 0.6
(``RewardWeights``, ``LLMI_TEXT_JUDGE_WEIGHTS``). Two rule sets (``RewardRules``) turn
the scores into R:

- ``llm-i``, the trainer rewards' default (``llmi.rewards``), is LLM-I's
  (``verl/utils/reward_score/llmi_rm.py``): S_num is the image-count score of the images
  made, lenient on the train split and exact on any other; more than ten images get the
  vision judge's lowest scores unasked; a document of images alone gets the lowest text
  score; a score a configured judge did not give (its call failed, or its answer could
  not be read after one retry) counts as the lowest, 1, so a policy gains nothing by
  confusing its judge. A broken tag or a failed tool costs its image, once.
- ``strict``, the judge's default (evaluation and test-time scaling), is llmi's: S_num is
  the product of the image-count score, tag validity and, once tools ran, tool success,
  so rules alone still tell documents apart when no judge is configured. Unknown scores
  are recorded and left out: a term whose scores are all unknown leaves the reward, which
  is the weighted sum of the known terms divided by the sum of their weights. With all
  terms known and weights that sum to 1 that is LLM-I's formula, and R stays within
  0..1 for any weights.

Under both, and unlike LLM-I:

- No free image credit: a document asked for images (``image_num`` != -1) that has
  none gets S_mllm = 0 (LLM-I gives it 5, 5, 5). One asked for none that has none gets
  S_mllm = 1, as in LLM-I, so the vision term becomes w_mllm * S_num.
- A slot that failed because its tool's service did (down, out of quota, too slow, not
  configured) is not charged when the caller excludes infrastructure failures (the
  trainer rewards' default): it counts as an image, and the vision judge leaves it out.
- A judge that is not configured has unknown scores, left out of the reward under
  either rule set; with no judge models R follows the rules alone.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from llmi.judge import prompts
from llmi.artifacts import ArtifactStore, NotAnImage, inspect_image
from llmi.context import Context
from llmi.machine_paths import without_machine_paths
from llmi.models import TEXT_JUDGE, VISION_JUDGE, Role, judge_model
from llmi.tags import PARSER
from llmi.reasoning import NoAnswer, answer_of, cut_off_note, split_reply
from llmi.state import (
    Consistency,
    ImageRef,
    ImageRequest,
    ImageResult,
    Segment,
    failed_result,
)

TEXT_KEYS = ("text", "image")
VISION_KEYS = ("quality", "task_relevance", "text_image_relevance")

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+))?", re.IGNORECASE)
_VERDICT = re.compile(r"^\W*(?:(?:answer|verdict|match)\W*)?(yes|no|true|false)\b", re.IGNORECASE)
_VERDICT_KEYS = ("match", "matches", "relevant", "answer", "verdict")


class Scores(TypedDict):
    rules: dict[str, float]
    """``tag_validity``, ``image_count`` and, once tools ran, ``tool_success``; 0..1."""
    llm: dict[str, int | None]
    """The text judge's ``text`` and ``image`` scores, 1-5; None when unknown."""
    vision: dict[str, int | None]
    """The vision judge's ``quality``, ``task_relevance`` and ``text_image_relevance``,
    1-5, None when unknown; empty when there was nothing to show it."""
    reward: float
    unknown: list[str]
    """Unknown scores as ``llm.<key>`` or ``vision.<key>``."""
    errors: list[str]
    infrastructure_failures: int
    """Slots that failed because a tool's service did (down, out of quota, too slow),
    whether or not the reward left them out."""


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward's image-count, vision and text terms, and of the text judge's
    two scores within the text term.

    The defaults are LLM-I's recipe for LLMs (``recipe/llmi/llmi_grpo.sh``:
    ``img_num_factor``, ``mllm_factor``, ``llm_factor`` 0.2, 0.3, 0.5 and
    ``llm_text_factor``, ``llm_image_factor`` 1.4, 0.6); its recipe for MLLMs
    (``mllmi_grpo.sh``) weighs text and image 1.5, 0.5. LLM-I weighs the vision judge's
    three scores equally (its ``mllm_*_factor`` are 1.0), and so does llmi.
    """

    num: float = 0.2
    mllm: float = 0.3
    llm: float = 0.5
    text: float = 1.4
    image: float = 0.6

    def __post_init__(self) -> None:
        for name in ("num", "mllm", "llm", "text", "image"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"reward weight {name} must be a number >= 0, not {value!r}")
        if self.num + self.mllm + self.llm == 0:
            raise ValueError("at least one reward weight must be above 0")
        if self.text + self.image == 0:
            raise ValueError("at least one of the text judge's weights must be above 0")

    @classmethod
    def from_setting(cls, text: str, text_judge: str | None = None) -> RewardWeights:
        """Weights from ``"num,mllm,llm"``, such as LLM-I's ``"0.2,0.3,0.5"``, and the text
        judge's ``"text,image"``, such as LLM-I's ``"1.4,0.6"`` (None keeps the defaults)."""
        terms = _numbers(text, "reward weights", "num,mllm,llm", "0.2,0.3,0.5")
        if text_judge is None:
            return cls(*terms)
        return cls(*terms, *_numbers(text_judge, "text judge weights", "text,image", "1.4,0.6"))

    def of_text_judge(self) -> dict[str, float]:
        """The weight of each of the text judge's scores, by key."""
        return {key: getattr(self, key) for key in TEXT_KEYS}


def _numbers(setting: str, what: str, form: str, example: str) -> list[float]:
    """The comma-separated numbers of ``setting``, as many as ``form`` names."""
    parts = setting.split(",")
    try:
        if len(parts) != len(form.split(",")):
            raise ValueError
        return [float(part) for part in parts]
    except ValueError:
        raise ValueError(
            f"{what} must be {len(form.split(','))} numbers {form!r} such as {example!r}, "
            f"not {setting!r}"
        ) from None


class RewardRules(StrEnum):
    """Which rules turn the rule and judge scores into a reward."""

    LLM_I = "llm-i"
    """LLM-I's (``verl/utils/reward_score/llmi_rm.py``, ``compute_score``): S_num is the
    image-count score alone, of the images made; a document of more than
    ``LLM_I_MOST_JUDGED_IMAGES`` images gets the vision judge's lowest scores unasked; one
    of images alone, with no text, gets the lowest text score; a score that a configured
    judge was asked for and did not give counts as the lowest (``judge_client.py`` reads a
    failed or unreadable answer as 1). The trainer rewards' default."""
    STRICT = "strict"
    """llmi's: S_num is the product of the image-count score, tag validity and tool
    success, so rules alone tell documents apart; unknown scores leave the reward. The
    judge's default, for evaluation and test-time scaling."""

    def s_num(self, rules: Mapping[str, float]) -> float:
        """S_num of the rule scores ``rules``."""
        return rules["image_count"] if self is RewardRules.LLM_I else rule_score(rules)


LLM_I_MOST_JUDGED_IMAGES = 10
"""More images than this get the vision judge's lowest scores under LLM-I's rules
(``llmi_rm.compute_score``: ``vlm_response_str.count("<image>") > 10``)."""
LOWEST = 1
"""The lowest 1-5 score."""


# Rule scores


def image_count_score(n_images: int, image_num: int, *, lenient: bool) -> float:
    """How well ``n_images`` meets LLM-I's ``image_num`` (``llmi_rm.image_num_score_eval``,
    and ``image_num_score`` when ``lenient``).

    -1: none allowed (1 with zero images, else 0); 0: no constraint (1);
    99: at least one (1 with one or more, else 0); n: exactly n (1 on a match, else 0).
    ``lenient`` (LLM-I's for the train split) gives partial credit for exactly-n only:
    n_images / n for too few, max(0, 1 - 0.3 * (n_images - n)) for too many, so one image
    short of four scores 0.75 and one too many 0.7.
    """
    if image_num < -1:
        raise ValueError(f"image_num must be -1, 0, 99 or a count of at least 1, not {image_num}")
    if image_num == -1:
        return float(n_images == 0)
    if image_num == 0:
        return 1.0
    if image_num == 99:
        return float(n_images >= 1)
    if n_images == image_num or not lenient:
        return float(n_images == image_num)
    if n_images < image_num:
        return n_images / image_num
    return max(0.0, 1 - 0.3 * (n_images - image_num))


def tag_validity(n_requests: int, n_failed_tags: int) -> float:
    """Valid tags / all tags; 1.0 when there are no tags."""
    total = n_requests + n_failed_tags
    return n_requests / total if total else 1.0


def tool_success(results: Sequence[ImageResult]) -> float:
    """Images made / images requested of the tools; 1.0 when none were requested.

    Tags the parser failed are left out: ``tag_validity`` counts those.
    """
    requested = [r for r in results if r["tool"] != PARSER]
    return sum(r["ok"] for r in requested) / len(requested) if requested else 1.0


def rule_score(rules: Mapping[str, float]) -> float:
    """The product of the rule scores: S_num under llmi's strict rules."""
    return math.prod(rules.values())


# Judge answers


def parse_scores(text: str, keys: Sequence[str]) -> dict[str, int | None]:
    """The 1-5 scores named ``keys`` in a judge's answer; None for each one not found.

    JSON objects anywhere in the answer are read first (fenced or not, keys in any case
    and spelling: ``Text-Image Relevance`` finds ``text_image_relevance``, ``{"text":
    {"score": 4}}`` works); then prose such as ``Text: 4/5``, ``text score - 4`` or
    ``**Image**: 3``. When a key occurs more than once, the last occurrence counts,
    since judges tend to end with their verdict. A score out of another scale
    (``8/10``) or outside 1-5 is None; one inside rounds half up (3.5 -> 4). Reasoning
    (``<think>`` blocks) is never read.
    """
    text = split_reply(text).answer
    scores = _scores_from_json(text, keys)
    for key in keys:
        if scores.get(key) is None:
            scores[key] = _score_from_prose(text, key)
    return {key: scores[key] for key in keys}


def _scores_from_json(text: str, keys: Sequence[str]) -> dict[str, int | None]:
    wanted = {_norm(key): key for key in keys}
    scores: dict[str, int | None] = {}
    for obj in json_objects(text):
        for name, value in _items(obj):
            key = wanted.get(_norm(name))
            if key and (score := _to_score(value)) is not None:
                scores[key] = score
    return scores


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def _items(obj: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Key-value pairs of a JSON object and of the objects nested in it."""
    for name, value in obj.items():
        yield str(name), value
        if isinstance(value, dict):
            yield from _items(value)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower()).removesuffix("score")


def _to_score(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _in_range(float(value))
    if isinstance(value, str) and (match := _NUMBER.match(value)):
        return _in_range(float(match.group(1)), match.group(2))
    if isinstance(value, dict):
        nested = [v for k, v in value.items() if str(k).lower() in ("score", "rating")]
        return _to_score(nested[0]) if nested else None
    return None


def _in_range(value: float, scale: str | None = None) -> int | None:
    if scale not in (None, "5") or not 1 <= value <= 5:
        return None
    return math.floor(value + 0.5)


def _score_from_prose(text: str, key: str) -> int | None:
    words = r"[\s_-]*".join(map(re.escape, key.split("_")))
    pattern = re.compile(
        rf"(?<![a-z]){words}(?![a-z])(?:[\s_-]*(?:score|rating))?"
        r"[\W_]{0,6}?(?:(?:is|of)\W{0,3}?)?"
        r"(-?\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*(\d+))?",
        re.IGNORECASE,
    )
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return _in_range(float(last.group(1)), last.group(2))


def parse_verdict(text: str) -> tuple[bool | None, str]:
    """(match, reason) from a relevance answer: JSON ``{"match": "yes", ...}`` or a
    leading yes/no; (None, reason) when the answer says neither. Reasoning is never read."""
    text = split_reply(text).answer
    for obj in json_objects(text):
        fields = {_norm(str(k)): v for k, v in obj.items()}
        verdict = next((fields[k] for k in _VERDICT_KEYS if k in fields), None)
        if isinstance(verdict, str) and (match := _VERDICT.match(verdict)):
            verdict = match.group(1).lower() in ("yes", "true")
        if isinstance(verdict, bool):
            return verdict, str(fields.get("reason") or text)
    if match := _VERDICT.match(text):
        return match.group(1).lower() in ("yes", "true"), text
    return None, f"the vision judge's answer says neither yes nor no: {excerpt(text)!r}"


def reward(num: float, mllm: float | None, llm: float | None, weights: RewardWeights) -> float:
    """R = (w_num*S_num + w_mllm*S_mllm*S_num + w_llm*S_llm) / (w_num + w_mllm + w_llm).

    Scores are 0..1; an unknown (None) term leaves both sums. When the known terms'
    weights are all zero, R is S_num.
    """
    terms = [(weights.num, num)]
    if mllm is not None:
        terms.append((weights.mllm, mllm * num))
    if llm is not None:
        terms.append((weights.llm, llm))
    total = sum(weight for weight, _ in terms)
    return sum(weight * score for weight, score in terms) / total if total else num


def rank(scored: Sequence[tuple[str, Scores]]) -> list[str]:
    """Candidate ids, best first: by reward, then fewer unknown scores, then a higher
    rule score, then id ascending. Rewards and rule scores compare to 9 decimals, so
    float noise does not decide an order."""

    def order(item: tuple[str, Scores]) -> tuple[float, int, float, str]:
        candidate, scores = item
        return (
            -round(scores["reward"], 9),
            len(scores["unknown"]),
            -round(rule_score(scores["rules"]), 9),
            candidate,
        )

    return [candidate for candidate, _ in sorted(scored, key=order)]


# The judge


class Judge:
    """Scores plans and finished documents with rules, a text judge and a vision judge.

    Either model may be None: its scores are then unknown and the reward leaves them
    out. Judges never raise on a failing or confused model; they record what happened.
    """

    def __init__(
        self,
        *,
        llm: BaseChatModel | None = None,
        vlm: BaseChatModel | None = None,
        weights: RewardWeights | None = None,
    ) -> None:
        self.llm = llm
        self.vlm = vlm
        self.weights = weights or RewardWeights()

    @classmethod
    def from_context(cls, ctx: Context) -> Judge:
        return cls(
            llm=judge_model(ctx),
            vlm=judge_model(ctx, vision=True),
            weights=RewardWeights.from_setting(ctx.reward_weights or "",
                                               ctx.text_judge_weights or ""),
        )

    def screen(
        self,
        prompt: str,
        draft: str,
        plan_requests: Sequence[ImageRequest],
        plan_failures: Sequence[ImageResult],
        *,
        image_num: int = 0,
        lenient: bool = False,
    ) -> Scores:
        """Scores of a plan before any tool runs: rules on its tags and the text judge.

        The image count is that of the valid tags. No image exists yet, so the vision
        term is left out of the reward, except for a plan without valid tags, whose
        S_mllm the no-image rule fixes.
        """
        rule_scores = {
            "tag_validity": tag_validity(len(plan_requests), len(plan_failures)),
            "image_count": image_count_score(len(plan_requests), image_num, lenient=lenient),
        }
        llm, errors = self.judge_text(prompt, draft, image_num=image_num)
        imageless = None if plan_requests else _no_image_mllm(image_num)
        return self._scores(rule_scores, llm, {}, errors, rules=RewardRules.STRICT,
                            imageless_mllm=imageless)

    def score(
        self,
        prompt: str,
        draft: str,
        segments: Sequence[Segment],
        results: Sequence[ImageResult],
        *,
        store: ArtifactStore,
        inputs: Sequence[ImageRef] = (),
        image_num: int = 0,
        lenient: bool = False,
        text_scores: Mapping[str, int | None] | None = None,
        exclude_infrastructure: bool = False,
        rules: RewardRules = RewardRules.STRICT,
    ) -> Scores:
        """Scores of a finished document: rules on its slots and made images, the text
        judge on its draft, the vision judge on its images in document order, and the
        reward by ``rules``.

        A slot of ``segments`` without a result counts as a failed tool call.
        ``text_scores`` are the text judge's scores of this draft from its screening,
        reused rather than asked for again. With ``exclude_infrastructure``, a slot whose
        tool's service failed is no fault of the document's: it is left out of tool
        success, counts as an image in the image count, and the vision judge is told to
        leave it out; a document with no other image has an unknown vision term.
        """
        slots = _slot_results(segments, results)
        made = [r for r in slots.values() if r["ok"] and r["image"]]
        n_broken = sum(r["tool"] == PARSER for r in slots.values())
        infrastructure = [s for s, r in slots.items() if not r["ok"] and r.get("infrastructure")]
        excused = set(infrastructure) if exclude_infrastructure else set()
        n_images = len(made) + len(excused)
        rule_scores = {
            "tag_validity": tag_validity(len(slots) - n_broken, n_broken),
            "tool_success": tool_success([r for s, r in slots.items() if s not in excused]),
            "image_count": image_count_score(n_images, image_num, lenient=lenient),
        }
        if text_scores is None:
            llm, errors = self.judge_text(prompt, draft, image_num=image_num)
        else:
            llm, errors = dict(text_scores), []
        if rules is RewardRules.LLM_I and _images_only(segments, slots, excused):
            llm = {**llm, "text": LOWEST}
        if rules is RewardRules.LLM_I and n_images > LLM_I_MOST_JUDGED_IMAGES:
            vision, vision_errors = dict.fromkeys(VISION_KEYS, LOWEST), []
        elif made:
            vision, vision_errors = self.judge_images(
                prompt, segments, list(slots.values()), store=store, inputs=inputs,
                image_num=image_num, unavailable=excused,
            )
        else:
            vision, vision_errors = {}, []
        return self._scores(
            rule_scores, llm, vision, errors + vision_errors, rules=rules,
            imageless_mllm=None if excused else _no_image_mllm(image_num),
            infrastructure=len(infrastructure),
        )

    def judge_text(
        self, prompt: str, draft: str, *, image_num: int = 0
    ) -> tuple[dict[str, int | None], list[str]]:
        """The text judge's ``text`` and ``image`` scores of a draft with its tags."""
        messages = [
            SystemMessage(prompts.TEXT_JUDGE_SYSTEM),
            HumanMessage(prompts.TEXT_JUDGE_USER.format(
                prompt=prompt, images_asked=prompts.images_asked(image_num), draft=draft
            )),
        ]
        return _ask(self.llm, messages, TEXT_KEYS, TEXT_JUDGE)

    def judge_images(
        self,
        prompt: str,
        segments: Sequence[Segment],
        results: Sequence[ImageResult],
        *,
        store: ArtifactStore,
        inputs: Sequence[ImageRef] = (),
        image_num: int = 0,
        unavailable: Collection[int] = (),
    ) -> tuple[dict[str, int | None], list[str]]:
        """The vision judge's scores, from one message that holds the request, the input
        images and the document's text and images in reading order. The slots in
        ``unavailable`` are shown as missing through no fault of the document's."""
        if self.vlm is None:
            return _ask(None, [], VISION_KEYS, VISION_JUDGE)
        parts = _vision_parts(prompt, segments, results, store, inputs, image_num, unavailable)
        messages = [SystemMessage(prompts.VISION_JUDGE_SYSTEM), HumanMessage(parts)]
        return _ask(self.vlm, messages, VISION_KEYS, VISION_JUDGE)

    def check_relevance(
        self, image: bytes, description: str, context_text: str
    ) -> tuple[bool | None, str]:
        """Does the image show its description and fit the text around it?

        (True or False, the judge's reason), or (None, why) when there is no vision
        judge, it fails or its answer says neither yes nor no.
        """
        if self.vlm is None:
            return None, "no vision judge is configured (set LLMI_VISION_JUDGE_MODEL)"
        try:
            mime = inspect_image(image)[0]
        except NotAnImage as exc:
            return False, str(exc)
        return self._yes_or_no(prompts.RELEVANCE_SYSTEM, [
            image_part(image, mime),
            text_part(prompts.RELEVANCE_USER.format(
                description=description or "(no description)", context_text=context_text
            )),
        ])

    def check_consistency(
        self, image: bytes, references: Sequence[bytes], subject: str = ""
    ) -> Consistency:
        """Does the image show the same subject (``subject``: its name and description,
        when it has one) as its reference images?

        ``same`` or ``different`` with the judge's reason; ``unchecked`` with why when
        there is no vision judge, an image cannot be read, the judge fails or its answer
        says neither yes nor no.
        """
        if self.vlm is None:
            return Consistency(verdict="unchecked", reason="no vision judge is configured")
        try:
            shown = [image_part(data, inspect_image(data)[0]) for data in (*references, image)]
        except NotAnImage as exc:
            return Consistency(verdict="unchecked", reason=str(exc))
        same, reason = self._yes_or_no(prompts.CONSISTENCY_SYSTEM, [
            text_part("The reference images:"),
            *shown[:-1],
            text_part(prompts.CONSISTENCY_USER.format(
                subject=subject or "(not named: the one the reference images show)"
            )),
            shown[-1],
        ])
        verdict = "unchecked" if same is None else "same" if same else "different"
        return Consistency(verdict=verdict, reason=reason)

    def _yes_or_no(self, system: str, parts: list[dict]) -> tuple[bool | None, str]:
        """The vision judge's yes or no to ``parts`` and its reason; (None, why) when it
        fails or says neither."""
        try:
            reply = self.vlm.invoke([SystemMessage(system), HumanMessage(parts)])
            answer = answer_of(reply, who=VISION_JUDGE.name, limit=VISION_JUDGE.limit_setting)
        except NoAnswer as exc:
            return None, str(exc)
        except Exception as exc:  # a failing judge leaves the verdict unknown
            return None, f"the vision judge failed: {describe_error(exc)}"
        return parse_verdict(answer)

    def _scores(
        self,
        rule_scores: dict[str, float],
        llm: dict[str, int | None],
        vision: dict[str, int | None],
        errors: list[str],
        *,
        rules: RewardRules,
        imageless_mllm: float | None,
        infrastructure: int = 0,
    ) -> Scores:
        """The scores and their reward; ``imageless_mllm`` is S_mllm when ``vision`` is
        empty, for there was no image to show."""
        s_mllm = _mean_unit(self._counted(vision, self.vlm, rules)) if vision else imageless_mllm
        s_llm = _mean_unit(self._counted(llm, self.llm, rules), self.weights.of_text_judge())
        return Scores(
            rules=rule_scores,
            llm=llm,
            vision=vision,
            reward=reward(rules.s_num(rule_scores), s_mllm, s_llm, self.weights),
            unknown=[f"llm.{k}" for k, v in llm.items() if v is None]
            + [f"vision.{k}" for k, v in vision.items() if v is None],
            errors=errors,
            infrastructure_failures=infrastructure,
        )

    @staticmethod
    def _counted(
        scores: dict[str, int | None], model: BaseChatModel | None, rules: RewardRules
    ) -> dict[str, int | None]:
        """The scores the reward counts: under LLM-I's rules, a score that a configured
        judge did not give is the lowest; a judge that is not configured stays unknown."""
        if rules is not RewardRules.LLM_I or model is None:
            return scores
        return {key: LOWEST if score is None else score for key, score in scores.items()}


def _no_image_mllm(image_num: int) -> float:
    """S_mllm of a document without images: 1 when none were asked for, else 0."""
    return 1.0 if image_num == -1 else 0.0


def _mean_unit(
    scores: Mapping[str, int | None], weights: Mapping[str, float] | None = None
) -> float | None:
    """The weighted mean of the known 1-5 scores (``weights`` by key, 1 where not given),
    mapped to 0..1 by (x - 1) / 4 as ``verl/workers/reward_manager/llmi.py`` maps its
    ``llm_score`` and ``mllm_score``; None when no score of weight above 0 is known."""
    known = {key: (score - 1) / 4 for key, score in scores.items() if score is not None}
    weight = {key: (weights or {}).get(key, 1.0) for key in known}
    total = sum(weight.values())
    return sum(weight[key] * known[key] for key in known) / total if total else None


def _images_only(
    segments: Sequence[Segment], slots: Mapping[int, ImageResult], excused: Collection[int]
) -> bool:
    """Whether the document is images alone: no text, and every slot an image (or excused).

    LLM-I's test (``llmi_rm.compute_score``) is that the rendered answer is empty once
    each ``<image>`` is taken out; a slot that failed leaves its
    ``<fail_to_generate_image>`` mark in it (``imageutils/interleaved_gen.py``).
    """
    no_text = all(not s["text"].strip() for s in segments if s["kind"] == "text")
    return no_text and all(r["ok"] or s in excused for s, r in slots.items())


UNREADABLE_RETRIES = 1
"""Times a judge is asked again when its answer cannot be read (no answer, or a score
missing). A call that fails is not asked again here: the openai client has already
retried a passing failure (``LLMI_MODEL_RETRIES``)."""


def _ask(
    model: BaseChatModel | None, messages: list[BaseMessage], keys: Sequence[str], role: Role
) -> tuple[dict[str, int | None], list[str]]:
    """``role``'s scores named ``keys``, read from its answers only; None where unknown.

    A score read from either answer counts, the later answer's first.
    """
    scores: dict[str, int | None] = dict.fromkeys(keys)
    name = role.name.removeprefix("the ")
    if model is None:
        return scores, [f"no {name} model is configured"]
    error = ""
    for _ in range(1 + UNREADABLE_RETRIES):
        try:
            reply = model.invoke(messages)
            answer = answer_of(reply, who=role.name, limit=role.limit_setting)
        except NoAnswer as exc:
            error = str(exc)
            continue
        except Exception as exc:  # any failure of the judge leaves its scores unknown
            return scores, [f"the {name} failed: {describe_error(exc)}"]
        read = parse_scores(answer, keys)
        scores = {key: scores[key] if read[key] is None else read[key] for key in keys}
        missing = [key for key, score in scores.items() if score is None]
        if not missing:
            return scores, []
        cut = f" ({cut_off_note(role.name, role.limit_setting)})" if split_reply(reply).cut_off else ""
        error = (f"the {name} gave no 1-5 score for {', '.join(missing)}{cut}: "
                 f"{excerpt(answer)!r}")
    return scores, [error]


def describe_error(exc: BaseException) -> str:
    """The error in one line, for a record that travels with the document: no folder of
    this machine in it (see ``without_machine_paths``)."""
    return f"{type(exc).__name__}: {excerpt(without_machine_paths(str(exc)))}"


def excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _slot_results(
    segments: Sequence[Segment], results: Sequence[ImageResult]
) -> dict[int, ImageResult]:
    """The latest result of every slot in ``segments``, in document order."""
    latest: dict[int, ImageResult] = {}
    for result in results:
        held = latest.get(result["slot"])
        if held is None or result["attempt"] >= held["attempt"]:
            latest[result["slot"]] = result
    slots = [s["slot"] for s in segments if s["kind"] == "slot"]
    return {
        slot: latest.get(slot) or failed_result(slot, "unknown", "", "no result was recorded")
        for slot in slots
    }


def _vision_parts(
    prompt: str,
    segments: Sequence[Segment],
    results: Sequence[ImageResult],
    store: ArtifactStore,
    inputs: Sequence[ImageRef],
    image_num: int,
    unavailable: Collection[int],
) -> list[str | dict]:
    by_slot = {r["slot"]: r for r in results}
    index_of = {ref["sha256"]: i for i, ref in enumerate(inputs)} | {
        r["image"]["sha256"]: r["slot"] for r in results if r["ok"] and r["image"]
    }
    parts: list[str | dict] = [text_part(prompts.VISION_JUDGE_REQUEST.format(
        prompt=prompt, images_asked=prompts.images_asked(image_num)
    ))]
    for index, ref in enumerate(inputs):
        missing = f"[Input image {index} is missing.]"
        parts += _stored_image(f"Input image {index}:", missing, ref, store)
    parts.append(text_part("The document:"))
    for segment in segments:
        if segment["kind"] == "text":
            parts.append(text_part(segment["text"]))
        elif segment["slot"] in unavailable:
            parts.append(text_part(prompts.UNAVAILABLE_IMAGE.format(slot=segment["slot"])))
        else:
            parts += _slot_parts(by_slot[segment["slot"]], store, index_of, len(inputs))
    parts.append(text_part(prompts.VISION_JUDGE_CLOSING))
    return parts


def _slot_parts(
    result: ImageResult, store: ArtifactStore, index_of: Mapping[str, int], n_inputs: int
) -> list[dict]:
    slot, description = result["slot"], result["description"] or "(no description)"
    missing = f"[Image {slot} is missing. It should have shown: {description}]"
    if not (result["ok"] and result["image"]):
        return [text_part(missing)]
    made_by = result["source"]
    edited = index_of.get(result["provenance"].get("edited", ""))
    if made_by == "edit" and edited is not None:
        made_by = f"edit of image {edited}"
    if result.get("refs"):
        made_by += f"; {_keeps(result, n_inputs)}"
    return _stored_image(f"Image {slot} ({made_by}; should show: {description}):", missing,
                         result["image"], store)


def _keeps(result: ImageResult, n_inputs: int) -> str:
    """What an image made from references keeps: "keeps Mira from image 1 and input image 0"."""
    names = [f"input image {i}" if i < n_inputs else f"image {i}" for i in result["refs"]]
    shown = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"keeps {result.get('subject') or 'the subject'} from {shown}"


def _stored_image(label: str, missing: str, ref: ImageRef, store: ArtifactStore) -> list[dict]:
    try:
        data = store.get(ref)
    except (OSError, ValueError):
        return [text_part(missing)]
    return [text_part(label), image_part(data, ref["mime"])]


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def image_part(data: bytes, mime: str) -> dict:
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}
