"""The benchmark suite runs end to end and records what it measured (figures unchecked:
speed is for ``python -m bench`` to report, not for the tests to assert)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_benchmark_runs_quick_and_is_recorded(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=590,
    )
    # 0: every target met, 1: one missed on this machine; 2 would be a benchmark that broke.
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    heading = re.search(r"^## [\d-]+ [\d:]+: (.+) \(quick\)$", text, re.MULTILINE)
    assert heading and "\nMachine: " in text
    names = heading[1].split(", ")
    assert "overhead" in names and "consistency" in names and len(names) == 11
    sections = re.split(r"^### .+ \(`bench/(\w+)\.py`\)$", text, flags=re.MULTILINE)
    tables = dict(zip(sections[1::2], sections[2::2]))
    assert list(tables) == names
    for name, section in tables.items():
        assert "| --- |" in section, f"{name} has no table"
        assert "Target" in section or name == "memory", f"{name} states no target"


def test_an_unknown_benchmark_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "nonesuch", "--no-record"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no benchmark named nonesuch" in done.stderr
