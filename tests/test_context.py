"""Configuration: context fields fall back to the environment; nodes read only the context."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from llmi.context import Context, SettingError, env_name

ROOT = Path(__file__).resolve().parents[1]


def test_fields_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMI_MODEL", "qwen")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1")
    monkeypatch.setenv("LLMI_MAX_IMAGES", "3")
    monkeypatch.setenv("LLMI_CODE_TIMEOUT", "2.5")
    ctx = Context()
    assert (ctx.model, ctx.base_url, ctx.max_images, ctx.code_timeout) == (
        "qwen", "http://localhost:8000/v1", 3, 2.5)


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("LLMI_KEEP", "abc", "a whole number"),
    ("LLMI_CODE_TIMEOUT", "20s", "a number"),
    ("LLMI_TOOL_CACHE", "maybe", "one of 1, true, yes, on, 0, false, no, off"),
])
def test_a_value_a_setting_cannot_take_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, expected: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingError) as raised:
        Context()
    assert str(raised.value) == f"{name}={raw!r} is not {expected}"
    assert raised.value.name == name


@pytest.mark.parametrize(("raw", "value"), [(" Off ", False), ("YES", True), ("0", False)])
def test_switches_read_the_usual_words(monkeypatch: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    monkeypatch.setenv("LLMI_TOOL_CACHE", raw)
    assert Context().tool_cache is value


def test_explicit_values_win_and_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMI_MODEL", "from-env")
    ctx = Context(model="explicit")
    assert ctx.model == "explicit"
    assert ctx.repair_rounds == 2 and ctx.code_timeout == 20.0
    assert env_name("model") == "LLMI_MODEL"


def test_the_key_is_not_in_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    assert "sk-very-secret" not in repr(Context())


def test_only_the_context_module_reads_the_environment() -> None:
    readers = [
        path.relative_to(ROOT).as_posix()
        for folder in ("nodes", "tools", "graphs", "state", "llmi")
        for path in (ROOT / folder).rglob("*.py")
        if re.search(r"os\.environ|os\.getenv", path.read_text())
    ]
    # The chart tool copies the environment only to scrub secrets from its child's, and
    # the chart process forked from the warm zygote takes that scrubbed copy as its own.
    assert sorted(readers) == ["llmi/context.py", "tools/chart_runner.py", "tools/code.py"]


@pytest.mark.parametrize(("name", "nodes"), [
    ("llmi", {"intake", "planner", "dispatch", "verifier", "assembler"}),
    ("llmi-tts", {"intake", "draft", "screen", "produce", "rank", "polish", "assembler"}),
])
def test_langgraph_json_names_compiled_graphs_without_checkpointer(name: str, nodes: set[str]) -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, attribute = config["graphs"][name].partition(":")
    spec = importlib.util.spec_from_file_location(f"studio_{name.replace('-', '_')}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = getattr(module, attribute)
    assert graph.checkpointer is None
    assert nodes <= set(graph.get_graph().nodes)
