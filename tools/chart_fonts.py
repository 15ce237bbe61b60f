"""The fonts charts see, and the font cache that follows them.

matplotlib lists the installed fonts once, in ``fontlist-v<N>.json`` of its config folder,
and builds that list again only when the file is missing or of another version: a font
installed later would never be used. llmi gives each set of installed fonts a config
folder of its own, named by a fingerprint of the font files matplotlib finds (their
paths, sizes and modification times), so that a font added, removed or renamed makes a
new folder, whose list matplotlib builds afresh (a few seconds, once; the folders of
earlier sets stay, tens of kilobytes each). The zygote's key holds the config folder, so
a new zygote starts that sees the new font.

The fingerprint covers matplotlib's own font folders, fontconfig's default ones among them;
a font that only a custom fontconfig configuration adds elsewhere is listed by matplotlib
but does not refresh the cache when it changes. A jailed chart sees the system's fonts
only: the user's own font folders are in HOME, which the jail hides.

A new folder starts with the user's own font list (matplotlib's cache folder for the user's
environment) when that lists exactly the fonts the folder is for, so that the first run
need not build it; a list of another version, or of other fonts, is left alone.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".afm")
"""What matplotlib takes for a font file (``font_manager.get_fontext_synonyms``)."""
SYSTEM_FONT_FOLDERS = (
    "/usr/X11R6/lib/X11/fonts/TTF/", "/usr/X11/lib/X11/fonts", "/usr/share/fonts/",
    "/usr/local/share/fonts/", "/usr/lib/openoffice/share/fonts/truetype/",
)
"""``font_manager.X11FontDirectories`` but the user's own."""
MACOS_FONT_FOLDERS = (
    "/Library/Fonts/", "/Network/Library/Fonts/", "/System/Library/Fonts/",
    "/opt/local/share/fonts",
)
"""``font_manager.OSXFontDirectories`` but the user's own."""
FINGERPRINT_CHARS = 16
BUNDLED_FONT_FOLDERS = ("ttf", "afm", "pdfcorefonts")
"""The folders of matplotlib's own fonts under ``mpl-data/fonts``, which every list holds."""
FONT_LIST_VERSION = re.compile(r"^class FontManager\b.*?^    __version__ = '([^']+)'",
                               re.MULTILINE | re.DOTALL)


def user_font_folders(env: Mapping[str, str]) -> list[Path]:
    """The user's font folders that matplotlib searches, and fontconfig by default, for
    ``env``'s HOME and XDG_DATA_HOME; none without them (a jailed chart's environment)."""
    home = env.get("HOME")
    data = env.get("XDG_DATA_HOME") or (home and os.path.join(home, ".local", "share"))
    folders = [Path(data, "fonts")] if data else []
    if home:
        folders.append(Path(home, ".fonts"))
        if sys.platform == "darwin":
            folders.append(Path(home, "Library", "Fonts"))
    return folders


def font_folders(env: Mapping[str, str]) -> list[Path]:
    """Every folder matplotlib searches for fonts when it builds its list."""
    system = [*SYSTEM_FONT_FOLDERS, *(MACOS_FONT_FOLDERS if sys.platform == "darwin" else ())]
    return [*map(Path, system), *user_font_folders(env)]


def fingerprint(folders: Iterable[Path]) -> str:
    """A digest of the font files under ``folders``: their paths, sizes and modification
    times, found as matplotlib finds them (``font_manager.list_fonts``).

    A folder's change time moves whenever a file in it is added, removed or renamed, and
    cannot be set back; while no folder's has moved since the last scan, its digest
    stands, and a call costs one ``stat`` per folder. A font file overwritten in place,
    its folder unchanged, goes unseen until another change, as in fontconfig's own cache.
    """
    return _scanned(folders).digest


class _Scan(NamedTuple):
    times: dict[str, int]
    """Every folder's change time."""
    files: dict[str, tuple[int, int]]
    """Every font file's size and modification time (ns)."""
    digest: str


def _scanned(folders: Iterable[Path]) -> _Scan:
    key = tuple(map(str, folders))
    known = _scans.get(key)
    if known is None or any(_change_time(folder) != time for folder, time in known.times.items()):
        known = _scans[key] = _scan(key)  # threads that scan at once store the same
    return known


_scans: dict[tuple[str, ...], _Scan] = {}
"""The last scan of each list of folders."""


def _scan(folders: Iterable[str]) -> _Scan:
    times: dict[str, int] = {}
    files: dict[str, tuple[int, int]] = {}
    for folder in folders:
        _scan_folder(folder, times, files)
    lines = sorted(f"{path}\0{size}\0{mtime}" for path, (size, mtime) in files.items())
    digest = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape"))
    return _Scan(times, files, digest.hexdigest()[:FINGERPRINT_CHARS])


def _scan_folder(folder: str, times: dict[str, int], files: dict[str, tuple[int, int]]) -> None:
    """Record ``folder``'s change time, then its font files and subfolders, as
    ``os.walk`` finds them: links to folders are not followed."""
    times[folder] = _change_time(folder)  # before the listing: a change during it shows next time
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir():
            if not entry.is_symlink():
                _scan_folder(entry.path, times, files)
        elif entry.name.lower().endswith(FONT_SUFFIXES):
            try:
                found = entry.stat()
            except OSError:  # a broken link: matplotlib leaves it out too
                continue
            files[entry.path] = (found.st_size, found.st_mtime_ns)


def _change_time(folder: str) -> int:
    try:
        return os.stat(folder).st_ctime_ns
    except OSError:
        return -1


def config_dir(root: Path, env: Mapping[str, str],
               user_env: Mapping[str, str] | None = None) -> Path:
    """matplotlib's config folder under ``root`` for the fonts installed now. Without a
    font list yet, it gets the user's own (matplotlib's for ``user_env``) when that lists
    the same fonts."""
    folders = font_folders(env)
    config = root / f"fonts-{fingerprint(folders)}"
    if user_env is not None and config not in _listed:
        if copy_font_list(user_cache_dir(user_env), config, folders):
            _listed.add(config)
    return config


_listed: set[Path] = set()
"""Config folders known to have their font list."""


def user_cache_dir(env: Mapping[str, str]) -> Path:
    """matplotlib's cache folder for ``env`` (``matplotlib.get_cachedir``)."""
    if env.get("MPLCONFIGDIR"):
        return Path(env["MPLCONFIGDIR"])
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if sys.platform.startswith(("linux", "freebsd")):
        return Path(env.get("XDG_CACHE_HOME") or home / ".cache", "matplotlib")
    return home / ".matplotlib"


def copy_font_list(source: Path, config: Path, folders: Iterable[Path]) -> bool:
    """Give ``config`` the font list of ``source``, a matplotlib cache folder, when it has
    none and ``source``'s lists the fonts of ``folders`` and matplotlib's own; returns
    whether ``config`` has a list now.

    The list is taken as matplotlib takes it, by the version in its name and inside, and
    only when it holds every font file found, no other, and no installed font changed
    since it was written. The copy is whole or absent, even with another llmi copying at
    once."""
    version = font_list_version()
    if version is None:
        return False
    name = f"fontlist-v{version}.json"
    if (config / name).exists():
        return True
    try:
        raw = (source / name).read_bytes()
        written = (source / name).stat().st_mtime_ns
        listed = json.loads(raw)
    except (OSError, ValueError):
        return False
    if not _lists_fonts(listed, version, folders, written):
        return False
    try:
        config.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=config, prefix=f".{name}.") as copy:
            copy.write(raw)
            copy.flush()
            os.link(copy.name, config / name)
    except FileExistsError:  # another llmi's copy, or matplotlib's own list, came first
        return True
    except OSError:
        return False
    return True


def _lists_fonts(listed: Any, version: str, folders: Iterable[Path], written: int) -> bool:
    data = _matplotlib_data()
    if data is None or not isinstance(listed, dict) or listed.get("_version") != version:
        return False
    try:
        # Relative names are of matplotlib's own fonts, as ``font_manager.json_load`` reads them.
        names = {os.path.join(data, font["fname"])
                 for kind in ("ttflist", "afmlist") for font in listed[kind]}
    except (KeyError, TypeError):
        return False
    bundled = _scanned([Path(data, "fonts", folder) for folder in BUNDLED_FONT_FOLDERS]).files
    installed = _scanned(folders).files
    # matplotlib's own fonts are as old as its install, which may be newer than a list it
    # shares with every other install of the same version.
    return (names == {*bundled, *installed}
            and all(mtime <= written for _, mtime in installed.values()))


def _matplotlib_data() -> str | None:
    package = _matplotlib_folder()
    return os.path.join(package, "mpl-data") if package else None


@functools.cache
def font_list_version() -> str | None:
    """The version matplotlib gives its font list (``FontManager.__version__``), read
    from its source: importing it would load a font list into this process."""
    package = _matplotlib_folder()
    try:
        source = Path(package, "font_manager.py").read_text(encoding="utf-8") if package else ""
    except OSError:
        return None
    found = FONT_LIST_VERSION.search(source)
    return found[1] if found else None


def _matplotlib_folder() -> str | None:
    spec = importlib.util.find_spec("matplotlib")  # found, not imported
    locations = spec.submodule_search_locations if spec else None
    return locations[0] if locations else None
