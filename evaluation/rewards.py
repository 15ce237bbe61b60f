"""Rewards for reinforcement-learning trainers: LLM-I's hybrid reward of a completion.

A completion is a policy's document with ``<imgen>`` tags. Its reward renders the tags
with the tools (no repairs: the policy answers for its own tags), then scores the result
as ``llmi.judge.scoring`` does: rules, a text judge, a vision judge, by LLM-I's rules
(``RewardRules.LLM_I``; ``rules=RewardRules.STRICT`` takes llmi's stricter ones). The
image count is lenient on the train split and exact on any other, as LLM-I's
``compute_score`` decides by ``extra_info["split"]``.

Unlike LLM-I, a tool that fails because its service did (down, out of quota, too slow,
not configured) is not charged to the policy by default: such slots are left out of the
reward and reported on their own (``exclude_infrastructure=False`` charges them); a
document asked for images that has none gets no vision credit (LLM-I gives it 5, 5, 5);
and a completion with no answer (empty, reasoning alone, or cut off inside its
reasoning) has no document and scores 0, where LLM-I would judge what is left.

TRL::

    from llmi.rewards import DocumentReward
    trainer = GRPOTrainer(model=..., reward_funcs=[DocumentReward()], train_dataset=...)

verl: a file with ``from llmi.rewards import compute_score``, named by
``custom_reward_function.path`` (and ``name=compute_score``).

Both read their settings (judge models, tool backends, limits) from the environment,
like every llmi run; ``DocumentReward(context=Context(...))`` sets them in code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import fmean
from typing import Any

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.evaluation.datasets import image_bytes, prompt_text
from llmi.nodes.dispatch import Dispatch
from llmi.judge import TEXT_KEYS, VISION_KEYS, Judge, RewardRules, Scores
from llmi.tags import parse_draft
from llmi.reasoning import no_answer_reason, split_reply
from llmi.tools.registry import ToolRegistry, default_tools

log = logging.getLogger(__name__)

COMPONENTS = (
    ("rules", ("tag_validity", "image_count", "tool_success")),
    ("llm", TEXT_KEYS),
    ("vision", VISION_KEYS),
)
"""The components of the reward, as ``<group>_<key>`` in a verl score dict."""


class DocumentReward:
    """The hybrid reward of completions, callable as a TRL ``reward_funcs`` entry.

    ``judge`` defaults to the context's judge models; ``tools`` to the default tools.
    ``lenient`` gives partial credit for an image count that is close (as LLM-I does on
    the train split), for rows that name no ``split``; a row's ``split`` decides for
    itself: ``"train"`` is lenient, any other exact. ``rules`` picks the reward's rules.
    """

    __name__ = "llmi_reward"
    """TRL names a reward function's logs after it."""

    def __init__(
        self,
        *,
        context: Context | None = None,
        judge: Judge | None = None,
        tools: ToolRegistry | None = None,
        exclude_infrastructure: bool = True,
        lenient: bool = True,
        rules: RewardRules = RewardRules.LLM_I,
        max_parallel: int = 8,
    ) -> None:
        self.context = context or Context()
        self.judge = judge or Judge.from_context(self.context)
        self.tools = tools if tools is not None else default_tools()
        self.exclude_infrastructure = exclude_infrastructure
        self.lenient = lenient
        self.rules = rules
        self.max_parallel = max_parallel

    def score(
        self,
        prompt: str,
        completion: str,
        *,
        images: Sequence[bytes] = (),
        image_num: int = 0,
        lenient: bool | None = None,
    ) -> Scores:
        """Render ``completion``'s tags with the tools, then judge the document, with the
        lenient image count unless ``lenient`` is False (None: this reward's ``lenient``).

        The document is the completion's answer: its reasoning never runs a tool nor
        reaches a judge. A completion with no answer (empty, only reasoning, or ending
        inside an unclosed ``<think>``) has no document and scores 0, with the reason
        in its errors.
        """
        ctx = self.context
        reply = split_reply(completion)
        if reply.unfinished or not reply.answer:
            return no_document(no_answer_reason(reply, who="the policy", limit="the trainer's "
                                                "maximum completion length"))
        store = ArtifactStore(ctx.artifact_dir)
        inputs = [store.put(data) for data in images]
        draft = reply.answer
        plan = parse_draft(draft, self.tools.required_params(), n_inputs=len(inputs),
                           max_images=ctx.max_images)
        state = {"requests": plan.requests, "results": plan.failures, "inputs": inputs}
        results = plan.failures + Dispatch(self.tools).run(state, ctx)
        return self.judge.score(
            prompt, draft, plan.segments, results, store=store, inputs=inputs,
            image_num=image_num, lenient=self.lenient if lenient is None else lenient,
            exclude_infrastructure=self.exclude_infrastructure, rules=self.rules,
        )

    def score_all(self, samples: Sequence[Mapping[str, Any]]) -> list[Scores]:
        """``score`` of each sample (its keyword arguments), several at a time."""
        if not samples:
            return []
        with ThreadPoolExecutor(min(len(samples), self.max_parallel)) as pool:
            return list(pool.map(lambda sample: self.score(**sample), samples))

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list[Any]], None] | None = None,
        **columns: Any,
    ) -> list[float]:
        """One reward per completion, as TRL's GRPO trainer calls a reward function.

        ``prompts`` and ``completions`` are strings or chat messages. The dataset's other
        columns arrive as lists, one value per completion: ``image_num`` and ``split``
        (or inside ``extra_info``) and input ``images`` (or ``image``): paths, bytes,
        base64 or PIL images. Trainer arguments such as ``completion_ids`` and
        ``trainer_state`` are ignored. Infrastructure failures go to ``log_metric`` and
        ``log_extra`` when the trainer passes them, and to the log.
        """
        samples = [
            _sample(prompt, _completion_text(completion), _row(columns, i))
            for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
        ]
        scored = self.score_all(samples)
        _report(scored, log_metric, log_extra, excluded=self.exclude_infrastructure)
        return [scores["reward"] for scores in scored]


def no_document(reason: str) -> Scores:
    """The scores of a completion that holds no document: 0, and why."""
    return Scores(
        rules={name: 0.0 for name in COMPONENTS[0][1]},
        llm=dict.fromkeys(TEXT_KEYS),
        vision={},
        reward=0.0,
        unknown=[f"llm.{key}" for key in TEXT_KEYS],
        errors=[reason],
        infrastructure_failures=0,
    )


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    **_: Any,
) -> dict[str, float]:
    """verl's reward function: the reward of ``solution_str``, with every component.

    ``extra_info`` holds the request (``prompt`` or ``question``: a string or chat
    messages), ``image_num``, ``split`` (``"train"`` counts images leniently, any other
    split exactly; LLM-I requires it, llmi takes a missing one as training) and optional
    input ``images``, as the dataset's rows carry them. Every answer has the same keys, as
    verl requires: ``score``, the rule scores, the judges' scores (NaN when unknown, though
    the score counts a configured judge's unknown score as its lowest) and
    ``infrastructure_failures``. The settings come from the environment.
    """
    info = dict(extra_info or {})
    request = info.get("prompt") or info.get("question") or ""
    sample = _sample(request, solution_str, info)
    return _flat(DocumentReward().score(**sample))


def _row(columns: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The dataset columns of one completion, with ``extra_info``'s fields under them."""
    row = {name: values[index] for name, values in columns.items()
           if isinstance(values, Sequence) and not isinstance(values, str)}
    extra = row.get("extra_info")
    return {**extra, **row} if isinstance(extra, Mapping) else row


def _sample(prompt: Any, completion: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """``DocumentReward.score``'s keyword arguments for one row."""
    images = row.get("images")
    if images is None and row.get("image") is not None:
        images = [row["image"]]
    return {
        "prompt": prompt_text(prompt),
        "completion": completion,
        "images": [image_bytes(image, base_dir=Path.cwd()) for image in images or ()],
        "image_num": int(row.get("image_num") or 0),
        "lenient": None if row.get("split") is None else row["split"] == "train",
    }


def _completion_text(completion: Any) -> str:
    """The text of a completion given as a string or as TRL's assistant messages."""
    if isinstance(completion, str):
        return completion
    return "".join(
        message["content"] if isinstance(message["content"], str)
        else "".join(part.get("text", "") for part in message["content"])
        for message in completion
    )


def _flat(scores: Scores) -> dict[str, float]:
    flat = {"score": scores["reward"]}
    for group, keys in COMPONENTS:
        for key in keys:
            value = scores[group].get(key)
            flat[f"{group}_{key}"] = math.nan if value is None else float(value)
    flat["infrastructure_failures"] = float(scores["infrastructure_failures"])
    return flat


def _report(
    scored: Sequence[Scores],
    log_metric: Callable[[str, float], None] | None,
    log_extra: Callable[[str, list[Any]], None] | None,
    *,
    excluded: bool,
) -> None:
    failures = [scores["infrastructure_failures"] for scores in scored]
    if log_metric is not None:
        log_metric("llmi/infrastructure_failures", float(sum(failures)))
        for group, keys in COMPONENTS:
            for key in keys:
                known = [s[group][key] for s in scored if s[group].get(key) is not None]
                if known:
                    log_metric(f"llmi/{group}_{key}", fmean(known))
    if log_extra is not None:
        log_extra("llmi_infrastructure_failures", failures)
    if sum(failures):
        log.warning("%d image(s) in this batch failed because a tool's service did; they are %s",
                    sum(failures),
                    "left out of the reward" if excluded else "charged to the completions")
