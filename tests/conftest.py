"""Shared fixtures: every test gets its own folders and a clean environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmi.context import Context

# Planner outputs and what the parser must make of them; kept here so a clone tests anywhere.
CORPUS = Path(__file__).resolve().parent / "corpus" / "planner"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [
        "LLMI_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "LLMI_SEARCH", "LLMI_DIFFUSION",
        "LLMI_EDIT", "LLMI_ARTIFACTS", "LLMI_OUT", "LLMI_MAX_IMAGES", "LLMI_REPAIR_ROUNDS",
        "TAVILY_API_KEY", "LLMI_TAVILY_BASE_URL", "LLMI_IMAGE_LIBRARY", "LLMI_ALLOW_PRIVATE_HOSTS",
        "LLMI_IMAGES_BASE_URL", "LLMI_IMAGE_SIZE", "LLMI_EDIT_SIZE", "LLMI_SEED", "LLMI_DEVICE",
        "LLMI_DIFFUSION_STEPS", "LLMI_DIFFUSION_GUIDANCE", "LLMI_SEARCH_CANDIDATES",
    ]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMI_ARTIFACTS", str(tmp_path / "artifacts"))


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(
        model="test-model",
        artifact_dir=str(tmp_path / "artifacts"),
        out_dir=str(tmp_path / "out"),
    )
