"""A bulk submit into a new SQLite registry builds its indexes after the rows: the same
indexes afterwards, used by queries, and on a failure nothing written and every index back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from necrocode.dispatcher.models import Task, Taskset, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry, sqlite_submit
from necrocode.dispatcher.registry.sqlite_submit import BULK_ROWS


def indexes(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                            "ORDER BY name").fetchall()


def big(name: str, n: int = BULK_ROWS) -> Taskset:
    return Taskset(name=name, tasks=[
        Task(id=str(i), title=f"t{i}", priority=(i // 10) % 5,
             dependencies=[str(i - 1)] if i % 10 else []) for i in range(n)])


def test_the_indexes_come_back_and_serve_queries(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    registry = SQLiteRegistry(path)
    before = indexes(path)
    result = registry.submit_taskset(big("a"))
    assert len(result.created) == BULK_ROWS
    assert indexes(path) == before
    registry.submit_taskset(big("b"))  # into tables no longer empty: the indexes stay
    assert indexes(path) == before
    assert registry.integrity_check() == "ok"
    ready = registry.list_tasks(state=TaskState.READY, order_by="priority", limit=3)
    assert [t.priority for t in ready] == [4, 4, 4]
    assert len(registry.get_events(task_key="a/7")) == 1
    registry.transition("a/0", TaskState.RUNNING, expected=TaskState.READY)
    registry.transition("a/0", TaskState.DONE, expected=TaskState.RUNNING)
    assert registry.get_task("a/1").state is TaskState.READY  # found through deps_dep
    with sqlite3.connect(path) as conn:
        plan = " ".join(r[-1] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE state = 'ready' "
            "ORDER BY priority DESC, ready_at IS NULL, ready_at, key LIMIT 5"))
    assert "tasks_state_priority" in plan
    registry.close()


def test_a_failed_bulk_submit_writes_nothing_and_keeps_the_indexes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.db"
    registry = SQLiteRegistry(path)
    before = indexes(path)

    def fail(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_submit, "created_event_rows", fail)
    with pytest.raises(Exception, match="disk I/O error"):
        registry.submit_taskset(big("a"))
    assert indexes(path) == before
    assert sum(registry.count_tasks().values()) == 0
    assert registry.get_events() == []
    monkeypatch.undo()
    registry.submit_taskset(big("a"))
    assert sum(registry.count_tasks().values()) == BULK_ROWS
    assert registry.integrity_check() == "ok"
    registry.close()
