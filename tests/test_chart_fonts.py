"""The chart tool's font cache follows the installed fonts (``chart_fonts``)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
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
USER_FONTS = (".local", "share", "fonts")
"""The user's font folder under HOME (XDG_DATA_HOME's default)."""
REPORT_FONTS = """
import os
from matplotlib import font_manager
fonts = font_manager.fontManager.ttflist
ours = [(os.path.relpath(font.fname, {folder!r}), len(open(font.fname, "rb").read()))
        for font in fonts if font.name == {family!r}]
missing = [font.name for font in fonts if not os.path.exists(font.fname)]
raise RuntimeError("REPORT " + repr((ours, missing)))
"""
"""Chart code that reports where in ``folder`` the chart process found the family (a path
relative to it: error texts may lose absolute ones) and the size it read there, and the
fonts on its list whose files it cannot see."""


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


def fonts_of_a_chart(folder: Path, *, pool: bool, sandbox: str) -> list[tuple[str, int]]:
    """The test family's files in ``folder`` as a chart's process lists them; checks that
    every font on its list is there to open."""
    code = REPORT_FONTS.format(family=FAMILY, folder=str(folder))
    with pytest.raises(ToolError) as raised:
        run_chart(code, timeout_s=120, memory_mb=2048, pool=pool, sandbox=sandbox)
    last = str(raised.value).splitlines()[-1]
    assert last.startswith("RuntimeError: REPORT "), str(raised.value)
    ours, missing = ast.literal_eval(last.removeprefix("RuntimeError: REPORT "))
    assert missing == []
    return ours


@pytest.fixture(scope="module")
def built_font_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """matplotlib's own font list, built for a HOME without fonts, as a user's cache
    folder holds it after a first ``import matplotlib``."""
    home, cache = tmp_path_factory.mktemp("fontless-home"), tmp_path_factory.mktemp("mpl")
    subprocess.run([sys.executable, "-I", "-c", "import matplotlib.font_manager"],
                   env={"PATH": os.environ["PATH"], "HOME": str(home), "MPLCONFIGDIR": str(cache)},
                   check=True, timeout=120)
    [font_list] = cache.glob("fontlist-v*.json")
    return font_list


def users_font_list(built: Path, name: str | None = None,
                    change: Callable[[dict], object] | None = None) -> Path:
    """``built`` in the user's matplotlib cache folder (XDG_CACHE_HOME's), under ``name``
    if given, with ``change`` applied to its JSON if given."""
    cache = Path(os.environ["XDG_CACHE_HOME"], "matplotlib")
    cache.mkdir(parents=True)
    path = cache / (name or built.name)
    if change is None:
        path.write_bytes(built.read_bytes())
    else:
        listed = json.loads(built.read_bytes())
        change(listed)
        path.write_text(json.dumps(listed, indent=2))
    return path


def fresh_llmi_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run: llmi's cache folder, and matplotlib's under it, are not there yet."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_first_run_takes_the_users_font_list(
    built_font_list: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh_llmi_cache(tmp_path, monkeypatch)
    users = users_font_list(built_font_list)
    for jail in (False, True):  # the jail hides HOME's fonts; there are none here
        config = Path(_child_env(jail)["MPLCONFIGDIR"])
        assert config.is_relative_to(tmp_path / "cache" / "llmi")
        assert config.joinpath(users.name).read_bytes() == users.read_bytes()


@pytest.mark.slow
def test_a_chart_draws_with_the_users_font_list_without_building_one(
    built_font_list: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh_llmi_cache(tmp_path, monkeypatch)
    users = users_font_list(built_font_list)
    copied = Path(_child_env(False)["MPLCONFIGDIR"], users.name)
    written = copied.stat().st_mtime_ns
    run_chart("plt.plot([1, 2])", timeout_s=120, memory_mb=2048, pool=False, sandbox="off")
    assert copied.stat().st_mtime_ns == written
    assert copied.read_bytes() == users.read_bytes()


def drop_a_font(listed: dict) -> None:
    first = listed["ttflist"][0]["fname"]
    listed["ttflist"] = [font for font in listed["ttflist"] if font["fname"] != first]


def add_a_missing_font(listed: dict) -> None:
    listed["ttflist"].append(dict(listed["ttflist"][0], fname="/nonexistent/Gone.ttf"))


def another_version(listed: dict) -> None:
    listed["_version"] = "330"


@pytest.mark.parametrize(("name", "change"), [
    (None, drop_a_font), (None, add_a_missing_font), (None, another_version),
    ("fontlist-v330.json", None),
], ids=["a font missing", "a font gone", "another version inside", "another version's file"])
def test_a_users_font_list_of_other_fonts_or_another_version_is_not_taken(
    built_font_list: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str | None,
    change: Callable[[dict], object] | None,
) -> None:
    fresh_llmi_cache(tmp_path, monkeypatch)
    users_font_list(built_font_list, name, change)
    config = Path(_child_env(False)["MPLCONFIGDIR"])
    assert not config.joinpath(built_font_list.name).exists()


def test_a_users_font_list_older_than_a_font_it_lists_is_not_taken(
    built_font_list: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh_llmi_cache(tmp_path, monkeypatch)
    system = tmp_path / "system-fonts"
    monkeypatch.setattr(chart_fonts, "SYSTEM_FONT_FOLDERS",
                        (*chart_fonts.SYSTEM_FONT_FOLDERS, str(system)))
    font = install_font(system)
    users = users_font_list(built_font_list, change=lambda listed: listed["ttflist"].append(
        dict(listed["ttflist"][0], fname=str(font))))
    changed = font.stat().st_mtime_ns
    os.utime(users, ns=(changed - 10**9,) * 2)  # the font was written over since
    assert not Path(_child_env(False)["MPLCONFIGDIR"], users.name).exists()
    os.utime(users, ns=(changed + 10**9,) * 2)
    assert Path(_child_env(False)["MPLCONFIGDIR"], users.name).exists()


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


def test_a_new_font_names_a_new_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    system = tmp_path / "system-fonts"
    monkeypatch.setattr(chart_fonts, "SYSTEM_FONT_FOLDERS",
                        (*chart_fonts.SYSTEM_FONT_FOLDERS, str(system)))
    unjailed, jailed = _child_env(False)["MPLCONFIGDIR"], _child_env(True)["MPLCONFIGDIR"]
    install_font(Path.home().joinpath(*USER_FONTS))
    assert _child_env(False)["MPLCONFIGDIR"] != unjailed
    # The jail hides the user's fonts: its font list stays as it was.
    assert _child_env(True)["MPLCONFIGDIR"] == jailed
    install_font(system)
    assert _child_env(True)["MPLCONFIGDIR"] != jailed
    assert Path(_child_env(True)["MPLCONFIGDIR"]).parent == Path(jailed).parent


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
def test_a_font_installed_after_a_chart_is_drawn_by_the_next(pool: bool) -> None:
    fonts = Path.home().joinpath(*USER_FONTS)
    assert fonts_of_a_chart(fonts, pool=pool, sandbox="off") == []
    font = install_font(fonts)
    assert fonts_of_a_chart(fonts, pool=pool, sandbox="off") == [(font.name, font.stat().st_size)]


@pytest.mark.slow
@pytest.mark.parametrize("pool", [True, False], ids=["warm", "cold"])
def test_a_jailed_chart_lists_only_fonts_it_can_open(pool: bool) -> None:
    if chart_jail.jail_problem():
        pytest.skip(f"no jail here: {chart_jail.jail_problem()}")
    fonts = Path.home().joinpath(*USER_FONTS)
    install_font(fonts)
    assert fonts_of_a_chart(fonts, pool=pool, sandbox="strict") == []
