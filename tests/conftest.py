"""Shared fixtures: every test gets its own folders and a clean environment."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from llmi.context import Context, default_cache_dir

# Planner outputs and what the parser must make of them; kept here so a clone tests anywhere.
CORPUS = Path(__file__).resolve().parent / "corpus" / "planner"
# Every variable a Context field falls back to, so no setting of the developer's leaks in.
ENV_NAMES = sorted({f.metadata["env"] for f in fields(Context)})
# The fields whose default is a folder in the developer's cache (fixed when llmi was
# imported), each moved to the same place under the test's own folder.
CACHE = default_cache_dir()
CACHED_FOLDERS = {
    f.metadata["env"]: Path(f.metadata["default"]).relative_to(CACHE)
    for f in fields(Context)
    if isinstance(f.metadata["default"], str) and Path(f.metadata["default"]).is_relative_to(CACHE)
}
# Where the developer's settings would say which fonts, configuration and data to use,
# and whether commands run in a resident server.
DEVELOPER_SETTINGS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "XDG_RUNTIME_DIR",
                     "LLMI_SERVER", "LLMI_SERVER_IDLE")


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder of the test run's own, shared by its tests: matplotlib's font cache
    takes seconds to build."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                  tmp_path_factory: pytest.TempPathFactory, _session_cache: Path) -> None:
    for name in (*ENV_NAMES, *DEVELOPER_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    # Beside tmp_path, not in it: tests that look at tmp_path find only what they made.
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(_session_cache))
    for name, folder in CACHED_FOLDERS.items():
        monkeypatch.setenv(name, str(tmp_path / folder))
    # Charts run jailed where this machine allows a jail, else with process limits alone;
    # tests/test_chart_jail.py asks for the jail itself.
    monkeypatch.setenv("LLMI_CODE_SANDBOX", "process")


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(
        model="test-model",
        artifact_dir=str(tmp_path / "artifacts"),
        out_dir=str(tmp_path / "out"),
    )
