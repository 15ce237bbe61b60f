"""The graphs of langgraph.json on the real ``langgraph dev`` server: no keys, no network.

One in-memory dev server (langgraph-cli's ``dev`` with the in-memory runtime, run
WITHOUT ``--allow-blocking``) serves ``llmi`` and ``llmi-tts`` on a loopback port.
The langgraph-sdk client starts runs on it; the chat model is the real ChatOpenAI in
the server, pointed through the run's context at a loopback OpenAI-compatible
stand-in in this process. The chart tool really runs; search has no backend and
fails its slot with a note.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph_api")
pytest.importorskip("langgraph_cli")
langgraph_sdk = pytest.importorskip("langgraph_sdk")

from helpers import tag  # noqa: E402
from openai_standin import chat_server  # noqa: E402
from server_standin import DevServer, dev_server  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DRAFT = (
    "# Kyoto in June\n\nThe rainy season peaks in June.\n\n"
    + tag("code", "Monthly rainfall in Kyoto",
          code="plt.bar(['Apr', 'May', 'Jun'], [120, 140, 210])\nplt.title('Rainfall (mm)')")
    + "\n\nKinkaku-ji stays lovely in the rain.\n\n"
    + tag("search", "Kinkaku-ji in the rain", query="Kinkaku-ji rain")
    + "\n\nPack an umbrella."
)
CODE_SLOT, SEARCH_SLOT = 0, 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with dev_server(tmp_path_factory.mktemp("langgraph-dev")) as running:
        yield running


def context(tmp_path: Path, base_url: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model, "base_url": base_url, "api_key": "x",
        "out_dir": str(tmp_path / "out"), "artifact_dir": str(tmp_path / "artifacts"),
        "search_backend": "", "tavily_api_key": "", "diffusion_backend": "", "edit_backend": "",
        "judge_model": "", "vision_judge_model": "", "model_timeout": 30.0, "seed": 0,
        **extra,
    }


def run_on(server: DevServer, graph: str, prompt: str, ctx: dict[str, Any], *, subgraphs: bool = False):
    """Stream one run of ``graph`` on a new thread: (run, events, final state)."""
    client = langgraph_sdk.get_sync_client(url=server.url, timeout=120)
    thread = client.threads.create()
    created: list[Any] = []
    events = list(client.runs.stream(
        thread["thread_id"], graph,
        input={"prompt": prompt},
        context=ctx,
        stream_mode=["values", "updates", "custom"],
        stream_subgraphs=subgraphs,
        on_run_created=created.append,
    ))
    client.runs.join(thread["thread_id"], created[0]["run_id"])
    run = client.runs.get(thread["thread_id"], created[0]["run_id"])
    state = client.threads.get_state(thread["thread_id"])
    return run, events, state


def assert_healthy_and_offline(server: DevServer) -> None:
    """No blocking call was caught, the server still runs, and it only called loopback hosts."""
    assert server.blocking_errors() == [], "\n".join(server.blocking_errors())
    assert server.process.poll() is None, server.log_text()[-4000:]
    urls = server.requested_urls()
    assert urls and all(url.startswith("http://127.0.0.1:") for url in urls), urls


def test_the_document_graph_runs_on_the_dev_server(server: DevServer, tmp_path: Path) -> None:
    with chat_server(DRAFT) as (url, seen):
        run, events, state = run_on(
            server, "llmi", "A short guide to Kyoto in June", context(tmp_path, url, "fake-doc"))

    errors = [e.data for e in events if e.event == "error"]
    assert run["status"] == "success", (errors, server.log_text()[-4000:])
    assert errors == []
    # The real ChatOpenAI in the server talked to the stand-in, as the run's context said.
    assert seen and seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["body"]["model"] == "fake-doc" and seen[0]["auth"] == "Bearer x"

    kinds = {e.event.split("|", 1)[0] for e in events}
    assert {"values", "updates", "custom"} <= kinds
    updated = {node for e in events if e.event == "updates" for node in e.data}
    assert {"intake", "planner", "dispatch", "verifier", "assembler"} <= updated
    slot_events = [e.data for e in events if e.event == "custom" and e.data.get("llmi") == "slot"]
    status = {(ev["slot"], ev["status"]) for ev in slot_events}
    assert {(CODE_SLOT, "started"), (CODE_SLOT, "finished"), (SEARCH_SLOT, "failed")} <= status

    values = state["values"]
    results = {r["slot"]: r for r in values["results"]}
    assert results[CODE_SLOT]["ok"] and results[CODE_SLOT]["image"]["sha256"]
    # The chart was drawn in the server's own chart subprocess, not taken from a cache.
    assert results[CODE_SLOT]["backend"] and not results[CODE_SLOT]["provenance"].get("cached")
    assert not results[SEARCH_SLOT]["ok"] and "LLMI_SEARCH" in results[SEARCH_SLOT]["error"]
    out = Path(values["outputs"]["dir"])
    assert out == (tmp_path / "out").resolve()

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    slots = {s["index"]: s for s in manifest["slots"]}
    assert slots[CODE_SLOT]["ok"] and slots[CODE_SLOT]["image"]["width"] > 64
    assert (out / slots[CODE_SLOT]["image"]["path"]).is_file()
    assert not slots[SEARCH_SLOT]["ok"]
    assert manifest["stats"] == {"code": {"total": 1, "success": 1},
                                 "search": {"total": 1, "success": 0}}
    markdown = (out / "document.md").read_text(encoding="utf-8")
    assert "Kyoto in June" in markdown and "<imgen" not in markdown
    assert_healthy_and_offline(server)


def test_the_test_time_scaling_graph_runs_on_the_dev_server(server: DevServer, tmp_path: Path) -> None:
    with chat_server(DRAFT) as (url, seen):
        run, events, state = run_on(
            server, "llmi-tts", "A short guide to Kyoto in June",
            context(tmp_path, url, "fake-tts", candidates=2, keep=1), subgraphs=True)

    errors = [e.data for e in events if e.event == "error"]
    assert run["status"] == "success", (errors, server.log_text()[-4000:])
    plans = [r["body"] for r in seen if "<imgen>" in r["body"]["messages"][0]["content"]]
    assert sorted(body["seed"] for body in plans) == [0, 1]

    # With subgraphs, an event of the production graph is named "<mode>|produce:<task id>|...".
    updated = {node for e in events if e.event == "updates" for node in e.data}
    assert {"draft", "screen", "produce", "rank", "polish", "assembler"} <= updated
    inner = {node for e in events if e.event.startswith("updates|") for node in e.data}
    assert {"dispatch", "verifier"} <= inner
    slot_events = [e.data for e in events
                   if e.event.split("|", 1)[0] == "custom" and e.data.get("llmi") == "slot"]
    # Only the survivor runs its tools, and its events say which candidate it is.
    assert {ev.get("candidate") for ev in slot_events} == {state["values"]["winner"]}

    manifest = json.loads(Path(state["values"]["outputs"]["manifest"]).read_text(encoding="utf-8"))
    assert manifest["winner"] in {"c0", "c1"}
    assert sorted(c["id"] for c in manifest["candidates"]) == ["c0", "c1"]
    assert [c["pruned"] for c in manifest["candidates"]].count(False) == 1
    slots = {s["index"]: s for s in manifest["slots"]}
    assert slots[CODE_SLOT]["ok"] and not slots[SEARCH_SLOT]["ok"]
    assert_healthy_and_offline(server)


def test_a_plan_under_review_stops_and_resumes_through_the_sdk(
    server: DevServer, tmp_path: Path,
) -> None:
    client = langgraph_sdk.get_sync_client(url=server.url, timeout=120)
    thread = client.threads.create()["thread_id"]
    ctx = context(tmp_path, "", "fake-review", review=True, consistency="tags")
    with chat_server(DRAFT) as (url, _):
        ctx["base_url"] = url
        first = list(client.runs.stream(thread, "llmi", input={"prompt": "Kyoto in June"},
                                        context=ctx, stream_mode="updates"))
        stopped = client.threads.get_state(thread)
        (interrupt,) = stopped["interrupts"]
        plan = interrupt["value"]
        # The plan is plain JSON: each slot with its text, and no tool has run.
        assert [(s["index"], s["source"]) for s in plan["slots"]] == [
            (CODE_SLOT, "code"), (SEARCH_SLOT, "search")]
        assert plan["slots"][CODE_SLOT]["after"] == "Kinkaku-ji stays lovely in the rain."
        assert stopped["next"] == ["review"]
        assert not any(e.event == "custom" and e.data.get("llmi") == "slot" for e in first)

        edited = {**plan, "slots": [{**plan["slots"][CODE_SLOT], "description": "Rain, April to June"}]}
        events = list(client.runs.stream(thread, "llmi", command={"resume": edited}, context=ctx,
                                         stream_mode=["updates", "custom"]))
    errors = [e.data for e in events if e.event == "error"]
    assert errors == [], server.log_text()[-4000:]
    values = client.threads.get_state(thread)["values"]
    manifest = json.loads(Path(values["outputs"]["manifest"]).read_text(encoding="utf-8"))
    assert [(s["index"], s["description"], s["ok"]) for s in manifest["slots"]] == [
        (CODE_SLOT, "Rain, April to June", True)]
    assert manifest["notes"] == ["plan reviewed: image 0 changed; image 1 dropped"]
    assert_healthy_and_offline(server)
