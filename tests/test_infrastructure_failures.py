"""Failures of a tool's service (down, out of quota, too slow, not configured) are told
apart from failures of the request: by ``ToolError``, by dispatch, and by the judge,
which can leave them out of the reward."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from helpers import FakeTool, ScriptedModel, gradient_png
from llmi.judge import prompts as rubrics
from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.evaluation.records import Document, EvalItem, ItemRun
from llmi.evaluation.scorers.reward import RewardScorer
from llmi.nodes.dispatch import Dispatch
from llmi.judge import Judge, RewardWeights, reward
from llmi.state import ImageRef, ImageRequest, ImageResult, Segment, failed_result
from llmi.tools.base import NotConfigured, ToolCall, ToolError
from llmi.tools.registry import ToolRegistry

TEXT_ANSWER = '{"text": 5, "image": 3}'
VISION_ANSWER = '{"quality": 5, "task_relevance": 5, "text_image_relevance": 5}'
UNAVAILABLE = "could not be made because a tool's service was unavailable"


# ToolError.infrastructure


@pytest.mark.parametrize(("error", "infrastructure"), [
    (ToolError("no key", kind="config"), True),
    (NotConfigured("no diffusion backend"), True),
    (ToolError("out of credits", kind="quota"), True),
    (ToolError("no answer in 20 s", kind="timeout"), True),
    (ToolError("HTTP 503", kind="http", transient=True), True),
    (ToolError("HTTP 429", kind="http", transient=True), True),
    (ToolError("bad chart"), False),
    (ToolError("bad chart", kind="backend"), False),
    (ToolError("nothing found", kind="no_result"), False),
    (ToolError("private address", kind="unsafe_url"), False),
    (ToolError("an HTML page", kind="not_image"), False),
    (ToolError("HTTP 404", kind="http"), False),
    (ToolError("HTTP 400", kind="http", transient=False), False),
])
def test_tool_error_says_whether_the_service_failed(error: ToolError, infrastructure: bool) -> None:
    assert error.infrastructure is infrastructure


def test_a_plain_tool_error_is_a_backend_failure() -> None:
    error = ToolError("bad chart")
    assert (error.kind, error.transient, error.infrastructure) == ("backend", False, False)


# Dispatch


def raising(exc: Exception) -> Any:
    def behaviour(call: ToolCall) -> None:
        raise exc
    return behaviour


def request(slot: int, source: str, *, depends_on: int | None = None) -> ImageRequest:
    params: dict[str, Any] = {"prompt": f"image {slot}"}
    if depends_on is not None:
        params["img_index"] = depends_on
    return ImageRequest(slot=slot, source=source, description=f"image {slot}", params=params,
                        depends_on=depends_on, attempt=0)


def dispatch_context(tmp_path: Path, *, slot_timeout: float = 30.0) -> Context:
    return Context(model="m", artifact_dir=str(tmp_path / "artifacts"),
                   out_dir=str(tmp_path / "out"), tool_cache=False,
                   slot_timeout=slot_timeout, max_parallel=8)


def make(call: ToolCall) -> bytes:
    return gradient_png(call.request["slot"], (320, 300))


def test_dispatch_records_the_kind_of_every_failure(tmp_path: Path) -> None:
    tools = ToolRegistry([
        FakeTool("quota", ("prompt",), raising(ToolError("out of credits", kind="quota"))),
        FakeTool("backend", ("prompt",), raising(ToolError("bad chart"))),
        FakeTool("crash", ("prompt",), raising(RuntimeError("segfault in the renderer"))),
        FakeTool("fine", ("prompt",), make=make),
        FakeTool("junk", ("prompt",), make=lambda call: b"<html>not an image</html>"),
        FakeTool("edit", ("img_index", "prompt"), make=make),
    ])
    state: dict[str, Any] = {"requests": [
        request(0, "quota"), request(1, "backend"), request(2, "crash"), request(3, "fine"),
        request(4, "edit", depends_on=0), request(5, "edit", depends_on=1),
        request(6, "edit", depends_on=3), request(7, "junk"), request(8, "nowhere"),
    ], "results": [], "inputs": []}

    results = {r["slot"]: r for r in Dispatch(tools).run(state, dispatch_context(tmp_path))}

    assert sorted(results) == list(range(9))
    failures = {slot: (r["failure"], r["infrastructure"])
                for slot, r in results.items() if not r["ok"]}
    assert failures == {
        0: ("quota", True),
        1: ("backend", False),
        2: ("crash", True),
        4: ("source_failed", True),
        5: ("source_failed", False),
        7: ("not_image", False),
        8: ("config", True),
    }
    assert results[0]["error"] == "out of credits"
    assert results[1]["error"] == "bad chart"
    assert results[2]["error"] == "RuntimeError: segfault in the renderer"
    assert "index 0" in results[4]["error"] and "out of credits" in results[4]["error"]
    assert "nowhere" in results[8]["error"]
    for slot in (3, 6):
        assert results[slot]["ok"] and results[slot]["image"] is not None
        assert "failure" not in results[slot] and "infrastructure" not in results[slot]
        assert results[slot]["error"] is None
    assert results[6]["provenance"]["edited"] == results[3]["image"]["sha256"]
    # Edits whose source failed never reached their tool.
    assert [call.request["slot"] for call in tools["edit"].calls] == [6]


def test_a_slot_past_its_deadline_is_an_infrastructure_timeout(tmp_path: Path) -> None:
    release = threading.Event()
    tools = ToolRegistry([
        FakeTool("slow", ("prompt",), lambda call: release.wait(10), make=make),
        FakeTool("fine", ("prompt",), make=make),
        FakeTool("edit", ("img_index", "prompt"), make=make),
    ])
    state: dict[str, Any] = {"requests": [
        request(0, "slow"), request(1, "fine"), request(2, "edit", depends_on=0),
    ], "results": [], "inputs": []}
    try:
        results = {r["slot"]: r for r in
                   Dispatch(tools).run(state, dispatch_context(tmp_path, slot_timeout=0.2))}
    finally:
        release.set()

    assert not results[0]["ok"] and results[0]["image"] is None
    assert (results[0]["failure"], results[0]["infrastructure"]) == ("timeout", True)
    assert "timed out" in results[0]["error"]
    assert results[1]["ok"] and "failure" not in results[1]
    assert (results[2]["failure"], results[2]["infrastructure"]) == ("source_failed", True)
    assert tools["edit"].calls == []


# The judge


def judge_models() -> tuple[ScriptedModel, ScriptedModel]:
    """Judges whose text scores (text 5, image 3) weigh 1.4 and 0.6, as LLM-I's: S_llm =
    ((1.4 * 5 + 0.6 * 3) / 2 - 1) / 4 = 0.85."""
    return (ScriptedModel(script=lambda messages, kwargs: TEXT_ANSWER),
            ScriptedModel(script=lambda messages, kwargs: VISION_ANSWER))


def made(slot: int, ref: ImageRef) -> ImageResult:
    return ImageResult(slot=slot, source="diffusion", description=f"picture {slot}", ok=True,
                       image=ref, error=None, tool="diffusion", backend="fake", provenance={},
                       seconds=0.1, attempt=0)


def unavailable(slot: int) -> ImageResult:
    return failed_result(slot, "search", f"picture {slot}", "HTTP 503 from the search API",
                         tool="search", failure="http", infrastructure=True)


def texts(messages: list[BaseMessage]) -> list[str]:
    parts = messages[-1].content
    assert isinstance(parts, list)
    return [part["text"] for part in parts if isinstance(part, dict) and part.get("type") == "text"]


def two_slots(store: ArtifactStore) -> tuple[list[Segment], list[ImageResult]]:
    ref = store.put(gradient_png(1, (320, 300)))
    segments: list[Segment] = [
        {"kind": "text", "text": "Kyoto in June."}, {"kind": "slot", "slot": 0},
        {"kind": "text", "text": "The river."}, {"kind": "slot", "slot": 1},
    ]
    return segments, [made(0, ref), unavailable(1)]


def score(judge: Judge, segments: Sequence[Segment], results: Sequence[ImageResult],
          store: ArtifactStore, *, image_num: int, exclude: bool) -> Any:
    return judge.score("Rain in Kyoto", "a draft", segments, results, store=store,
                       image_num=image_num, exclude_infrastructure=exclude)


def test_an_unavailable_service_is_left_out_of_the_reward(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    segments, results = two_slots(store)
    llm, vlm = judge_models()

    scores = score(Judge(llm=llm, vlm=vlm), segments, results, store, image_num=2, exclude=True)

    assert scores["rules"] == {"tag_validity": 1.0, "tool_success": 1.0, "image_count": 1.0}
    assert scores["infrastructure_failures"] == 1
    assert scores["vision"] == {"quality": 5, "task_relevance": 5, "text_image_relevance": 5}
    assert scores["llm"] == {"text": 5, "image": 3}
    shown = texts(vlm.calls[-1]["messages"])
    assert rubrics.UNAVAILABLE_IMAGE.format(slot=1) in shown
    assert any(UNAVAILABLE in text for text in shown)
    assert not any("[Image 1 is missing" in text for text in shown)
    assert any(text.startswith("Image 0 (diffusion") for text in shown)
    assert scores["reward"] == pytest.approx(reward(1.0, 1.0, 0.85, RewardWeights()))
    assert scores["errors"] == [] and scores["unknown"] == []


def test_an_unavailable_service_costs_the_document_when_not_excluded(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    segments, results = two_slots(store)
    llm, vlm = judge_models()

    scores = score(Judge(llm=llm, vlm=vlm), segments, results, store, image_num=2, exclude=False)

    assert scores["rules"] == {"tag_validity": 1.0, "tool_success": 0.5, "image_count": 0.0}
    assert scores["infrastructure_failures"] == 1
    shown = texts(vlm.calls[-1]["messages"])
    assert not any(UNAVAILABLE in text for text in shown)
    assert any(text.startswith("[Image 1 is missing. It should have shown: picture 1")
               for text in shown)
    # S_num is 0, so only the text term is left.
    assert scores["reward"] == pytest.approx(reward(0.0, 1.0, 0.85, RewardWeights()))
    assert scores["reward"] == pytest.approx(0.425)


def test_a_document_whose_only_slot_was_unavailable(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    segments: list[Segment] = [{"kind": "text", "text": "The river."}, {"kind": "slot", "slot": 0}]
    results = [unavailable(0)]
    weights = RewardWeights()
    llm, vlm = judge_models()
    judge = Judge(llm=llm, vlm=vlm, weights=weights)

    excluded = score(judge, segments, results, store, image_num=1, exclude=True)
    counted = score(judge, segments, results, store, image_num=1, exclude=False)

    # Nothing to show the vision judge either way.
    assert vlm.calls == []
    assert excluded["vision"] == {} and counted["vision"] == {}
    assert excluded["infrastructure_failures"] == counted["infrastructure_failures"] == 1

    # Excluded: the rules hold, the vision term is unknown and leaves the weighted sum.
    assert excluded["rules"] == {"tag_validity": 1.0, "tool_success": 1.0, "image_count": 1.0}
    assert excluded["reward"] == pytest.approx(reward(1.0, None, 0.85, weights))
    assert excluded["reward"] == pytest.approx((0.2 * 1.0 + 0.5 * 0.85) / (0.2 + 0.5))

    # Counted: no image although one was asked for, so S_mllm = 0 and the rules fail.
    assert counted["rules"] == {"tag_validity": 1.0, "tool_success": 0.0, "image_count": 0.0}
    assert counted["reward"] == pytest.approx(reward(0.0, 0.0, 0.85, weights))
    assert counted["reward"] == pytest.approx(0.5 * 0.85)
    assert excluded["reward"] > counted["reward"]


def test_the_reward_scorer_passes_its_setting_to_the_judge(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    segments, results = two_slots(store)
    item = EvalItem(id="rain", prompt="Rain in Kyoto", images=[], image_num=2, tools=[],
                    split="test", criteria=[], data_source="hand", extra={})
    run = ItemRun(item=item, document=Document(draft="a draft", segments=segments,
                                               results=results), seconds=1.0)

    def scorer(exclude: bool) -> RewardScorer:
        return RewardScorer(Judge(llm=judge_models()[0], vlm=judge_models()[1]),
                            exclude_infrastructure=exclude)

    excluded = scorer(True).score(run, store)
    counted = scorer(False).score(run, store)

    assert excluded["details"]["rules"]["tool_success"] == 1.0
    assert counted["details"]["rules"]["tool_success"] == 0.5
    assert excluded["details"]["infrastructure_failures"] == 1
    assert counted["details"]["infrastructure_failures"] == 1
    assert excluded["score"] > counted["score"]
    assert RewardScorer(Judge()).exclude_infrastructure is True


def test_an_edit_of_a_slot_that_failed_in_an_earlier_round_keeps_its_cause(
    tmp_path: Path,
) -> None:
    edit = FakeTool("edit", ("prompt",), make=make)
    earlier = failed_result(0, "quota", "image 0", "out of credits", tool="quota",
                            failure="quota", infrastructure=True)
    retried = {**request(1, "edit", depends_on=0), "attempt": 1}

    [result] = Dispatch(ToolRegistry([edit])).run(
        {"requests": [retried], "results": [earlier]}, dispatch_context(tmp_path))

    assert (result["failure"], result["infrastructure"]) == ("source_failed", True)
    assert "out of credits" in result["error"]
    assert not edit.calls
