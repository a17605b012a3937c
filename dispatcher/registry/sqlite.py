"""The embedded Task Registry: one SQLite file in WAL mode.

Safe for several threads (a connection per thread; writes in one process queue on a lock) and
for several processes (WAL, ``busy_timeout``, every write in ``BEGIN IMMEDIATE``): the file and
its connections are :class:`~.sqlite_file.SQLiteFile`. Each write
takes numbers from one change sequence: a task row stores the number of its latest change
(indexed, so :meth:`SQLiteRegistry.changes_since` costs O(changes)) and each event its own.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..errors import (
    InvalidTransitionError,
    TaskNotFoundError,
)
from ..models import Task, TaskEvent, Taskset, TaskState, now
from . import _sql
from ._common import (
    TransitionRequest,
    TransitionResult,
    apply_transition,
    apply_updates,
    as_states,
    bind_event,
    check_order_by,
    check_requests,
    check_transition,
    check_updates,
    dependency_keys,
    event_type_values,
    paused_gc,
    priority_event,
    ready_event,
    with_seq,
)
from ._submit_plan import plan_submit
from .base import ChangeBatch, KnownVersion, SubmitResult
from .sqlite_file import SQLiteFile
from .sqlite_submit import write_plan

log = logging.getLogger(__name__)

_CHUNK = 500  # keys per IN (...) query


class SQLiteRegistry:
    """Task Registry stored in one SQLite file (created with its schema when missing)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self._db = SQLiteFile(path, busy_timeout=busy_timeout)
        self.path = self._db.path
        self.busy_timeout = busy_timeout

    def check_present(self) -> None:
        """Raise RegistryLostError when the file was deleted or replaced since it was opened
        (a stat: cheap enough for every poll)."""
        self._db.check_present()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.write()

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.read()

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    @property
    def open_connections(self) -> int:
        """Connections open now, one per thread that used the registry (finished threads'
        are closed when the next one opens)."""
        return self._db.open_connections

    def close(self) -> None:
        """Close every connection of every thread."""
        self._db.close()

    def __enter__(self) -> SQLiteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteRegistry({str(self.path)!r})"

    # --- internal helpers ------------------------------------------------------------------
    @staticmethod
    def _next_seq(conn: sqlite3.Connection, n: int) -> int:
        """Take ``n`` numbers of the change sequence; returns the first."""
        last = conn.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'seq' RETURNING value", (n,)
        ).fetchone()[0]
        return int(last) - n + 1

    @staticmethod
    def _load(conn: sqlite3.Connection, key: str) -> Task:
        row = conn.execute(
            f"SELECT {_sql.TASK_COLUMNS} FROM tasks WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            raise TaskNotFoundError(key)
        return _sql.row_to_task(row)

    @staticmethod
    def _load_many(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Task]:
        out: dict[str, Task] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = conn.execute(
                f"SELECT {_sql.TASK_COLUMNS} FROM tasks WHERE key IN "
                f"({_sql.placeholders(len(chunk))})",
                chunk,
            )
            for row in rows:
                out[row[0]] = _sql.row_to_task(row)
        return out

    def _save(self, conn: sqlite3.Connection, tasks: Sequence[Task]) -> None:
        """Write changed tasks (existing rows), each with a new change number."""
        if not tasks:
            return
        first = self._next_seq(conn, len(tasks))
        conn.executemany(
            _sql.UPDATE_TASK, [_sql.task_update_row(t, first + i) for i, t in enumerate(tasks)]
        )

    def _insert_events(self, conn: sqlite3.Connection, events: Sequence[TaskEvent]) -> int:
        """Store events; returns the seq of the first."""
        if not events:
            return 0
        first = self._next_seq(conn, len(events))
        conn.executemany(_sql.INSERT_EVENT, _sql.event_rows(events, first))
        return first

    @staticmethod
    def _set_deps(
        conn: sqlite3.Connection, tasks: Iterable[Task], *, fresh: bool,
        dep_keys: dict[str, list[str]] | None = None,
    ) -> None:
        keyed = [(t.key, t) for t in tasks]
        if not fresh:
            conn.executemany("DELETE FROM deps WHERE dependent_key = ?", [(k,) for k, _ in keyed])
        rows = [
            (k, d)
            for k, t in keyed
            for d in (dep_keys[k] if dep_keys is not None else dependency_keys(t))
        ]
        if rows:
            conn.executemany("INSERT OR IGNORE INTO deps VALUES (?, ?)", rows)

    @staticmethod
    def _unblockable(conn: sqlite3.Connection, done_key: str) -> list[Task]:
        """BLOCKED dependents of ``done_key`` whose dependencies are now all DONE.

        CROSS JOIN pins the join order: start from the ``deps`` index on ``dep_key`` (a few
        rows) instead of scanning every blocked task (9.4 ms -> 0.013 ms with 10k queued).
        """
        rows = conn.execute(
            f"""SELECT {', '.join('t.' + c.strip() for c in _sql.TASK_COLUMNS.split(','))}
            FROM deps d CROSS JOIN tasks t ON t.key = d.dependent_key
            WHERE d.dep_key = ? AND t.state = 'blocked' AND NOT EXISTS (
                SELECT 1 FROM deps d2 LEFT JOIN tasks t2 ON t2.key = d2.dep_key
                WHERE d2.dependent_key = t.key AND (t2.state IS NULL OR t2.state != 'done'))
            ORDER BY t.key""",
            (done_key,),
        )
        return [_sql.row_to_task(r) for r in rows]

    # --- tasksets --------------------------------------------------------------------------
    def submit_taskset(self, taskset: Taskset) -> SubmitResult:
        """Create or update a taskset and its tasks, atomically (see TaskRegistry)."""
        stamp = now()
        with self._write() as conn, paused_gc():
            existing = {
                row[0]: _sql.row_to_task(row)
                for row in conn.execute(
                    f"SELECT {_sql.TASK_COLUMNS} FROM tasks WHERE taskset = ?", (taskset.name,)
                )
            }

            def outside(keys: Iterable[str]) -> dict[str, TaskState]:
                found = self._load_many(conn, list(keys))
                return {k: t.state for k, t in found.items()}

            plan = plan_submit(taskset, existing, outside, stamp)
            conn.execute(
                """INSERT INTO tasksets (name, repo, tenant, description, source, created_at,
                updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET
                repo=excluded.repo, tenant=excluded.tenant, description=excluded.description,
                source=excluded.source, updated_at=excluded.updated_at""",
                (taskset.name, taskset.repo, taskset.tenant, taskset.description,
                 taskset.source, taskset.created_at, stamp),
            )
            write_plan(conn, plan, self._next_seq, self._set_deps)
        log.info(
            "submitted taskset %s: %d created, %d updated, %d unchanged",
            taskset.name, len(plan.result.created), len(plan.result.updated),
            len(plan.result.unchanged),
        )
        return plan.result

    def list_tasksets(self) -> list[Taskset]:
        """Every taskset (``tasks`` left empty; use list_tasks)."""
        rows = self._conn().execute(
            "SELECT name, repo, tenant, description, source, created_at FROM tasksets "
            "ORDER BY name"
        )
        return [_sql.row_to_taskset(r) for r in rows]

    def get_taskset(self, name: str) -> Taskset | None:
        """One taskset with its tasks (in submit order), or None."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT name, repo, tenant, description, source, created_at FROM tasksets "
                "WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None:
                return None
            taskset = _sql.row_to_taskset(row)
            taskset.tasks = [
                _sql.row_to_task(r)
                for r in conn.execute(
                    f"SELECT {_sql.TASK_COLUMNS} FROM tasks WHERE taskset = ? "
                    "ORDER BY position, key",
                    (name,),
                )
            ]
        return taskset

    # --- tasks -----------------------------------------------------------------------------
    def get_task(self, key: str) -> Task:
        """The task with key ``taskset/id``; raises TaskNotFoundError."""
        return self._load(self._conn(), key)

    def get_tasks(self, keys: Iterable[str]) -> dict[str, Task]:
        """Several tasks by key; missing keys are left out."""
        wanted = list(dict.fromkeys(keys))
        with self._read() as conn:
            found = self._load_many(conn, wanted)
        return {k: found[k] for k in wanted if k in found}

    def list_tasks(
        self,
        *,
        state: TaskState | Sequence[TaskState] | None = None,
        skill: str | None = None,
        taskset: str | None = None,
        tenant: str | None = None,
        order_by: str = "key",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks matching every given filter, sorted, one page.

        ``order_by``: "key"; "priority" (priority desc, then ready_at asc with never-ready
        tasks last, then key); "updated" (most recently changed first).
        """
        check_order_by(order_by)
        where: list[str] = []
        params: list[Any] = []
        states = as_states(state)
        if states:
            where.append(f"state IN ({_sql.placeholders(len(states))})")
            params += [s.value for s in states]
        for column, value in (("required_skill", skill), ("taskset", taskset),
                              ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {_sql.TASK_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_sql.ORDER_SQL[order_by]} LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        return _sql.rows_to_tasks(self._conn().execute(sql, params), limit is None or limit > 2000)

    def count_tasks(self, *, taskset: str | None = None) -> dict[TaskState, int]:
        """Number of tasks per state (every state present, zero included)."""
        counts = dict.fromkeys(TaskState, 0)
        if taskset is None:
            rows = self._conn().execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        else:
            rows = self._conn().execute(
                "SELECT state, COUNT(*) FROM tasks WHERE taskset = ? GROUP BY state", (taskset,)
            )
        for state, n in rows:
            counts[TaskState(state)] = n
        return counts

    def transition(
        self,
        key: str,
        to_state: TaskState,
        *,
        expected: TaskState | Sequence[TaskState] | None = None,
        event: TaskEvent | None = None,
        **updates: Any,
    ) -> Task:
        """Compare-and-set state change plus updates plus event, in one transaction."""
        target = TaskState(to_state)
        checked = check_updates(key, updates)
        with self._write() as conn:
            return self._transition_in(conn, key, target, expected, event, checked, now())

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Several compare-and-sets in ONE transaction (one commit instead of one per task).

        Each request behaves as :meth:`transition` would, in order (a later request sees the
        earlier ones). A refused request (InvalidTransitionError, TaskNotFoundError) is
        answered with that exception in its place and does not stop the others. Any other
        failure writes nothing and raises, as for :meth:`transition`.
        """
        checked = check_requests(requests)
        out: list[TransitionResult] = []
        if not checked:
            return out
        with self._write() as conn:
            stamp = now()
            for req, target, updates in checked:
                try:
                    out.append(self._transition_in(conn, req.key, target, req.expected,
                                                   req.event, updates, stamp))
                except (InvalidTransitionError, TaskNotFoundError) as exc:
                    out.append(exc)
        return out

    def _transition_in(
        self,
        conn: sqlite3.Connection,
        key: str,
        target: TaskState,
        expected: TaskState | Sequence[TaskState] | None,
        event: TaskEvent | None,
        checked: dict[str, Any],
        stamp: float,
    ) -> Task:
        """One transition inside an open write transaction (checked before anything is
        written, so a refusal leaves the transaction as it was)."""
        task = self._load(conn, key)
        check_transition(key, task.state, target, expected)
        new = apply_transition(task, target, checked, stamp)
        self._save(conn, [new])
        if "dependencies" in checked:
            self._set_deps(conn, [new], fresh=False)
        events = [bind_event(event, key)] if event is not None else []
        if target is TaskState.DONE:
            unblocked = [
                apply_transition(t, TaskState.READY, {}, stamp)
                for t in self._unblockable(conn, key)
            ]
            self._save(conn, unblocked)
            events += [ready_event(t.key, stamp, f"dependency {key} done") for t in unblocked]
        self._insert_events(conn, events)
        return new

    def update_task(self, key: str, *, event: TaskEvent | None = None, **updates: Any) -> Task:
        """Change fields of UPDATABLE_FIELDS (not the state) plus an event, atomically."""
        checked = check_updates(key, updates)
        with self._write() as conn:
            new = apply_updates(self._load(conn, key), checked, now())
            self._save(conn, [new])
            if "dependencies" in checked:
                self._set_deps(conn, [new], fresh=False)
            if event is not None:
                self._insert_events(conn, [bind_event(event, key)])
        return new

    def set_priority(self, key: str, priority: int) -> Task:
        """Persist a new priority and write a PriorityChanged event (old and new in details)."""
        priority = int(priority)
        with self._write() as conn:
            task = self._load(conn, key)
            stamp = now()
            new = apply_updates(task, {"priority": priority}, stamp)
            self._save(conn, [new])
            self._insert_events(conn, [priority_event(key, task.priority, priority, stamp)])
        return new

    # --- change feed -----------------------------------------------------------------------
    def current_seq(self) -> int:
        """The latest change sequence number."""
        row = self._conn().execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
        return int(row[0])

    def changes_since(self, seq: int, limit: int | None = None, *,
                      known: KnownVersion | None = None) -> ChangeBatch:
        """Tasks whose latest change is after ``seq``, in sequence order (index on seq);
        the rows ``known`` already holds are not decoded."""
        if limit is not None and limit <= 0:
            return ChangeBatch([], seq)
        self.check_present()
        with self._read() as conn:
            current = int(
                conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0]
            )
            rows = conn.execute(
                f"SELECT {_sql.TASK_COLUMNS} FROM tasks WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, -1 if limit is None else limit),
            ).fetchall()
        fresh = rows if known is None else [r for r in rows if not known(r[0], r[3], r[9])]
        tasks = _sql.rows_to_tasks(fresh, len(fresh) > 2000)
        if limit is not None and len(rows) >= limit and rows:
            return ChangeBatch(tasks, int(rows[-1][10]))
        return ChangeBatch(tasks, max(current, seq))

    # --- events ----------------------------------------------------------------------------
    def record_event(self, event: TaskEvent) -> TaskEvent:
        """Store an event; returns it with its ``seq`` set."""
        with self._write() as conn:
            first = self._insert_events(conn, [event])
        return with_seq(event, first)

    def record_events(self, events: Iterable[TaskEvent]) -> None:
        """Store several events in one transaction."""
        events = list(events)
        if events:
            with self._write() as conn:
                self._insert_events(conn, events)

    def get_events(
        self,
        *,
        task_key: str | None = None,
        since: float | None = None,
        until: float | None = None,
        event_types: Sequence[Any] | None = None,
        limit: int | None = None,
        after_seq: int | None = None,
        newest_first: bool = False,
    ) -> list[TaskEvent]:
        """Events filtered by task, time range [since, until), type; oldest first by default."""
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("task_key = ?", task_key), ("timestamp >= ?", since),
                              ("timestamp < ?", until), ("seq > ?", after_seq)):
            if value is not None:
                where.append(clause)
                params.append(value)
        types = event_type_values(event_types)
        if types:
            where.append(f"type IN ({_sql.placeholders(len(types))})")
            params += types
        sql = f"SELECT {_sql.EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        params.append(-1 if limit is None else limit)
        return [_sql.row_to_event(r) for r in self._conn().execute(sql, params)]

    # --- maintenance -----------------------------------------------------------------------
    def integrity_check(self) -> str:
        """SQLite's integrity check: "ok" when the file is sound."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def size_on_disk(self) -> int:
        """Bytes used by the database file and its WAL."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                total += p.stat().st_size
        return total


__all__ = ["SQLiteRegistry"]
