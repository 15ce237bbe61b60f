"""The layout: each top-level folder is one layer, and imports run one way.

state <- the kernel (llmi/) <- tools <- nodes <- graphs <- the entry points (cli/,
evaluation/). A layer imports only itself and the layers before it; ``llmi.rewards`` is
the one alias, kept where trainers import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "state": "llmi.state",
    "llmi": "llmi",
    "tools": "llmi.tools",
    "nodes": "llmi.nodes",
    "graphs": "llmi.graphs",
    "evaluation": "llmi.evaluation",
    "cli": "llmi.cli",
}
ORDER = list(LAYERS)
ALIASES = {ROOT / "llmi" / "rewards.py"}


def layer_of(module: str) -> str:
    """The folder a module ``llmi.x.y`` lives in."""
    for folder, package in sorted(LAYERS.items(), key=lambda item: -len(item[1])):
        if module == package or module.startswith(package + "."):
            return folder
    raise AssertionError(f"{module} is in no layer")


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names
                                      if node.module == "llmi"}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] == "llmi"}


SOURCES = [(folder, path) for folder in LAYERS for path in sorted((ROOT / folder).rglob("*.py"))
           if path not in ALIASES]


@pytest.mark.parametrize(("folder", "path"), SOURCES,
                         ids=[str(path.relative_to(ROOT)) for _, path in SOURCES])
def test_imports_run_one_way(folder: str, path: Path) -> None:
    allowed = ORDER[: ORDER.index(folder) + 1]
    wrong = {name for name in imported(path) if name != "llmi" and layer_of(name) not in allowed}
    assert wrong == set(), f"{path.relative_to(ROOT)} imports from a later layer"


def test_every_module_in_nodes_is_wired_into_a_graph() -> None:
    wired = set().union(*(imported(path) for path in (ROOT / "graphs").glob("*.py")))
    nodes = {f"llmi.nodes.{path.stem}" for path in (ROOT / "nodes").glob("*")
             if path.name != "__init__.py"
             and (path.suffix == ".py" or (path / "__init__.py").exists())}
    assert nodes <= wired, f"not wired into a graph: {sorted(nodes - wired)}"
