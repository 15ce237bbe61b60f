"""Reasoning models: their reasoning, in every form a server returns it, never reaches a
document, never runs a tool and never decides a score; a reply with no answer is an error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage

from llmi.artifacts import ArtifactStore
from llmi.cli import main
from llmi.context import Context
from llmi.evaluation.runner import Evaluation
from llmi.evaluation.scorers.rubric import RubricScorer
from llmi.graphs.document import build_graph
from llmi.models import chat_model, judge_model
from llmi.judge import Judge
from llmi.nodes.polish import Polisher
from llmi.nodes.verifier import Verifier
from llmi.prompts import REPAIR_SYSTEM
from llmi.reasoning import AnswerStream, NoAnswer, answer_of, split_reply
from llmi.rewards import DocumentReward
from llmi.tools.base import ToolCall, ToolError
from helpers import FakeTool, ScriptedModel, fake_tools, gradient_png, model, tag
from openai_standin import Completion, Streamed, chat_server, routed_chat_server

ANSWER = "# Kyoto\n\nRain peaks in June.\n\n" + tag("code", "Rain", code="plt.bar([1], [2])")
THOUGHT = "I could add a photo: " + tag("search", "A leaked photo", query="leak")

# Each form in which a server returns reasoning, with the answer after it.
FORMS = {
    "think block": Completion(content=f"<think>{THOUGHT}</think>\n{ANSWER}"),
    "bare closing tag (R1, Qwen3-Thinking templates)": Completion(content=f"{THOUGHT}</think>\n\n{ANSWER}"),
    "text before the block": Completion(content=f"\n<think>{THOUGHT}</think>{ANSWER}"),
    "reasoning_content (DeepSeek, SGLang, llama.cpp)": Completion(content=ANSWER, reasoning_content=THOUGHT),
    "reasoning (vLLM 0.11+, Ollama)": Completion(content=ANSWER, reasoning=THOUGHT),
}
# Replies with no answer, and what the error says.
NO_ANSWER = {
    "reasoning only, null content": (Completion(content=None, reasoning_content=THOUGHT),
                                     "holds reasoning but no answer"),
    "cut inside reasoning": (Completion(content=f"<think>{THOUGHT}", finish_reason="length"),
                             "cut off by its token limit while reasoning"),
    "cut, reasoning field": (Completion(content=None, reasoning=THOUGHT, finish_reason="length"),
                             "cut off by its token limit while reasoning"),
    "unclosed block": (Completion(content=f"<think>{THOUGHT}"), "ended inside its reasoning"),
    "empty": (Completion(content=""), "reply is empty"),
}


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def served_context(url: str, tmp_path: Path, **fields: Any) -> Context:
    return Context(base_url=url, artifact_dir=str(tmp_path / "artifacts"),
                   out_dir=str(tmp_path / "out"), **{"model": "deepseek-r1", **fields})


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_the_document_is_the_answer_only(form: Completion, tmp_path: Path) -> None:
    tools = fake_tools()
    with chat_server(form) as (url, _):
        ctx = served_context(url, tmp_path)
        out = build_graph(tools=tools).compile().invoke({"prompt": "Kyoto"}, context=ctx)
    document = Path(out["outputs"]["markdown"]).read_text()
    assert "Rain peaks in June." in document
    assert "leak" not in document and "I could add" not in document and "think>" not in document
    assert tools["search"].calls == [] and len(tools["code"].calls) == 1
    assert out["draft"].startswith("# Kyoto")


@pytest.mark.parametrize(("reply", "says"), NO_ANSWER.values(), ids=NO_ANSWER.keys())
def test_a_reply_without_an_answer_stops_the_run(reply: Completion, says: str,
                                                 tmp_path: Path) -> None:
    tools = fake_tools()
    with chat_server(reply) as (url, _):
        with pytest.raises(NoAnswer, match=says):
            build_graph(tools=tools).compile().invoke(
                {"prompt": "Kyoto"}, context=served_context(url, tmp_path))
    assert tools["search"].calls == []


def test_a_cut_answer_is_kept_and_noted(tmp_path: Path) -> None:
    with chat_server(Completion(content=ANSWER, finish_reason="length")) as (url, _):
        out = build_graph(tools=fake_tools()).compile().invoke(
            {"prompt": "Kyoto"}, context=served_context(url, tmp_path))
    assert "Rain peaks in June." in Path(out["outputs"]["markdown"]).read_text()
    assert any("cut off by its token limit" in f["problem"] and "LLMI_MAX_TOKENS" in f["problem"]
               for f in out["findings"])


def test_split_reply_reads_langchain_reasoning_blocks() -> None:
    message = AIMessage(content=[{"type": "reasoning", "reasoning": "hmm"},
                                 {"type": "text", "text": "the answer"}])
    assert split_reply(message) == split_reply(message).__class__(
        answer="the answer", reasoning="hmm", cut_off=False, unfinished=False)


def test_answer_of_names_the_setting_to_raise() -> None:
    cut = AIMessage("<think>still", response_metadata={"finish_reason": "length"})
    with pytest.raises(NoAnswer, match="raise LLMI_JUDGE_MAX_TOKENS"):
        answer_of(cut, who="the text judge", limit="LLMI_JUDGE_MAX_TOKENS")


# --- the judges -------------------------------------------------------------------------


def judge(url: str, tmp_path: Path) -> Judge:
    ctx = served_context(url, tmp_path, judge_model="r1-judge", vision_judge_model="vl-judge")
    return Judge(llm=judge_model(ctx), vlm=judge_model(ctx, vision=True))


def test_text_judge_scores_come_from_the_answer(tmp_path: Path) -> None:
    reply = Completion(content='{"text": 5, "image": 4}',
                       reasoning_content='First guess {"text": 1, "image": 1}')
    with chat_server(reply) as (url, _):
        scores, errors = judge(url, tmp_path).judge_text("Kyoto", ANSWER)
    assert scores == {"text": 5, "image": 4} and errors == []


@pytest.mark.parametrize(("reply", "says"), NO_ANSWER.values(), ids=NO_ANSWER.keys())
def test_a_judge_without_an_answer_records_a_failure(reply: Completion, says: str,
                                                     tmp_path: Path) -> None:
    with chat_server(reply) as (url, _):
        scores, errors = judge(url, tmp_path).judge_text("Kyoto", ANSWER)
    assert scores == {"text": None, "image": None}
    assert len(errors) == 1 and says in errors[0]


def test_a_cut_judge_reply_names_its_setting(tmp_path: Path) -> None:
    reply = Completion(content=None, reasoning="Let me see", finish_reason="length")
    with chat_server(reply) as (url, _):
        scores, errors = judge(url, tmp_path).judge_text("Kyoto", ANSWER)
    assert "LLMI_JUDGE_MAX_TOKENS" in errors[0]


def test_the_relevance_verdict_is_never_read_from_reasoning(tmp_path: Path) -> None:
    image = gradient_png(1, (320, 300))
    cases = [
        (Completion(content='yes</think>{"match": "no", "reason": "a river"}'), False),
        (Completion(content="no", reasoning_content="yes, surely"), False),
        (Completion(content=None, reasoning_content="yes"), None),
    ]
    for reply, verdict in cases:
        with chat_server(reply) as (url, _):
            match, reason = judge(url, tmp_path).check_relevance(image, "a temple", "Kyoto")
        assert match is verdict, reason
    assert "no answer" in reason


# --- the trainer reward, the evaluation, the command --------------------------------------


def test_a_completion_whose_reasoning_never_closes_has_no_document(tmp_path: Path) -> None:
    tools = fake_tools()
    judge = Judge(llm=model('{"text": 5, "image": 5}'))
    reward = DocumentReward(context=Context(artifact_dir=str(tmp_path / "a")), judge=judge,
                            tools=tools)
    scores = reward.score("Kyoto", f"<think>{THOUGHT} and then")
    assert scores["reward"] == 0.0 and "ended inside its reasoning" in scores["errors"][0]
    assert tools["search"].calls == []
    scored = reward.score("Kyoto", f"{THOUGHT}</think>{ANSWER}")
    assert scored["reward"] > 0 and tools["search"].calls == [] and len(tools["code"].calls) == 1


def test_an_eval_item_without_an_answer_fails(tmp_path: Path) -> None:
    def answer(body: dict[str, Any]) -> Completion:
        asked = body["messages"][-1]["content"]
        if "fox" in asked:
            return Completion(content=None, reasoning_content="Thinking about foxes")
        return Completion(content="# Rain\n\nIt rains.")

    items = [{"id": i, "prompt": p, "images": [], "image_num": 0, "criteria": [], "tools": [],
              "split": "", "data_source": "test", "extra": {}}
             for i, p in (("fox", "A fable about a fox"), ("rain", "Rain"))]
    with routed_chat_server(answer) as (url, _):
        ctx = served_context(url, tmp_path)
        evaluation = Evaluation(items, tmp_path / "eval", scorers=[], context=ctx,
                                graph=lambda saver: build_graph(tools=fake_tools()).compile(
                                    checkpointer=saver))
        summary = evaluation.run()
    lines = {json.loads(line)["id"]: json.loads(line)
             for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()}
    assert summary["errors"] == 1 and lines["rain"]["status"] == "ok"
    assert lines["fox"]["status"] == "error"
    assert "holds reasoning but no answer" in lines["fox"]["error"]


@pytest.mark.parametrize(("reply", "says"), [
    NO_ANSWER["reasoning only, null content"],
    (Completion(content="<think>Still thinking", finish_reason="length"), "raise LLMI_MAX_TOKENS"),
], ids=["reasoning only", "cut inside reasoning"])
def test_generate_exits_non_zero_with_one_llmi_line(
    reply: Completion, says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with chat_server(reply) as (url, _):
        monkeypatch.setenv("LLMI_MODEL", "deepseek-r1")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        code = main(["generate", "Kyoto", "--out", str(tmp_path / "out")])
    assert code != 0
    err = capsys.readouterr().err
    reason = [line for line in err.splitlines() if line.startswith("llmi:")]
    assert len(reason) == 1 and says in reason[0], err
    assert not (tmp_path / "out" / "document.md").exists()


# --- streamed replies, as LangGraph's "messages" stream mode (Studio, the server) asks ---


@pytest.mark.parametrize("form", [FORMS["bare closing tag (R1, Qwen3-Thinking templates)"],
                                  FORMS["reasoning (vLLM 0.11+, Ollama)"]],
                         ids=["bare closing tag", "reasoning field"])
def test_a_streamed_reply_gives_the_same_document(form: Completion, tmp_path: Path) -> None:
    tools = fake_tools()
    with chat_server(form) as (url, seen):
        graph = build_graph(tools=tools).compile()
        streamed = list(graph.stream({"prompt": "Kyoto"}, context=served_context(url, tmp_path),
                                     stream_mode=["messages", "values"]))
    assert seen[0]["body"]["stream"] is True
    draft = [chunk["draft"] for mode, chunk in streamed if mode == "values" and "draft" in chunk][-1]
    assert draft.startswith("# Kyoto") and "leak" not in draft
    assert tools["search"].calls == [] and len(tools["code"].calls) == 1


def shown(events: list[dict]) -> str:
    """The text a watcher of the planner's ``text`` events has at the end."""
    text = ""
    for event in events:
        text = (text if not event.get("restart") else "") + event["text"]
    return text


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_the_text_events_are_the_answer_only(form: Completion, tmp_path: Path) -> None:
    with chat_server(Streamed(form, size=3)) as (url, _):
        streamed = list(build_graph(tools=fake_tools()).compile().stream(
            {"prompt": "Kyoto"}, context=served_context(url, tmp_path),
            stream_mode=["custom", "values"]))
    events = [chunk for mode, chunk in streamed if mode == "custom" and chunk["llmi"] == "text"]
    after = events[max((i for i, e in enumerate(events) if e.get("restart")), default=0):]
    assert not any("leak" in event["text"] or "could add" in event["text"] for event in after)
    draft = [chunk["draft"] for mode, chunk in streamed if mode == "values" and "draft" in chunk][-1]
    assert shown(events).strip() == draft == ANSWER


@pytest.mark.parametrize("form", [*FORMS.values(), Completion(content="a <b> </thin <th")],
                         ids=[*FORMS.keys(), "tag-like text"])
def test_a_streamed_answer_is_the_answer_in_any_pieces(form: Completion) -> None:
    content = form.content or ""
    answer = split_reply(content).answer
    for size in range(1, len(content) + 1):
        stream = AnswerStream()
        events = [{"text": piece.text, "restart": piece.restart}
                  for piece in map(stream.feed, (content[i:i + size]
                                                 for i in range(0, len(content), size)))]
        assert shown([*events, {"text": stream.end()}]).strip() == answer, size


def test_streamed_reasoning_fields_are_kept(tmp_path: Path) -> None:
    with chat_server(Completion(content=None, reasoning_content=THOUGHT,
                                finish_reason="length")) as (url, _):
        chunks = list(chat_model(served_context(url, tmp_path)).stream("Kyoto"))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    split = split_reply(whole)
    assert split.reasoning == THOUGHT and split.answer == "" and split.cut_off


# --- repairs and polish use the planner's model: only its answer counts -------------------


def repairing_model(code_reply: str) -> ScriptedModel:
    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        return code_reply if messages[0].text == REPAIR_SYSTEM else tag("code", code="plt.plot(x)")

    return ScriptedModel(script=script)


def broken_until_fixed(call: ToolCall) -> None:
    if "[1, 2]" not in call.request["params"]["code"]:
        raise ToolError("NameError: x", kind="no_result")


@pytest.mark.parametrize(("reply", "fixed"), [
    ("<think>```python\nplt.plot(y)\n```</think>```python\nplt.plot([1, 2])\n```", True),
    ("```python\nplt.plot(y)\n```</think>```python\nplt.plot([1, 2])\n```", True),
    ("<think>```python\nplt.plot([1, 2])\n```", False),
], ids=["think block", "bare closing tag", "unclosed"])
def test_a_code_repair_comes_from_the_answer(reply: str, fixed: bool, context: Context) -> None:
    code = FakeTool("code", ("code",), behaviour=broken_until_fixed)
    repairer = repairing_model(reply)
    tools = fake_tools(code=code)
    out = build_graph(model=repairer, tools=tools,
                      verifier=Verifier(model=repairer, tools=tools)).compile().invoke(
        {"prompt": "p"}, context=context)
    tried = [call.request["params"]["code"] for call in code.calls]
    assert "plt.plot(y)" not in tried
    assert (tried[-1] == "plt.plot([1, 2])") is fixed
    if not fixed:
        assert any("ended inside its reasoning" in f["problem"] for f in out["findings"])


SEGMENTS = [{"kind": "text", "text": "Rain."}, {"kind": "slot", "slot": 0}]


@pytest.mark.parametrize(("reply", "text"), [
    ("<think>Maybe [[IMAGE 0]] twice [[IMAGE 0]]</think>Rain in June.\n\n[[IMAGE 0]]", "Rain in June."),
    ("<think>Rain in June.\n\n[[IMAGE 0]]", None),
    ("Rewriting [[IMAGE 0]]</think>", None),
], ids=["think block", "unclosed", "reasoning only"])
def test_polish_uses_the_answer_only(reply: str, text: str | None) -> None:
    update = Polisher(model=model(reply))({"prompt": "p", "segments": SEGMENTS, "results": []},
                                          None)
    if text is None:
        assert "segments" not in update and "reasoning" in update["findings"][0]["problem"]
    else:
        assert update["segments"][0] == {"kind": "text", "text": text}


def test_polish_keeps_the_text_when_the_revision_was_cut(tmp_path: Path) -> None:
    with chat_server(Completion(content="Rain in", finish_reason="length")) as (url, _):
        polisher = Polisher(model=chat_model(served_context(url, tmp_path)))
        update = polisher({"prompt": "p", "segments": SEGMENTS, "results": []}, None)
    assert "segments" not in update and "LLMI_MAX_TOKENS" in update["findings"][0]["problem"]


def test_a_rubric_criterion_is_graded_from_the_answer_only(tmp_path: Path) -> None:
    def grade(body: dict[str, Any]) -> Completion:
        criterion = body["messages"][-1]["content"].rpartition("<criterion>")[2]
        if "chart" in criterion:
            return Completion(content='{"score": 2, "justification": "a chart"}',
                              reasoning_content='{"score": 0}')
        return Completion(content=None, reasoning_content='{"score": 0}', finish_reason="length")

    item = {"id": "rain", "prompt": "Rain", "images": [], "image_num": 0, "tools": [],
            "split": "", "criteria": ["Has a chart", "Ends with a haiku"], "data_source": "test",
            "extra": {}}
    run = {"item": item, "document": {"segments": [{"kind": "text", "text": "Rain."}]},
           "seconds": 1.0}
    with routed_chat_server(grade) as (url, _):
        ctx = served_context(url, tmp_path, judge_model="r1-judge")
        scored = RubricScorer.from_context(ctx).score(run, ArtifactStore(ctx.artifact_dir))
    first, second = scored["details"]["criteria"]
    assert first["score"] == 2 and second["score"] is None
    assert "LLMI_JUDGE_MAX_TOKENS" in second["error"] and scored["score"] == 1.0
