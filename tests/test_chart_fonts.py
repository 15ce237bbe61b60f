"""The chart tool's font cache follows the installed fonts (``chart_fonts``)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import matplotlib
import pytest
from fontTools.ttLib import TTFont

from llmi.context import Context
from llmi.tools import chart_fonts, chart_jail
from llmi.tools.base import ToolError
from llmi.tools.code import _child_env, run_chart

BUNDLED = Path(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
FAMILY = "Llmi Test Sans"
LISTED = """
import os
from matplotlib import font_manager
paths = [font.fname for font in font_manager.fontManager.ttflist if font.name == {family!r}]
found = [(os.path.relpath(path, {folder!r}), len(open(path, "rb").read())) for path in paths]
raise RuntimeError("REPORT " + repr(found))
"""
"""Chart code that reports where in ``folder`` the chart process found the family (a path
relative to it: error texts may lose absolute ones), and that it can read the file."""


def install_font(folder: Path, family: str = FAMILY) -> Path:
    """matplotlib's DejaVu Sans under another family name, as a new font file in ``folder``."""
    font = TTFont(BUNDLED)
    for record in font["name"].names:
        if record.nameID in (1, 4, 16):
            record.string = family
        elif record.nameID == 6:
            record.string = family.replace(" ", "")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{family.replace(' ', '')}.ttf"
    font.save(path)
    return path


def listed(folder: Path, *, pool: bool, sandbox: str) -> list[tuple[str, int]]:
    code = LISTED.format(family=FAMILY, folder=str(folder))
    with pytest.raises(ToolError) as raised:
        run_chart(code, timeout_s=120, memory_mb=2048, pool=pool, sandbox=sandbox)
    last = str(raised.value).splitlines()[-1]
    assert last.startswith("RuntimeError: REPORT "), str(raised.value)
    return ast.literal_eval(last.removeprefix("RuntimeError: REPORT "))


def test_the_fingerprint_follows_the_font_files(tmp_path: Path) -> None:
    fonts = tmp_path / "fonts"  # not there yet
    before = chart_fonts.fingerprint([fonts])
    (fonts / "family" / "style").mkdir(parents=True)
    (fonts / "family" / "README").write_text("not a font")
    assert chart_fonts.fingerprint([fonts]) == before
    font = install_font(fonts / "family" / "style")  # only this subfolder changes
    added = chart_fonts.fingerprint([fonts])
    assert added != before
    assert chart_fonts.fingerprint([fonts]) == added
    font.rename(font.with_name("Renamed.ttf"))
    assert chart_fonts.fingerprint([fonts]) not in {before, added}
    font.with_name("Renamed.ttf").unlink()
    assert chart_fonts.fingerprint([fonts]) == before


def test_a_font_in_the_users_folders_names_a_new_config_folder(tmp_path: Path) -> None:
    before = _child_env(False)["MPLCONFIGDIR"]
    install_font(Path.home() / ".fonts")
    after = _child_env(False)["MPLCONFIGDIR"]
    assert after != before
    assert Path(after).parent == Path(before).parent


def test_the_tests_have_a_home_and_cache_of_their_own(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ours = tmp_path_factory.getbasetemp()
    assert Path.home().is_relative_to(ours)
    assert Path(_child_env(False)["MPLCONFIGDIR"]).is_relative_to(ours)
    assert Path(Context().artifact_dir).is_relative_to(ours)
    assert "XDG_DATA_HOME" not in os.environ


@pytest.mark.slow
@pytest.mark.parametrize("pool", [True, False], ids=["warm", "cold"])
@pytest.mark.parametrize("sandbox", ["off", "strict"])
def test_a_font_installed_after_a_chart_is_seen_by_the_next(pool: bool, sandbox: str) -> None:
    if sandbox == "strict" and not chart_jail.jail_available():
        pytest.skip(f"no jail here: {chart_jail.jail_problem()}")
    fonts = Path.home() / ".local" / "share" / "fonts"
    assert listed(fonts, pool=pool, sandbox=sandbox) == []
    font = install_font(fonts)
    assert listed(fonts, pool=pool, sandbox=sandbox) == [(font.name, font.stat().st_size)]
