"""The planner streams: its text shows while the model writes, and the model timeout
bounds the silence between chunks, not the whole reply."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from llmi.cli import main
from llmi.cli.progress import SlotProgress
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_tts_graph
from llmi.judge import Judge
from llmi.models import ModelServerError

from helpers import ScriptedModel, fake_tools, tag
from openai_standin import Completion, Streamed, chat_server

ANSWER = ("# Kyoto\n\nRain peaks in June, when the plum rains come.\n\n"
          + tag("code", "Rain by month", code="plt.bar([1, 2], [3, 4])")
          + "\n\nThe gardens are greenest then.")


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def served(url: str, tmp_path: Path, **fields: Any) -> Context:
    return Context(model="qwen3", base_url=url, artifact_dir=str(tmp_path / "artifacts"),
                   out_dir=str(tmp_path / "out"), **fields)


def test_the_text_streams_as_the_model_writes(tmp_path: Path) -> None:
    gate = threading.Event()
    tools = fake_tools()
    with chat_server(Streamed(Completion(content=ANSWER), size=5, gate=gate)) as (url, seen):
        graph = build_graph(tools=tools).compile()
        chunks = []
        for mode, chunk in graph.stream({"prompt": "Kyoto"}, context=served(url, tmp_path),
                                        stream_mode=["custom", "updates"]):
            # The server sends the rest of its reply only once the first piece has shown.
            if mode == "custom" and chunk["llmi"] == "text":
                gate.set()
            chunks.append((mode, chunk))
    assert seen[0]["gate_opened"]
    texts = [chunk["text"] for mode, chunk in chunks if mode == "custom" and chunk["llmi"] == "text"]
    planned = next(i for i, (mode, chunk) in enumerate(chunks) if mode == "updates" and "planner" in chunk)
    assert len(texts) > 10 and "".join(texts) == chunks[planned][1]["planner"]["draft"] == ANSWER
    assert not any(mode == "custom" and chunk["llmi"] == "text" for mode, chunk in chunks[planned:])
    assert len(tools["code"].calls) == 1


def test_a_reply_longer_than_the_model_timeout_completes(tmp_path: Path) -> None:
    # Scaled down: a 2 s reply, in pieces 0.2 s apart, under a 1 s timeout.
    reply = Streamed(Completion(content=ANSWER), size=len(ANSWER) // 10 + 1, pause=0.2)
    with chat_server(reply) as (url, _):
        out = build_graph(tools=fake_tools()).compile().invoke(
            {"prompt": "Kyoto"}, context=served(url, tmp_path, model_timeout=1.0, model_retries=0))
    assert out["draft"] == ANSWER
    assert "The gardens are greenest then." in Path(out["outputs"]["markdown"]).read_text()


CUTS = {
    "connection closed": (Streamed(Completion(content=ANSWER), size=5, cut_after=6),
                          "closed the connection part-way through its reply, after 7 chunks",
                          "check the server and its log"),
    "body ended": (Streamed(Completion(content=ANSWER), size=5, cut_after=6, cut="end"),
                   "ended its reply part-way, after 7 chunks, without saying that it had "
                   "finished (no finish_reason)", "check the server and any proxy before it"),
    "silent": (Streamed(Completion(content=ANSWER), size=5, cut_after=6, cut="stall"),
               "stopped part-way through its reply, after 7 chunks: nothing more came within 0.5 s",
               "raise LLMI_MODEL_TIMEOUT, the longest silence allowed within a reply"),
}


@pytest.mark.parametrize(("reply", "reason", "hint"), CUTS.values(), ids=CUTS.keys())
def test_a_reply_cut_part_way_fails_and_is_not_parsed(reply: Streamed, reason: str, hint: str,
                                                      tmp_path: Path) -> None:
    tools = fake_tools()
    with chat_server(reply) as (url, seen):
        graph = build_graph(tools=tools).compile()
        with pytest.raises(ModelServerError) as raised:
            graph.invoke({"prompt": "Kyoto"},
                         context=served(url, tmp_path, model_timeout=0.5, model_retries=2))
    assert reason in raised.value.reason and hint in raised.value.hint
    assert len(seen) == 1 and tools["code"].calls == []


def test_the_command_says_where_the_reply_broke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    reply, reason, hint = CUTS["silent"]
    with chat_server(reply) as (url, _):
        monkeypatch.setenv("LLMI_MODEL", "qwen3")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("LLMI_MODEL_TIMEOUT", "0.5")
        code = main(["generate", "Kyoto", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    reasons = [line for line in err.splitlines() if line.startswith("llmi:")]
    assert len(reasons) == 1 and reason in reasons[0], err
    assert not (tmp_path / "out" / "document.md").exists()


def test_the_command_prints_only_the_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with chat_server(Streamed(Completion(content="# Kyoto\n\nRain in June."), size=3)) as (url, _):
        monkeypatch.setenv("LLMI_MODEL", "qwen3")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        code = main(["generate", "Kyoto", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0 and len(out.splitlines()) == 3
    assert "Rain in June" in Path(out.splitlines()[0]).read_text()
    # Not a terminal: one line says the planner writes, and its text is not repeated.
    assert err.count("the planner is writing") == 1 and "Rain in June" not in err


def test_candidates_send_their_text_under_their_ids(context: Context) -> None:
    def writer(messages, kwargs) -> str:
        return f"# Plan {kwargs['seed']}\n\nRain."

    context.candidates, context.keep, context.seed = 2, 2, 0
    graph = build_tts_graph(model=ScriptedModel(script=writer), judge=Judge(),
                            tools=fake_tools()).compile()
    events = [event for _, event in graph.stream({"prompt": "Rain"}, context=context,
                                                 stream_mode="custom", subgraphs=True)]
    texts = {event["candidate"]: event["text"] for event in events if event["llmi"] == "text"}
    assert texts == {"c0": "# Plan 0\n\nRain.", "c1": "# Plan 1\n\nRain."}


# --- the terminal ------------------------------------------------------------------------


def terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=60, height=30), screen


def test_a_terminal_shows_the_text_while_the_planner_writes() -> None:
    console, screen = terminal()
    with SlotProgress(console) as progress:
        progress.event({"llmi": "text", "text": "Rain peaks"})
        assert "the planner is writing" in screen.getvalue()
        assert "Rain peaks" in screen.getvalue()
        progress.event({"llmi": "text", "text": "The answer", "restart": True})
        assert progress.texts == {"": "The answer"}
        progress.event({"llmi": "text", "text": "# Plan", "candidate": "c1"})
        assert progress.texts["c1"] == "# Plan"
        progress.step("draft", {"candidates": [{"id": "c1", "error": "no reply"}]})
        progress.step("planner", {"segments": [], "requests": [], "results": []})
        assert progress.texts == {}
        drawn = screen.getvalue()
        progress.slot({"slot": 0, "source": "code", "status": "queued", "description": "Rain"})
    last = screen.getvalue()[len(drawn):]
    assert "Rain" in last and "writing" not in last
