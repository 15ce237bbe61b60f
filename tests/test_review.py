"""Plan review: a run stops after planning, before any tool runs, and goes on with the plan
a person accepted or edited, in the graph, through the command line, and a bad edit is a
clear error that loses nothing."""

from __future__ import annotations

import copy
import io
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from rich.console import Console

from llmi.artifacts import ArtifactStore
from llmi.cli import main
from llmi.cli.review import TerminalReview
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_production_graph, build_tts_graph
from llmi.judge import Judge
from llmi.nodes.review import DROPPED
from llmi.plans import PlanError, read_edit
from llmi.tags import read_tag
from llmi.tools import inflight
from llmi.tools.cache import ToolCache
from llmi.tools.early import EarlyStarts
from llmi.tools.making import in_flight_key

from helpers import FakeTool, ScriptedModel, fake_tools, model, tag
from openai_standin import chat_server

DRAFT = (
    "# The fox\n\nA fox lives at the edge of the wood.\n\n"
    + tag("diffusion", "A red fox", prompt="a red fox in a wood")
    + "\n\nIts tracks, counted by month.\n\n"
    + tag("code", "Tracks by month", code="plt.bar(['Jan', 'Feb'], [3, 5])")
    + "\n\nIn winter it turns grey.\n\n"
    + tag("edit", "The fox in snow", img_index=0, prompt="in snow")
    + "\n\nWhere foxes live.\n\n"
    + tag("search", "Fox habitat map", query="red fox range map")
    + "\n\nA broken tag:\n\n<imgen>{'source': 'painting', 'description': 'oils'}</imgen>"
    + "\n\nThe end."
)
FOX, CHART, SNOW, MAP, BROKEN = range(5)
CONFIG = {"configurable": {"thread_id": "review"}}


@pytest.fixture
def reviewing(context: Context) -> Context:
    # Early starts stay on (the default), as does the tool cache: review alone stops them.
    return replace(context, review=True, consistency="tags", seed=0)


def graph(tools, draft: str = DRAFT):
    return build_graph(model=model(draft), tools=tools).compile(checkpointer=InMemorySaver())


def calls(tools) -> dict[str, list[dict[str, Any]]]:
    return {source: [call.request for call in tools[source].calls] for source in tools}


def made(tools) -> set[int]:
    """The slots a tool was called for."""
    return {call.request["slot"] for source in tools for call in tools[source].calls}


def manifest_of(context: Context) -> dict[str, Any]:
    return json.loads((Path(context.out_dir) / "manifest.json").read_text(encoding="utf-8"))


def stopped(tools, context: Context) -> tuple[Any, dict[str, Any]]:
    """The graph and the plan it stopped at."""
    reviewed = graph(tools)
    out = reviewed.invoke({"prompt": "A fox"}, CONFIG, context=context)
    (interrupt,) = out["__interrupt__"]
    return reviewed, interrupt.value


def test_review_stands_after_subjects_and_before_dispatch() -> None:
    drawn = build_graph(model=model(""), tools=fake_tools()).compile().get_graph()
    edges = {(edge.source, edge.target) for edge in drawn.edges}
    assert {("planner", "subjects"), ("subjects", "review"), ("review", "dispatch")} <= edges
    production = build_production_graph(tools=fake_tools()).compile().get_graph()
    assert {("subjects", "review"), ("review", "dispatch")} <= {
        (edge.source, edge.target) for edge in production.edges}


def test_without_review_the_run_goes_straight_through(context: Context) -> None:
    tools = fake_tools()
    out = graph(tools).invoke({"prompt": "A fox"}, CONFIG, context=replace(context, seed=0))
    assert "__interrupt__" not in out and out["outputs"]["markdown"]
    assert {FOX, CHART, SNOW, MAP} <= made(tools)


def test_review_stops_before_any_tool_with_the_plan_as_plain_json(reviewing: Context) -> None:
    assert reviewing.early_tools and reviewing.tool_cache
    tools = fake_tools()
    reviewed, plan = stopped(tools, reviewing)
    assert made(tools) == set()
    assert not (Path(reviewing.out_dir) / "document.md").exists()
    assert json.loads(json.dumps(plan)) == plan
    assert [(s["index"], s["source"], s["description"]) for s in plan["slots"]] == [
        (FOX, "diffusion", "A red fox"), (CHART, "code", "Tracks by month"),
        (SNOW, "edit", "The fox in snow"), (MAP, "search", "Fox habitat map")]
    snow = plan["slots"][SNOW]
    assert snow["params"] == {"img_index": FOX, "prompt": "in snow"}
    assert snow["before"] == "In winter it turns grey." and snow["after"] == "Where foxes live."
    (broken,) = plan["failed"]
    assert broken["index"] == BROKEN and "unknown source 'painting'" in broken["error"]
    assert plan["sources"]["edit"]["params"] == ["img_index", "prompt"]
    assert reviewed.get_state(CONFIG).next == ("review",)


@pytest.mark.parametrize("review", [False, True])
def test_early_starts_start_no_tool_when_the_run_reviews_its_plan(
    review: bool, reviewing: Context,
) -> None:
    tools = fake_tools()
    starts = EarlyStarts(tools, replace(reviewing, review=review), [])
    request = read_tag(0, {"source": "code", "description": "chart",
                           "params": {"code": "plt.plot([1])"}}, tools.required_params())
    starts.start(request)
    store = ArtifactStore(reviewing.artifact_dir)
    key = ToolCache(store).key(tools["code"], request, reviewing)
    if started := inflight.CALLS.claim(in_flight_key(store, key)):
        started.result(10)
    starts.close([])
    assert len(tools["code"].calls) == (0 if review else 1)


@pytest.mark.parametrize("answer", [True, "accept"])
def test_an_accepted_plan_runs_as_planned(answer: Any, reviewing: Context) -> None:
    tools = fake_tools()
    reviewed, _ = stopped(tools, reviewing)
    out = reviewed.invoke(Command(resume=answer), CONFIG, context=reviewing)
    assert out["outputs"]["markdown"]
    assert {FOX, CHART, SNOW, MAP} <= made(tools)
    slots = {s["index"]: s for s in manifest_of(reviewing)["slots"]}
    assert sorted(slots) == [FOX, CHART, SNOW, MAP, BROKEN]
    assert not any("plan reviewed" in note for note in manifest_of(reviewing).get("notes", []))


def test_an_edited_plan_changes_slots_and_drops_one(reviewing: Context) -> None:
    tools = fake_tools()
    reviewed, plan = stopped(tools, reviewing)
    edited = copy.deepcopy(plan)
    chart, snow, habitat = edited["slots"][CHART], edited["slots"][SNOW], edited["slots"][MAP]
    chart["description"] = "Tracks by week"
    chart["params"]["code"] = "plt.plot([1, 2, 3])"
    snow["params"]["prompt"] = "in deep snow at dusk"
    habitat["source"], habitat["params"] = "diffusion", {"prompt": "a map of a fox's range"}
    del edited["failed"][0]  # the broken tag is dropped
    out = reviewed.invoke(Command(resume=edited), CONFIG, context=reviewing)

    requests = calls(tools)
    assert [r["params"]["code"] for r in requests["code"]] == ["plt.plot([1, 2, 3])"]
    assert [r["params"]["prompt"] for r in requests["edit"]] == ["in deep snow at dusk"]
    assert sorted(r["slot"] for r in requests["diffusion"]) == [FOX, MAP]
    assert requests["search"] == []
    manifest = manifest_of(reviewing)
    slots = {s["index"]: s for s in manifest["slots"]}
    assert sorted(slots) == [FOX, CHART, SNOW, MAP]
    assert slots[CHART]["description"] == "Tracks by week"
    assert slots[MAP]["source"] == "diffusion" and slots[MAP]["ok"]
    assert "plan reviewed: images 1, 2, 3 changed; image 4 dropped" in manifest["notes"]
    markdown = Path(out["outputs"]["markdown"]).read_text(encoding="utf-8")
    assert "Tracks by week" in markdown and "A broken tag" in markdown


def test_a_dropped_slot_leaves_the_document_and_is_never_made(reviewing: Context) -> None:
    tools = fake_tools()
    reviewed, plan = stopped(tools, reviewing)
    edited = copy.deepcopy(plan)
    edited["slots"] = [s for s in edited["slots"] if s["index"] != CHART]
    out = reviewed.invoke(Command(resume=edited), CONFIG, context=reviewing)
    assert calls(tools)["code"] == []
    assert sorted(s["index"] for s in manifest_of(reviewing)["slots"]) == [FOX, SNOW, MAP, BROKEN]
    markdown = Path(out["outputs"]["markdown"]).read_text(encoding="utf-8")
    assert "Tracks by month" not in markdown and "Its tracks, counted by month." in markdown
    dropped = next(r for r in out["results"] if r["slot"] == CHART)
    assert dropped["error"] == DROPPED and not dropped["ok"]
    # The other slots went their usual ways.
    assert len(calls(tools)["edit"]) == 1


def bad_edit(plan: dict[str, Any]) -> dict[str, Any]:
    edited = copy.deepcopy(plan)
    edited["slots"][CHART]["source"] = "painting"
    del edited["slots"][MAP]["params"]["query"]
    edited["slots"][SNOW]["params"]["img_index"] = MAP
    return edited


def test_a_bad_edit_is_one_error_naming_every_slot(reviewing: Context) -> None:
    _, plan = stopped(fake_tools(), reviewing)
    with pytest.raises(PlanError) as caught:
        read_edit(bad_edit(plan), plan)
    problems = caught.value.problems
    assert problems == [
        "slot 1: unknown source 'painting' (known: search, diffusion, code, edit)",
        "slot 2: img_index 3 does not point at an input image or an earlier image "
        "(valid here: 0-1)",
        "slot 3: the search tag's params lack 'query'",
    ]
    assert caught.value.reason.startswith("the edited plan has 3 problems: slot 1:")


def test_dropping_an_image_that_a_slot_edits_is_an_error(reviewing: Context) -> None:
    _, plan = stopped(fake_tools(), reviewing)
    edited = copy.deepcopy(plan)
    edited["slots"] = [s for s in edited["slots"] if s["index"] != FOX]
    with pytest.raises(PlanError, match=r"slot 2: img_index 0 is an image the plan drops"):
        read_edit(edited, plan)


def test_refs_to_a_dropped_image_are_left_out(reviewing: Context) -> None:
    tools = fake_tools(diffusion=FakeTool("diffusion", ("prompt",), takes_references=True))
    draft = (tag("diffusion", "a fox", prompt="a fox") + "\n\nLater.\n\n"
             + tag("diffusion", "the fox asleep", prompt="the fox asleep", refs=[0]))
    reviewed = graph(tools, draft)
    (interrupt,) = reviewed.invoke({"prompt": "A fox"}, CONFIG, context=reviewing)["__interrupt__"]
    plan = interrupt.value
    assert plan["slots"][1]["params"]["refs"] == [0] and plan["sources"]["diffusion"]["refs"]
    out = reviewed.invoke(Command(resume={**plan, "slots": plan["slots"][1:]}), CONFIG,
                          context=reviewing)
    (asleep,) = calls(tools)["diffusion"]
    assert asleep["slot"] == 1 and "refs" not in asleep and "refs" not in asleep["params"]
    assert [r["ok"] for r in out["results"]] == [False, True]


@pytest.mark.parametrize(("answer", "problem"), [
    ("no", "the plan is not JSON"),
    ({"slots": "all"}, "not an object with a list 'slots'"),
    ({"slots": [{"index": 9, "source": "code"}]}, "slot 9: not a slot of the plan"),
    ({"slots": [{"index": [1], "source": "code"}]}, "entry 0 of 'slots' has no whole-number"),
    ({"slots": [{"index": 4, "source": "code", "params": {"code": "x"}}]},
     "slot 4: its tag failed"),
])
def test_answers_that_are_no_plan_say_why(answer: Any, problem: str, reviewing: Context) -> None:
    _, plan = stopped(fake_tools(), reviewing)
    with pytest.raises(PlanError, match=re.escape(problem)):
        read_edit(answer, plan)


def test_a_bad_edit_through_the_graph_asks_again_with_its_errors(reviewing: Context) -> None:
    tools = fake_tools()
    reviewed, plan = stopped(tools, reviewing)
    out = reviewed.invoke(Command(resume=bad_edit(plan)), CONFIG, context=reviewing)
    (again,) = out["__interrupt__"]
    assert len(again.value["errors"]) == 3 and again.value["errors"][0].startswith("slot 1:")
    assert {k: v for k, v in again.value.items() if k != "errors"} == plan
    assert made(tools) == set()
    out = reviewed.invoke(Command(resume="accept"), CONFIG, context=reviewing)
    assert out["outputs"]["markdown"] and {FOX, CHART, SNOW, MAP} <= made(tools)


def test_with_candidates_each_kept_plan_is_reviewed_before_its_tools_run(
    reviewing: Context,
) -> None:
    def writer(messages: list, kwargs: dict[str, Any]) -> str:
        return (f"# Plan {kwargs['seed']}\n\n"
                + tag("code", "chart", code=f"plt.plot([{kwargs['seed']}])")
                + "\n\nAnd a photo.\n\n" + tag("search", "a photo", query="fox"))

    context = replace(reviewing, candidates=3, keep=2)
    tools = fake_tools()
    scaled = build_tts_graph(model=ScriptedModel(script=writer), judge=Judge(),
                             tools=tools).compile(checkpointer=InMemorySaver())
    out = scaled.invoke({"prompt": "A fox"}, CONFIG, context=context)
    interrupts = out["__interrupt__"]
    assert sorted(i.value["candidate"] for i in interrupts) == ["c0", "c1"]
    assert made(tools) == set()

    def only_the_chart(plan: dict[str, Any]) -> dict[str, Any]:
        return {**plan, "slots": plan["slots"][:1]}

    out = scaled.invoke(Command(resume={i.id: only_the_chart(i.value) for i in interrupts}),
                        CONFIG, context=context)
    assert out["outputs"]["markdown"]
    assert sorted(r["params"]["code"] for r in calls(tools)["code"]) == [
        "plt.plot([0])", "plt.plot([1])"]
    assert calls(tools)["search"] == []
    assert [s["index"] for s in manifest_of(reviewing)["slots"]] == [0]


# --- the command line ------------------------------------------------------------------

CLI_DRAFT = (
    "# Report\n\nSales grew.\n\n"
    + tag("code", "Sales by year", code="plt.bar(['2023', '2024'], [3, 5])")
    + "\n\nAnd by region.\n\n"
    + tag("code", "Sales by region", code="plt.bar(['north', 'south'], [2, 4])")
    + "\n\nThat is all."
)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("LLMI_CHECKPOINT_URL", str(tmp_path / "checkpoints.sqlite"))
    monkeypatch.setenv("LLMI_MODEL", "llmi-test-model")
    with chat_server(CLI_DRAFT) as (url, seen):
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        yield seen


def generate(tmp_path: Path, *more: str) -> int:
    return main(["generate", "A sales report", "--review", "--thread", "r1",
                 "--out", str(tmp_path / "out"), *more])


def test_without_a_terminal_the_plan_is_written_and_the_command_exits_3(
    served: list, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert generate(tmp_path) == 3
    out = tmp_path / "out"
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert [s["description"] for s in plan["slots"]] == ["Sales by year", "Sales by region"]
    err = capsys.readouterr().err
    assert f"llmi resume r1 --plan {out / 'plan.json'}" in " ".join(err.split())
    assert not (out / "document.md").exists()


def test_resume_with_the_edited_plan_finishes_the_run(
    served: list, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert generate(tmp_path) == 3
    path = tmp_path / "out" / "plan.json"
    plan = json.loads(path.read_text(encoding="utf-8"))
    plan["slots"][0]["description"] = "Sales, 2023 and 2024"
    del plan["slots"][1]
    path.write_text(json.dumps(plan), encoding="utf-8")
    capsys.readouterr()
    assert main(["resume", "r1", "--plan", str(path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(tmp_path / "out" / "document.md")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert [(s["index"], s["description"], s["ok"]) for s in manifest["slots"]] == [
        (0, "Sales, 2023 and 2024", True)]
    assert main(["resume", "r1"]) == 0  # finished: the document again


def test_resume_without_a_plan_writes_it_again(
    served: list, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert generate(tmp_path) == 3
    (tmp_path / "out" / "plan.json").unlink()
    assert main(["resume", "r1"]) == 3
    assert (tmp_path / "out" / "plan.json").is_file()
    assert "--plan" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "said"), [
    (None, "cannot read the plan file"),
    ("{not json", "is not JSON"),
    (json.dumps({"slots": [{"index": 0, "source": "code", "description": "x", "params": {}}]}),
     "slot 0: the code tag's params lack 'code'"),
])
def test_a_bad_plan_file_is_a_clear_error_and_the_run_still_waits(
    content: str | None, said: str, served: list, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert generate(tmp_path) == 3
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    capsys.readouterr()
    assert main(["resume", "r1", "--plan", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("llmi: ") and said in err and "Traceback" not in err
    assert main(["resume", "r1", "--plan", str(tmp_path / "out" / "plan.json")]) == 0


def test_a_plan_for_a_run_not_waiting_for_review_is_refused(
    served: list, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["generate", "A sales report", "--thread", "r2", "--out", str(tmp_path / "o")]) == 0
    plan = tmp_path / "plan.json"
    plan.write_text("{}", encoding="utf-8")
    assert main(["resume", "r2", "--plan", str(plan)]) == 2
    assert "not waiting for its plan's review" in capsys.readouterr().err


def test_with_candidates_the_plan_screening_keeps_is_reviewed(
    served: list, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert generate(tmp_path, "--candidates", "2") == 3
    path = tmp_path / "out" / "plan.json"
    plan = json.loads(path.read_text(encoding="utf-8"))
    assert plan["candidate"] in {"c0", "c1"} and len(plan["slots"]) == 2
    assert not (tmp_path / "out" / "document.md").exists()
    del plan["slots"][0]
    path.write_text(json.dumps(plan), encoding="utf-8")
    assert main(["resume", "r1", "--plan", str(path)]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["winner"] == plan["candidate"]
    assert [s["index"] for s in manifest["slots"]] == [1]


def test_review_of_more_than_one_kept_plan_is_refused_before_any_model_call(
    served: list, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert generate(tmp_path, "--candidates", "3", "--keep", "2") == 2
    assert "keep is 2" in capsys.readouterr().err
    assert served == []


EDITOR_SCRIPT = """
import json, pathlib, sys
plan_path, tries = pathlib.Path(sys.argv[-1]), pathlib.Path(sys.argv[-2])
plan = json.loads(plan_path.read_text(encoding="utf-8"))
first = not tries.exists()
tries.write_text("edited", encoding="utf-8")
plan["slots"][1]["source"] = "painting" if first else "code"
plan["slots"][1]["description"] = "Tracks by week"
plan_path.write_text(json.dumps(plan), encoding="utf-8")
"""


def test_on_a_terminal_the_plan_is_shown_and_edited_until_it_can_be_used(
    reviewing: Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    _, plan = stopped(fake_tools(), reviewing)
    script = tmp_path / "editor.py"
    script.write_text(EDITOR_SCRIPT, encoding="utf-8")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script} {tmp_path / 'tries'}")
    choices = iter(["edit", "edit"])
    monkeypatch.setattr("llmi.cli.review.Prompt.ask", lambda *a, **k: next(choices))
    shown = io.StringIO()
    answer = TerminalReview(Console(file=shown, width=100)).ask(plan)

    assert answer["slots"][1]["description"] == "Tracks by week"
    read_edit(answer, plan)
    text = shown.getvalue()
    assert "image 2: edit" in text and "In winter it turns grey." in text and '"in snow"' in text
    assert "image 4: tag failed" in text
    assert "slot 1: unknown source 'painting'" in text  # the first edit's problem


@pytest.mark.parametrize(("choice", "answer"), [("accept", "accept"), ("quit", None)])
def test_on_a_terminal_the_plan_is_accepted_or_left(
    choice: str, answer: str | None, reviewing: Context, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, plan = stopped(fake_tools(), reviewing)
    monkeypatch.setattr("llmi.cli.review.Prompt.ask", lambda *a, **k: choice)
    assert TerminalReview(Console(file=io.StringIO())).ask(plan) == answer
