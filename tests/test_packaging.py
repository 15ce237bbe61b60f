"""The wheel installs as one namespace, ``llmi``, and its command runs."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)],
        check=True, cwd=tmp_path, timeout=300,
    )
    wheel = next(dist.glob("llmi-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.startswith("llmi-")} == {"llmi"}
    assert "llmi/cli/recorded/hopper_plan.md" in names
    assert {"llmi/graphs/document.py", "llmi/tools/chart_runner.py", "llmi/state/records.py"} <= set(names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The dependencies come from this interpreter's site-packages, so the test stays
    # offline. A path file adds them after the new venv's own; the path files among
    # them (this checkout's editable install) are not read, so llmi comes from the wheel.
    inner = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    outer = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(inner) / "outer-site-packages.pth").write_text("\n".join(sorted(outer)) + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, cwd=tmp_path, timeout=300)
    where = subprocess.run(
        [python, "-c", "import llmi.graphs.document, llmi.tools.code; print(llmi.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path, timeout=120,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir)
    help_text = subprocess.run([env_dir / "bin" / "llmi", "--help"], check=True,
                               capture_output=True, text=True, cwd=tmp_path, timeout=120).stdout
    assert "generate" in help_text


def test_no_generic_top_level_modules_are_importable_from_the_install() -> None:
    probe = "import importlib.util as u; print([m for m in ('tools','state','nodes','graphs') if u.find_spec(m)])"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           cwd=Path.home(), check=True).stdout.strip()
    assert found == "[]"
