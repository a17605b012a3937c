"""One SQLite file of the Task Registry: its connections (one per thread), transactions and
schema, and whether it is still the file that was opened.

Writes in one process queue on a lock and run in ``BEGIN IMMEDIATE``; several processes share
the file through WAL and ``busy_timeout``. :class:`~.sqlite.SQLiteRegistry` is built on it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import RegistryError, RegistryLostError
from . import _sql

log = logging.getLogger(__name__)

__all__ = ["SQLiteFile"]


class SQLiteFile:
    """The registry's SQLite file: connections per thread, write and read transactions."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        # every connection with its thread; those of finished threads are closed when the
        # next connection opens (servers that start a thread per request do not leak them)
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False
        self._init_schema()
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    @property
    def open_connections(self) -> int:
        """Connections open now (one per thread that used the file and may use it again)."""
        with self._conns_lock:
            return len(self._conns)

    def check_present(self) -> None:
        """Raise RegistryLostError when the file was deleted or replaced since it was opened
        (a stat: cheap enough for every poll)."""
        if self._identity is not None and self._file_identity() != self._identity:
            raise RegistryLostError(
                f"the registry file {str(self.path)!r} was deleted or replaced while the "
                "dispatcher used it; it stopped rather than go on with an empty registry. "
                "Restore the file (and its -wal file) from a backup and start again, or start "
                "with a new --registry")

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("registry %s: journal_mode is %s, not wal", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.Error as exc:
            raise RegistryError(
                f"cannot open the registry {str(self.path)!r}: {exc}; check the path and its "
                "permissions (--registry / NECROCODE_REGISTRY)"
            ) from exc
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        if self._closed:
            raise RegistryError(f"the registry {str(self.path)!r} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                live = []
                for ref, other in self._conns:
                    thread = ref()
                    if thread is not None and thread.is_alive():
                        live.append((ref, other))
                    else:
                        other.close()
                live.append((weakref.ref(threading.current_thread()), conn))
                self._conns = live
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): everything in it commits or nothing."""
        with self._write_lock:
            conn = self.conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RegistryError(f"registry {str(self.path)!r} is busy: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise RegistryError(
                        f"registry {str(self.path)!r}: write failed, nothing written: {exc}"
                    ) from exc
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in it sees the same snapshot."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        with self.write() as conn:
            for statement in _sql.SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version VALUES (?)", (_sql.SCHEMA_VERSION,))
                conn.execute("INSERT OR IGNORE INTO counters VALUES ('seq', 0)")
            elif row[0] > _sql.SCHEMA_VERSION:
                raise RegistryError(
                    f"the registry {str(self.path)!r} has schema version {row[0]}, newer than "
                    f"this Dispatcher's {_sql.SCHEMA_VERSION}; upgrade necrocode-dispatcher"
                )

    def close(self) -> None:
        """Close every connection of every thread."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for _, conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                log.debug("closing a registry connection failed", exc_info=True)
