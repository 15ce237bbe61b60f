"""What each model is sent: temperature and token limit per role, per family of model names,
and a clear message when a server refuses one of them anyway."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from llmi import models
from llmi.cli import main
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.graphs.tts import build_tts_graph
from llmi.models import FAMILIES, SettingRefused, family_of, judge_model
from llmi.judge import Judge
from helpers import fake_tools
from openai_standin import chat_server

DRAFT = "# Kyoto\n\nRain peaks in June."


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize(("name", "temperature", "limit_field"), [
    ("o1", False, "max_completion_tokens"),
    ("o3-mini", False, "max_completion_tokens"),
    ("o4-mini-2025-04-16", False, "max_completion_tokens"),
    ("openai/o3", False, "max_completion_tokens"),
    ("gpt-5", False, "max_completion_tokens"),
    ("gpt-5.1-mini", False, "max_completion_tokens"),
    ("gpt-5-chat-latest", True, "max_completion_tokens"),
    ("gpt-4o", True, "max_completion_tokens"),
    ("gpt-4.1-mini", True, "max_completion_tokens"),
    ("gpt-oss-20b", True, "max_tokens"),
    ("Qwen/Qwen3-8B", True, "max_tokens"),
    ("deepseek-reasoner", True, "max_tokens"),
    ("olmo-2", True, "max_tokens"),
])
def test_families(name: str, temperature: bool, limit_field: str) -> None:
    family = family_of(name)
    assert (family.temperature, family.limit_field) == (temperature, limit_field)
    assert family.docs and family in FAMILIES


def planner_request(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    with chat_server(DRAFT) as (url, seen):
        ctx = Context(base_url=url, out_dir=str(tmp_path / "out"), **fields)
        build_graph(tools=fake_tools()).compile().invoke({"prompt": "Kyoto"}, context=ctx)
    return seen[0]["body"]


def test_o_series_planner_gets_no_temperature_and_max_completion_tokens(tmp_path: Path) -> None:
    body = planner_request(tmp_path, model="o3-mini", max_tokens=4000)
    assert "temperature" not in body and "max_tokens" not in body
    assert body["max_completion_tokens"] == 4000


def test_gpt_4o_planner_keeps_its_temperature(tmp_path: Path) -> None:
    body = planner_request(tmp_path, model="gpt-4o", temperature=0.4, max_tokens=900)
    assert body["temperature"] == 0.4 and body["max_completion_tokens"] == 900


def test_a_local_model_gets_max_tokens(tmp_path: Path) -> None:
    body = planner_request(tmp_path, model="qwen3:8b", max_tokens=2048)
    assert body["max_tokens"] == 2048 and "max_completion_tokens" not in body
    assert body["temperature"] == 0.7


def test_unset_settings_send_nothing(tmp_path: Path) -> None:
    body = planner_request(tmp_path, model="qwen3:8b", temperature=-1.0)
    assert "temperature" not in body and "max_tokens" not in body
    assert "max_completion_tokens" not in body


def test_settings_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"LLMI_MAX_TOKENS": "512", "LLMI_JUDGE_TEMPERATURE": "-1",
                        "LLMI_JUDGE_MAX_TOKENS": "300", "LLMI_VISION_JUDGE_TEMPERATURE": "0.2",
                        "LLMI_VISION_JUDGE_MAX_TOKENS": "700"}.items():
        monkeypatch.setenv(name, value)
    ctx = Context()
    assert (ctx.max_tokens, ctx.judge_temperature, ctx.judge_max_tokens,
            ctx.vision_judge_temperature, ctx.vision_judge_max_tokens) == (512, -1.0, 300, 0.2, 700)


def test_each_judge_sends_its_own_settings(tmp_path: Path) -> None:
    with chat_server('{"text": 4, "image": 4}') as (url, seen):
        ctx = Context(base_url=url, judge_model="o4-mini", judge_max_tokens=300,
                      vision_judge_model="qwen2.5-vl", vision_judge_temperature=0.2,
                      vision_judge_max_tokens=700)
        judge_model(ctx).invoke("judge this")
        judge_model(ctx, vision=True).invoke("look at this")
    text, vision = (request["body"] for request in seen)
    assert "temperature" not in text and text["max_completion_tokens"] == 300
    assert vision["temperature"] == 0.2 and vision["max_tokens"] == 700


def test_candidates_of_an_o_series_model_differ_by_seed_only(tmp_path: Path) -> None:
    with chat_server(DRAFT) as (url, seen):
        ctx = Context(base_url=url, model="o3", candidates=3, keep=1,
                      out_dir=str(tmp_path / "out"))
        out = build_tts_graph(tools=fake_tools()).compile().invoke({"prompt": "Kyoto"}, context=ctx)
    plans = [r["body"] for r in seen if "<imgen>" in r["body"]["messages"][0]["content"]]
    assert len(plans) == 3 and all("temperature" not in r["body"] for r in seen)
    assert sorted(body["seed"] for body in plans) == [0, 1, 2]
    manifest = json.loads(Path(out["outputs"]["manifest"]).read_text())
    assert [c["sampling"]["temperature"] for c in manifest["candidates"]] == [None] * 3


def test_a_refused_temperature_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An Azure deployment's name does not say it serves o3-mini; OpenAI refuses 0.7.
    with chat_server(DRAFT, serves={"reports-prod": "o3-mini"}) as (url, _):
        monkeypatch.setenv("LLMI_MODEL", "reports-prod")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        code = main(["generate", "Kyoto", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    reason = [line for line in err.splitlines() if line.startswith("llmi:")]
    assert len(reason) == 1, err
    assert "refuses temperature" in reason[0] and "Only the default (1)" in reason[0]
    assert "LLMI_TEMPERATURE=-1" in reason[0] and "hint: change LLMI_TEMPERATURE" in err


def test_a_refused_token_limit_names_the_setting(tmp_path: Path) -> None:
    with chat_server('{"text": 4, "image": 4}', serves={"judge-prod": "o4-mini"}) as (url, _):
        ctx = Context(base_url=url, judge_model="judge-prod", judge_temperature=-1.0,
                      judge_max_tokens=500)
        scores, errors = Judge(llm=judge_model(ctx)).judge_text("Kyoto", DRAFT)
    assert scores == {"text": None, "image": None}
    assert "SettingRefused" in errors[0] and "max_tokens" in errors[0]
    assert "LLMI_JUDGE_MAX_TOKENS=0" in errors[0]


def test_a_refusal_while_streaming_names_the_setting() -> None:
    with chat_server(DRAFT, serves={"reports-prod": "gpt-5-mini"}) as (url, _):
        model = judge_model(Context(base_url=url, judge_model="reports-prod"))
        with pytest.raises(SettingRefused, match="LLMI_JUDGE_TEMPERATURE=-1"):
            list(model.stream("judge this"))


def test_the_chat_clients_verify_servers_with_one_tls_context() -> None:
    """Made once, as the HTTP library makes its default: certificates and host names checked."""
    tls = models._tls()
    assert tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname
    assert models._tls() is tls
