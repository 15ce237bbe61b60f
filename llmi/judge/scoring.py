"""LLM-I's hybrid reward: rule scores, a text judge and a vision judge.

The reward of a document (Guo et al. 2025, arXiv 2509.13642) is

    R = w_num * S_num + w_mllm * S_mllm * S_num + w_llm * S_llm

with every 1-5 judge score mapped to 0-1 by (x - 1) / 4, and these choices of ours:

- S_num, the rule score, is the product of the rule scores that apply: image count,
  tag validity and, once tools ran, tool success. With valid tags and working tools it
  is LLM-I's image-count score; broken tags or failed tools lower it, so rules alone
  still tell documents apart when no judge is configured.
- S_mllm and S_llm are the means of their judges' known scores.
- No free image credit: a document asked for images (``image_num`` != -1) that has
  none gets S_mllm = 0 (LLM-I gives it full credit). One asked for none that has none
  gets S_mllm = 1, so the vision term becomes w_mllm * S_num and follows the rules.
- Unknown scores (no judge model, a failed call, a nonsense answer) are recorded, and a
  term whose judge scores are all unknown is left out: R is the weighted sum of the
  known terms divided by the sum of their weights. With all terms known and weights
  that sum to 1 that is exactly LLM-I's formula, and R stays within 0..1 for any
  weights. With no judge configured, R is S_num (or, for a document that has no images
  though some were asked for, S_num * w_num / (w_num + w_mllm)).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
from llmi.state import ImageRef, ImageRequest, ImageResult, Segment, failed_result

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
    """Weights of the image-count, vision and text terms of the reward."""

    num: float = 0.2
    mllm: float = 0.3
    llm: float = 0.5

    def __post_init__(self) -> None:
        for name in ("num", "mllm", "llm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"reward weight {name} must be a number >= 0, not {value!r}")
        if self.num + self.mllm + self.llm == 0:
            raise ValueError("at least one reward weight must be above 0")

    @classmethod
    def from_setting(cls, text: str) -> RewardWeights:
        """Weights from ``"num,mllm,llm"``, such as LLM-I's ``"0.2,0.3,0.5"``."""
        parts = text.split(",")
        try:
            if len(parts) != 3:
                raise ValueError
            values = [float(part) for part in parts]
        except ValueError:
            raise ValueError(
                f"reward weights must be three numbers 'num,mllm,llm' such as "
                f"'0.2,0.3,0.5', not {text!r}"
            ) from None
        return cls(*values)


# Rule scores


def image_count_score(n_images: int, image_num: int, *, lenient: bool) -> float:
    """How well ``n_images`` meets LLM-I's ``image_num``.

    -1: none allowed (1 with zero images, else 0); 0: no constraint (1);
    99: at least one (1 with one or more, else 0); n: exactly n (1 on a match, else 0).
    ``lenient`` (for training) gives partial credit for exactly-n only:
    max(0, 1 - |n_images - n| / n), so one image off of four scores 0.75.
    """
    if image_num < -1:
        raise ValueError(f"image_num must be -1, 0, 99 or a count of at least 1, not {image_num}")
    if image_num == -1:
        return float(n_images == 0)
    if image_num == 0:
        return 1.0
    if image_num == 99:
        return float(n_images >= 1)
    if n_images == image_num:
        return 1.0
    return max(0.0, 1 - abs(n_images - image_num) / image_num) if lenient else 0.0


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
    """S_num: the product of the rule scores."""
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
            weights=RewardWeights.from_setting(ctx.reward_weights or ""),
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
        rules = {
            "tag_validity": tag_validity(len(plan_requests), len(plan_failures)),
            "image_count": image_count_score(len(plan_requests), image_num, lenient=lenient),
        }
        llm, errors = self.judge_text(prompt, draft, image_num=image_num)
        s_mllm = None if plan_requests else _no_image_mllm(image_num)
        return self._scores(rules, llm, {}, s_mllm, errors)

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
    ) -> Scores:
        """Scores of a finished document: rules on its slots and made images, the text
        judge on its draft, the vision judge on its images in document order.

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
        rules = {
            "tag_validity": tag_validity(len(slots) - n_broken, n_broken),
            "tool_success": tool_success([r for s, r in slots.items() if s not in excused]),
            "image_count": image_count_score(len(made) + len(excused), image_num, lenient=lenient),
        }
        if text_scores is None:
            llm, errors = self.judge_text(prompt, draft, image_num=image_num)
        else:
            llm, errors = dict(text_scores), []
        if made:
            vision, vision_errors = self.judge_images(
                prompt, segments, list(slots.values()), store=store, inputs=inputs,
                image_num=image_num, unavailable=excused,
            )
            s_mllm = _mean_unit(vision)
        else:
            vision, vision_errors = {}, []
            s_mllm = None if excused else _no_image_mllm(image_num)
        return self._scores(rules, llm, vision, s_mllm, errors + vision_errors,
                            infrastructure=len(infrastructure))

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
        user = HumanMessage([
            image_part(image, mime),
            text_part(prompts.RELEVANCE_USER.format(
                description=description or "(no description)", context_text=context_text
            )),
        ])
        try:
            reply = self.vlm.invoke([SystemMessage(prompts.RELEVANCE_SYSTEM), user])
            answer = answer_of(reply, who=VISION_JUDGE.name, limit=VISION_JUDGE.limit_setting)
        except NoAnswer as exc:
            return None, str(exc)
        except Exception as exc:  # a failing judge leaves the verdict unknown
            return None, f"the vision judge failed: {describe_error(exc)}"
        return parse_verdict(answer)

    def _scores(
        self,
        rules: dict[str, float],
        llm: dict[str, int | None],
        vision: dict[str, int | None],
        s_mllm: float | None,
        errors: list[str],
        *,
        infrastructure: int = 0,
    ) -> Scores:
        return Scores(
            rules=rules,
            llm=llm,
            vision=vision,
            reward=reward(rule_score(rules), s_mllm, _mean_unit(llm), self.weights),
            unknown=[f"llm.{k}" for k, v in llm.items() if v is None]
            + [f"vision.{k}" for k, v in vision.items() if v is None],
            errors=errors,
            infrastructure_failures=infrastructure,
        )


def _no_image_mllm(image_num: int) -> float:
    """S_mllm of a document without images: 1 when none were asked for, else 0."""
    return 1.0 if image_num == -1 else 0.0


def _mean_unit(scores: Mapping[str, int | None]) -> float | None:
    """The mean of the known 1-5 scores, mapped to 0..1; None when none is known."""
    known = [(score - 1) / 4 for score in scores.values() if score is not None]
    return sum(known) / len(known) if known else None


def _ask(
    model: BaseChatModel | None, messages: list[BaseMessage], keys: Sequence[str], role: Role
) -> tuple[dict[str, int | None], list[str]]:
    """``role``'s scores named ``keys``, read from its answer only; None where unknown."""
    unknown: dict[str, int | None] = dict.fromkeys(keys)
    name = role.name.removeprefix("the ")
    if model is None:
        return unknown, [f"no {name} model is configured"]
    try:
        reply = model.invoke(messages)
        answer = answer_of(reply, who=role.name, limit=role.limit_setting)
    except NoAnswer as exc:
        return unknown, [str(exc)]
    except Exception as exc:  # any failure of the judge leaves its scores unknown
        return unknown, [f"the {name} failed: {describe_error(exc)}"]
    scores = parse_scores(answer, keys)
    missing = [key for key, score in scores.items() if score is None]
    if not missing:
        return scores, []
    cut = f" ({cut_off_note(role.name, role.limit_setting)})" if split_reply(reply).cut_off else ""
    return scores, [f"the {name} gave no 1-5 score for {', '.join(missing)}{cut}: "
                    f"{excerpt(answer)!r}"]


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
            parts += _slot_parts(by_slot[segment["slot"]], store, index_of)
    parts.append(text_part(prompts.VISION_JUDGE_CLOSING))
    return parts


def _slot_parts(
    result: ImageResult, store: ArtifactStore, index_of: Mapping[str, int]
) -> list[dict]:
    slot, description = result["slot"], result["description"] or "(no description)"
    missing = f"[Image {slot} is missing. It should have shown: {description}]"
    if not (result["ok"] and result["image"]):
        return [text_part(missing)]
    made_by = result["source"]
    edited = index_of.get(result["provenance"].get("edited", ""))
    if made_by == "edit" and edited is not None:
        made_by = f"edit of image {edited}"
    return _stored_image(f"Image {slot} ({made_by}; should show: {description}):", missing,
                         result["image"], store)


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
