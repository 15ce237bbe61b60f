"""The fonts charts see, and the font cache that follows them.

matplotlib lists the installed fonts once, in ``fontlist-v<N>.json`` of its config folder,
and builds that list again only when the file is missing or of another version: a font
installed later would never be used. llmi gives each set of installed fonts a config
folder of its own, named by a fingerprint of the font files matplotlib finds (their
paths, sizes and modification times), so that a font added, removed or replaced makes a
new folder, whose list matplotlib builds afresh. The zygote's key holds the config
folder, so a new zygote starts that sees the new font.

The fingerprint covers matplotlib's own font folders, fontconfig's default ones among them;
a font that only a custom fontconfig configuration adds elsewhere is listed by matplotlib
but does not refresh the cache when it changes.
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
    ``env``'s HOME and XDG_DATA_HOME (a jailed chart has only the latter)."""
    home = env.get("HOME")
    data = data_home(env)
    folders = [Path(data["XDG_DATA_HOME"], "fonts")] if data else []
    if home:
        folders.append(Path(home, ".fonts"))
        if sys.platform == "darwin":
            folders.append(Path(home, "Library", "Fonts"))
    return folders


def data_home(env: Mapping[str, str]) -> dict[str, str]:
    """``XDG_DATA_HOME`` of ``env`` spelled out, so that it still names the user's data
    folder where HOME is another (a jailed chart's is its job's folder)."""
    home = env.get("HOME")
    data = env.get("XDG_DATA_HOME") or (home and os.path.join(home, ".local", "share"))
    return {"XDG_DATA_HOME": data} if data else {}


def font_folders(env: Mapping[str, str]) -> list[Path]:
    """Every folder matplotlib searches for fonts when it builds its list."""
    system = [*SYSTEM_FONT_FOLDERS, *(MACOS_FONT_FOLDERS if sys.platform == "darwin" else ())]
    return [*map(Path, system), *user_font_folders(env)]


def fingerprint(folders: Iterable[Path]) -> str:
    """A digest of the font files under ``folders``: their paths, sizes and modification
    times, found as matplotlib finds them (``font_manager.list_fonts``)."""
    files = []
    for folder in folders:
        for parent, _, names in os.walk(folder):
            for name in names:
                if name.lower().endswith(FONT_SUFFIXES):
                    path = os.path.join(parent, name)
                    try:
                        found = os.stat(path)
                    except OSError:  # a broken link: matplotlib leaves it out too
                        continue
                    files.append(f"{path}\0{found.st_size}\0{found.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(sorted(files)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def config_dir(root: Path, env: Mapping[str, str]) -> Path:
    """matplotlib's config folder under ``root`` for the fonts installed now."""
    return root / f"fonts-{fingerprint(font_folders(env))}"
