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
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

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
    key = tuple(map(str, folders))
    known = _scans.get(key)
    if known is None or any(_change_time(folder) != time for folder, time in known[0].items()):
        known = _scans[key] = _scan(key)  # threads that scan at once store the same
    return known[1]


_scans: dict[tuple[str, ...], tuple[dict[str, int], str]] = {}
"""The last scan of each list of folders: every folder's change time, and the digest."""


def _scan(folders: Iterable[str]) -> tuple[dict[str, int], str]:
    times: dict[str, int] = {}
    files: list[str] = []
    for folder in folders:
        _scan_folder(folder, times, files)
    digest = hashlib.sha256("\n".join(sorted(files)).encode("utf-8", "surrogateescape"))
    return times, digest.hexdigest()[:FINGERPRINT_CHARS]


def _scan_folder(folder: str, times: dict[str, int], files: list[str]) -> None:
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
            files.append(f"{entry.path}\0{found.st_size}\0{found.st_mtime_ns}")


def _change_time(folder: str) -> int:
    try:
        return os.stat(folder).st_ctime_ns
    except OSError:
        return -1


def config_dir(root: Path, env: Mapping[str, str]) -> Path:
    """matplotlib's config folder under ``root`` for the fonts installed now."""
    return root / f"fonts-{fingerprint(font_folders(env))}"
