"""Where the CLI checkpoints its runs, and what it remembers to resume one.

``LLMI_CHECKPOINT_URL`` picks the store:

- ``postgresql://user:password@host:port/db`` (or ``postgres://``): PostgreSQL, through
  ``langgraph-checkpoint-postgres`` (``pip install 'llmi[postgres]'``); its tables are
  created on first use. Many machines can share it.
- ``sqlite:///path/to/file.sqlite`` (everything after ``sqlite://`` is the path) or a
  plain path: a SQLite file.
- empty: ``checkpoints.sqlite`` in the cache folder (``$XDG_CACHE_HOME/llmi``).

A run is a LangGraph thread; the prompt and everything it has done are in its
checkpoints. The CLI keeps the settings a run started with in their metadata
(``llmi.cli.runs``).

SQLite writes ahead (WAL) and hands each commit to the operating system without waiting for
the disk (``synchronous=NORMAL``): a run that is killed keeps every checkpoint it wrote; a
crash of the machine itself may take the last few back (the file stays whole, and the run
resumes a few steps earlier), as it may take the artifact files, which are not flushed
either. Waiting for the disk at each of the dozen commits of a document was most of what
checkpointing it cost.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llmi.context import default_cache_dir, env_name
from llmi.errors import LlmiError, first_line

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
    from langgraph.checkpoint.sqlite import SqliteSaver

POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 10
"""Seconds to wait for the PostgreSQL server, unless the URL sets ``connect_timeout``."""


class CheckpointStoreError(LlmiError):
    """The checkpoint store cannot be opened; ``hint`` says what to do."""


def is_postgres(url: str | None) -> bool:
    return urlsplit(url or "").scheme in POSTGRES_SCHEMES


def sqlite_path(url: str | None) -> Path:
    """The SQLite file a (non-PostgreSQL) checkpoint URL names."""
    if not url:
        return default_cache_dir() / "checkpoints.sqlite"
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    if not path:
        raise CheckpointStoreError(f"the checkpoint URL {url!r} names no file",
                                   f"set {env_name('checkpoint_url')} to sqlite:///path/to/file")
    return Path(path).expanduser()


def describe(url: str | None) -> str:
    """The store, for messages: never the user name or password of a URL."""
    if is_postgres(url):
        parts = urlsplit(url or "")
        host = parts.netloc.rpartition("@")[2]
        return f"PostgreSQL at {host}{parts.path}"
    return str(sqlite_path(url))


@contextmanager
def open_checkpointer(url: str | None) -> Iterator[BaseCheckpointSaver]:
    """The checkpoint saver ``url`` names (see the module), open for the block."""
    if is_postgres(url):
        with _postgres(url or "") as saver:
            yield saver
        return
    path = sqlite_path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        manager = _sqlite_saver().from_conn_string(str(path))
        saver = manager.__enter__()
    except Exception as exc:  # noqa: BLE001 - sqlite3 raises several kinds
        raise CheckpointStoreError(f"cannot open the checkpoint file {path}: {exc}",
                                   f"check {env_name('checkpoint_url')}") from None
    try:
        yield saver
    finally:
        # Under the saver's lock: a run's thread that outlived an interrupt may be writing
        # this moment, and closing a connection in use crashes the sqlite3 module. Its
        # next write raises sqlite3.ProgrammingError instead.
        with saver.lock:
            manager.__exit__(None, None, None)


@functools.cache
def _sqlite_saver() -> type[SqliteSaver]:
    """LangGraph's SQLite saver, committing as the module says."""
    # Imported here: the CLI words a failed write through this module without LangGraph.
    from langgraph.checkpoint.sqlite import SqliteSaver

    class Saver(SqliteSaver):
        def setup(self) -> None:
            if self.is_setup:
                return
            super().setup()  # on first use, as LangGraph's: a file that is no database says so then
            # Only under WAL: a power cut in the middle of a commit could break a rollback journal.
            if self.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                self.conn.execute("PRAGMA synchronous=NORMAL")

    return Saver


@contextmanager
def _postgres(url: str) -> Iterator[BaseCheckpointSaver]:
    setting = env_name("checkpoint_url")
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise CheckpointStoreError(
            f"{setting} names a PostgreSQL database, but langgraph-checkpoint-postgres "
            "is not installed",
            "pip install 'llmi[postgres]' (langgraph-checkpoint-postgres and psycopg[binary])",
        ) from None
    try:
        manager = PostgresSaver.from_conn_string(_with_timeout(url))
        saver = manager.__enter__()
    except psycopg.Error as exc:
        raise CheckpointStoreError(
            f"cannot connect to the checkpoint database ({describe(url)}): "
            f"{first_line(str(exc)) or type(exc).__name__}",
            f"start the server, or check {setting}",
        ) from None
    try:
        try:
            saver.setup()
        except psycopg.Error as exc:
            raise CheckpointStoreError(
                f"cannot set up the checkpoint tables ({describe(url)}): {first_line(str(exc))}",
                "the database user needs the right to create tables",
            ) from None
        yield saver
    finally:
        with saver.lock:  # as for SQLite above
            manager.__exit__(None, None, None)


def _with_timeout(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "connect_timeout" for name, _ in query):
        query.append(("connect_timeout", str(CONNECT_TIMEOUT_S)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def thread_config(thread_id: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The run config of thread ``thread_id``; ``metadata`` goes with its checkpoints."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    if metadata is not None:
        config["metadata"] = metadata
    return config


def latest(saver: BaseCheckpointSaver, thread_id: str) -> CheckpointTuple | None:
    """The thread's latest top-level checkpoint, or None for an unknown thread."""
    return saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
