"""Shared fixtures: every test gets its own folders and a clean environment."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from llmi.context import Context

# Planner outputs and what the parser must make of them; kept here so a clone tests anywhere.
CORPUS = Path(__file__).resolve().parent / "corpus" / "planner"
# Every variable a Context field falls back to, so no setting of the developer's leaks in.
ENV_NAMES = sorted({f.metadata["env"] for f in fields(Context)})


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    # Charts run jailed where this machine allows a jail, else with process limits alone;
    # tests/test_chart_jail.py asks for the jail itself.
    monkeypatch.setenv("LLMI_CODE_SANDBOX", "process")
    monkeypatch.setenv("LLMI_ARTIFACTS", str(tmp_path / "artifacts"))


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(
        model="test-model",
        artifact_dir=str(tmp_path / "artifacts"),
        out_dir=str(tmp_path / "out"),
    )
