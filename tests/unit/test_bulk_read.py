"""bulk_read.decode_rows: the same tasks as row_to_task, repeated immutable values shared."""

from __future__ import annotations

from necrocode.dispatcher.models import Resources, Task, TaskState
from necrocode.dispatcher.registry import _sql
from necrocode.dispatcher.registry.bulk_read import decode_rows


def _rows(tasks: list[Task]) -> list[tuple[object, ...]]:
    # what fetchall gives: equal values as distinct objects, as SQLite returns them
    return [tuple(float(repr(v)) if type(v) is float else
                  "".join(list(v)) if type(v) is str else v
                  for v in _sql.task_row(t, seq=i + 1, position=i))
            for i, t in enumerate(tasks)]


def _tasks() -> list[Task]:
    return [
        Task("1", title="a", taskset="s", command=["run", "--x"], repo="/r", created_at=5.0,
             ready_at=5.0, updated_at=5.0),
        Task("2", title="b", taskset="s", command=["run", "--x"], repo="/r", created_at=5.0,
             ready_at=5.0, updated_at=5.0, dependencies=["1"], metadata={"k": 1},
             resources=Resources(2.0, 512)),
        Task("3", title="c", taskset="s", state=TaskState.BLOCKED, created_at=5.0,
             ready_at=None, updated_at=7.5, agent="codex", description="same"),
        Task("4", title="d", taskset="s", created_at=6.0, ready_at=7.5, updated_at=7.5,
             description="same"),
    ]


def test_decode_rows_equals_row_to_task_of_each_row() -> None:
    rows = _rows(_tasks())
    assert decode_rows(rows) == [_sql.row_to_task(r) for r in rows] == _tasks()


def test_repeated_times_and_strings_are_one_object() -> None:
    a, b, c, d = decode_rows(_rows(_tasks()))
    assert a.ready_at is a.created_at is a.updated_at is b.created_at is c.created_at
    assert c.ready_at is None and c.updated_at is d.updated_at
    assert a.command is not None and b.command is not None
    assert a.command[0] is b.command[0] and a.command[1] is b.command[1]
    assert a.repo is b.repo and c.description is d.description


def test_mutable_values_stay_each_tasks_own() -> None:
    a, b, c, _ = decode_rows(_rows(_tasks()))
    assert a.command is not b.command
    assert a.dependencies is not c.dependencies and a.metadata is not c.metadata
    assert a.resources is not c.resources and b.resources == Resources(2.0, 512)
    a.command.append("more")  # type: ignore[union-attr]
    assert b.command == ["run", "--x"]


def test_equal_values_of_another_type_are_not_shared() -> None:
    row = list(_rows([Task("1", created_at=5.0, ready_at=5.0, updated_at=5.0)])[0])
    row[7] = 5  # ready_at as an integer (another tool wrote it)
    (task,) = decode_rows([tuple(row)])
    assert type(task.ready_at) is int and type(task.created_at) is float
