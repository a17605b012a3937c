"""Writing a planned submit into the SQLite registry (:func:`write_plan`), in bulk into empty
tables with their secondary indexes built once after.

A first submit of 100,000 tasks into a new registry writes 100,000 rows into each of three
tables; keeping five secondary indexes up to date row by row, through the default 2 MB page
cache, costs about a third of the insert. :func:`bulk_insert` drops the secondary indexes of
the tables that are empty, lets the caller insert, and creates them again (SQLite sorts
the keys once), with a larger page cache meanwhile, all inside the caller's write transaction:
a failure rolls the indexes back with the rows, and readers in other connections keep their
snapshot (their statements are prepared again after the commit, as for any schema change).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from ..models import Task
from . import _sql
from ._submit_plan import SubmitPlan, created_event_rows, created_task_rows

__all__ = ["BULK_ROWS", "bulk_insert", "write_plan"]

#: Rows from which an insert into empty tables is done this way.
BULK_ROWS = 5000
#: Page cache during a bulk insert, in KiB (the default is 2 MB).
_CACHE_KIB = 64 * 1024


@contextmanager
def bulk_insert(conn: sqlite3.Connection, tables: Sequence[str], rows: int) -> Iterator[None]:
    """Inside an open write transaction: around an insert of ``rows`` rows into ``tables``,
    drop the secondary indexes of those that are empty and create them again after; with
    fewer rows, nothing is done. A failure inside leaves the transaction to the caller's
    rollback (the indexes come back with it)."""
    if rows < BULK_ROWS:
        yield
        return
    empty = [t for t in tables
             if conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() is None]
    indexes: list[tuple[str, str]] = []
    for table in empty:
        indexes += conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL ORDER BY rowid", (table,)).fetchall()
    cache = int(conn.execute("PRAGMA cache_size").fetchone()[0])
    conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
    try:
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        yield
        for _, sql in indexes:
            conn.execute(sql)
    finally:
        conn.execute(f"PRAGMA cache_size = {cache}")


def write_plan(conn: sqlite3.Connection, plan: SubmitPlan, next_seq: Callable[..., int],
               set_deps: Callable[..., None]) -> None:
    """Write the tasks, dependency rows and events of ``plan`` inside an open write
    transaction. ``next_seq(conn, n)`` takes change numbers; ``set_deps(conn, tasks,
    fresh=False, dep_keys=...)`` replaces the dependency rows of existing tasks."""
    n_created, updated = len(plan.created_states), plan.updated
    # a first submit into a new registry: its indexes built after the rows
    with bulk_insert(conn, ("tasks", "deps", "events"), n_created):
        if n_created or updated:
            first = next_seq(conn, n_created + len(updated))
            if n_created:
                conn.executemany(_sql.INSERT_TASK, created_task_rows(
                    plan, first, _sql.created_task_row))
            pos = plan.positions
            conn.executemany(_sql.INSERT_TASK, [
                _sql.task_row(t, first + n_created + i, pos[_key(t)])
                for i, t in enumerate(updated)
            ])
        dep_keys = plan.dep_keys
        rows = [(k, d) for k in plan.result.created for d in dep_keys[k]]
        if rows:  # new tasks have no rows yet
            conn.executemany("INSERT OR IGNORE INTO deps VALUES (?, ?)", rows)
        set_deps(conn, plan.deps_changed, fresh=False, dep_keys=dep_keys)
        events = plan.later_events
        if n_created or events:
            first = next_seq(conn, n_created + len(events))
            conn.executemany(_sql.INSERT_EVENT, created_event_rows(plan, first, _sql.dumps))
            conn.executemany(_sql.INSERT_EVENT, _sql.event_rows(events, first + n_created))


def _key(task: Task) -> str:
    return f"{task.taskset}/{task.id}"
