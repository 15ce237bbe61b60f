"""What a user is told when a run stops for a reason outside llmi: one reason, one hint.

Errors of llmi's own that stop a run carry their reason and hint (``llmi.errors.LlmiError``),
as ``ModelServerError`` does for a model server that is down, refuses or is out of quota.
The errors of the files a run writes do not: a full disk, a folder without write
permission, a read-only disk, a path with a file where a folder should be, and the
checkpoint store's SQLite refusing a write. ``explain`` words those, naming the setting
that decides where the file goes.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from llmi.checkpoints import describe, is_postgres, sqlite_path
from llmi.context import Context, env_name

OUT = "--out"
"""The setting of the document's folder as a user gives it (``LLMI_OUT`` by default)."""
_WHERE = f"check where llmi writes: {OUT}, {env_name('artifact_dir')} and " \
    f"{env_name('checkpoint_url')}"
STORAGE_ERRORS = (OSError, sqlite3.Error)
"""What writing the document, the artifact store, the tool cache or the checkpoints raises."""

_FULL = "free some space on that disk"
_WRITABLE = "make that folder writable for this user"
_CHECK = "check the path"
_FILE_ERRORS = {
    errno.ENOSPC: ("no space left on the disk of {path}", _FULL),
    errno.EDQUOT: ("the disk quota is used up for {path}", _FULL),
    errno.EACCES: ("no permission to write {path}", _WRITABLE),
    errno.EPERM: ("no permission to write {path}", _WRITABLE),
    errno.EROFS: ("{path} is on a read-only disk", "make that disk writable"),
    errno.ENOTDIR: ("a part of {path} is a file, not a folder", _CHECK),
    errno.EEXIST: ("{path} is a file, not a folder", _CHECK),
    errno.EISDIR: ("{path} is a folder, not a file", _CHECK),
    errno.ENOENT: ("{path} does not exist", _CHECK),
}
"""Errors of writing a file: what the user is told, and the fix."""


@dataclass(frozen=True)
class Failure:
    """What the user is told: the ``llmi:`` line and the hint."""

    reason: str
    hint: str


def explain(exc: Exception, ctx: Context, *, run: str | None = None) -> Failure:
    """The reason and hint for ``exc``, a file or checkpoint write that failed (one of
    ``STORAGE_ERRORS``) in the run ``ctx`` configures; with ``run``, the ID of a run that
    stopped, the hint says how to continue it."""
    if isinstance(exc, OSError):
        reason, fix, setting = _file(exc, ctx)
    else:
        reason, fix, setting = _checkpoints(exc, ctx)
    if run is not None:
        hint = f"{fix}, then continue the run with `llmi resume {run}`"
        if setting == OUT:
            hint += f" (or `llmi resume {run} --out DIR` to write it elsewhere)"
    else:
        hint = f"{fix}, or write elsewhere ({setting})" if setting else fix
    return Failure(reason, hint)


def _file(exc: OSError, ctx: Context) -> tuple[str, str, str]:
    """What went wrong, the fix, and the setting that decides where the file goes."""
    said = exc.strerror or str(exc)
    if exc.filename is None:  # llmi's own writes name their file: not one of them
        return said, _WHERE, ""
    path = str(exc.filename)
    setting = _setting_for(path, ctx)
    if exc.errno not in _FILE_ERRORS:
        return f"cannot write {path}: {said}", _CHECK, setting
    reason, fix = _FILE_ERRORS[exc.errno]
    return reason.format(path=path), fix, setting


def _checkpoints(exc: Exception, ctx: Context) -> tuple[str, str, str]:
    """For an error of SQLite (``sqlite3.Error``): the checkpoints are llmi's only database."""
    store = f"the checkpoint file {describe(ctx.checkpoint_url)}"  # SQLite's: see checkpoints
    code = getattr(exc, "sqlite_errorname", "")
    setting = env_name("checkpoint_url")
    if code == "SQLITE_FULL":
        return f"no space left on the disk of {store}", _FULL, setting
    if code.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN")):
        return (f"{store} cannot be written ({exc})",
                "make it and its folder writable for this user", setting)
    return f"{store} failed: {exc}", "check the file", setting


def _setting_for(filename: str, ctx: Context) -> str:
    """The setting that decides where ``filename`` goes, or "" when none does."""
    path = Path(filename).expanduser().resolve()
    places = [(ctx.out_dir, OUT),
              (ctx.artifact_dir, env_name("artifact_dir"))]
    if not is_postgres(ctx.checkpoint_url):
        places.append((str(sqlite_path(ctx.checkpoint_url)), env_name("checkpoint_url")))
    for place, setting in places:
        folder = Path(place).expanduser().resolve()
        if path == folder or path.is_relative_to(folder) or folder.is_relative_to(path):
            return setting
    return ""
