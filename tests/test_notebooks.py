"""The notebooks run in a real kernel, offline, and do what they say; the repository keeps them clean."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def printed(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed to stdout, in order."""
    return "".join(
        output.get("text", "")
        for cell in nb.cells if cell.cell_type == "code"
        for output in cell.outputs if output.get("name") == "stdout"
    )


def check_quickstart(nb: nbformat.NotebookNode, folder: Path) -> None:
    manifest = json.loads((folder / "llmi-out" / "quickstart" / "manifest.json").read_text())
    assert manifest["stats"]["code"] == {"total": 2, "success": 2}
    repaired = [s for s in manifest["slots"] if s["source"] == "code" and s["attempts"] > 1]
    assert len(repaired) == 1 and repaired[0]["ok"]
    text = printed(nb)
    assert "recorded model replies" in text
    assert "node finished: assembler" in text and "code      finished" in text


def check_swapping_a_node(nb: nbformat.NotebookNode, folder: Path) -> None:
    out = folder / "llmi-out" / "swapping"
    assert "A chart of squares:" in (out / "fixed" / "document.md").read_text()
    manifest = json.loads((out / "structured" / "manifest.json").read_text())
    assert [(s["source"], s["ok"]) for s in manifest["slots"]] == [("code", True), ("map", False)]
    assert "unknown source 'map'" in manifest["slots"][1]["error"]
    assert (out / "structured" / manifest["slots"][0]["image"]["path"]).is_file()
    assert (out / "structured" / "outline.txt").read_text().splitlines() == [
        "# Kyoto in early April", "  [image 0: code, ok]", "  [image 1: map, failed]",
        "Walk the Philosopher's Path early, before the crowds."]


def check_test_time_scaling(nb: nbformat.NotebookNode, folder: Path) -> None:
    manifest = json.loads((folder / "llmi-out" / "tts" / "manifest.json").read_text())
    assert manifest["winner"] == "c3"
    assert {c["id"]: c["pruned"] for c in manifest["candidates"]} == {
        "c0": True, "c1": False, "c2": True, "c3": False}
    assert manifest["stats"]["code"] == {"total": 1, "success": 1}
    assert "winner: c3" in printed(nb)
    assert "Plan 3: EV sales in 2024" in (folder / "llmi-out" / "tts" / "document.md").read_text()


CHECKS: dict[str, Callable[[nbformat.NotebookNode, Path], None]] = {
    "quickstart": check_quickstart,
    "swapping_a_node": check_swapping_a_node,
    "test_time_scaling": check_test_time_scaling,
}


def test_every_notebook_is_checked() -> None:
    assert sorted(CHECKS) == [path.stem for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    """Runs in a fresh kernel whose working folder is a temporary one, then checks what it made."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    CHECKS[path.stem](nb, tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_carry_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for number, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {number} has outputs"
