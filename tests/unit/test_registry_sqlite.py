"""What only the SQLite registry has: a file that survives restarts, WAL, threads, a schema."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import pytest
from necrocode.dispatcher.errors import InvalidTransitionError, RegistryError
from necrocode.dispatcher.models import EventType, Task, TaskEvent, Taskset, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry

S = TaskState


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with SQLiteRegistry(path) as reg:
        reg.submit_taskset(Taskset("t", tasks=[Task("1"), Task("2", dependencies=["1"])]))
        reg.transition("t/1", S.RUNNING, attempts=1, runner_id="r-1")
        reg.transition("t/1", S.READY, next_attempt_at=1234.5, last_error="boom")
        reg.set_priority("t/2", 8)
        seq = reg.current_seq()
    with SQLiteRegistry(path) as reg:
        one = reg.get_task("t/1")
        assert (one.state, one.attempts, one.next_attempt_at, one.last_error) == (
            S.READY, 1, 1234.5, "boom",
        )
        assert reg.get_task("t/2").priority == 8
        assert reg.current_seq() == seq
        # the dependency table survived too
        reg.transition("t/1", S.RUNNING)
        reg.transition("t/1", S.DONE)
        assert reg.get_task("t/2").state is S.READY


def test_wal_mode_and_integrity(tmp_path: Path) -> None:
    with SQLiteRegistry(tmp_path / "r.db") as reg:
        reg.submit_taskset(Taskset("t", tasks=[Task("1")]))
        conn = sqlite3.connect(tmp_path / "r.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        assert reg.integrity_check() == "ok"
        assert reg.size_on_disk() > 0


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    SQLiteRegistry(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match="schema version 999"):
        SQLiteRegistry(path)


def test_unopenable_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RegistryError, match="file/r.db"):
        SQLiteRegistry(blocker / "r.db")


def test_closed_registry_refuses_use(tmp_path: Path) -> None:
    reg = SQLiteRegistry(tmp_path / "r.db")
    reg.close()
    with pytest.raises(RegistryError, match="closed"):
        reg.current_seq()


def test_threads_share_one_registry(tmp_path: Path) -> None:
    """Four threads race for the same tasks and write events: one winner per task, none lost."""
    reg = SQLiteRegistry(tmp_path / "r.db")
    n_tasks = 40
    reg.submit_taskset(Taskset("t", tasks=[Task(str(i)) for i in range(n_tasks)]))
    wins: dict[int, list[str]] = {w: [] for w in range(4)}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(w: int) -> None:
        try:
            start.wait()
            for i in range(n_tasks):
                try:
                    reg.transition(f"t/{i}", S.RUNNING, expected=S.READY, runner_id=f"w{w}")
                    wins[w].append(f"t/{i}")
                except InvalidTransitionError:
                    pass
                reg.record_event(TaskEvent(EventType.RUNNER_STARTED, details={"w": w, "i": i}))
                reg.list_tasks(state=S.READY, order_by="priority", limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    all_wins = sorted(k for ks in wins.values() for k in ks)
    assert all_wins == sorted(f"t/{i}" for i in range(n_tasks))
    for w, keys in wins.items():
        for key in keys:
            assert reg.get_task(key).runner_id == f"w{w}"
    started = reg.get_events(event_types=[EventType.RUNNER_STARTED])
    assert len(started) == 4 * n_tasks
    reg.close()


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    """A server starting a thread per request must not leak one connection per request."""
    reg = SQLiteRegistry(tmp_path / "r.db")
    reg.submit_taskset(Taskset("t", tasks=[Task("1")]))
    for _ in range(20):
        t = threading.Thread(target=reg.get_task, args=("t/1",))
        t.start()
        t.join()
    assert reg.open_connections <= 2  # this thread's and the last finished thread's
    reg.close()
    assert reg.open_connections == 0


def test_every_stored_field_survives_a_row_round_trip() -> None:
    """The generated row codec writes each field that differs from its default, and only
    those: a task with every field set comes back equal, a default one is ``{}``."""
    from necrocode.dispatcher.models import Resources, Usage
    from necrocode.dispatcher.registry import _sql

    assert _sql.encode_data(Task("d")) == "{}"
    task = Task(
        "1", title="t", taskset="s", description="d", state=S.RUNNING, dependencies=["0"],
        required_skill="k", priority=3, tenant="x", resources=Resources(2.0, 64),
        command=["c"], timeout=1.5, max_attempts=4, metadata={"m": [1, "é"]}, repo="/r",
        optional=True, estimated_duration=9.0, created_at=1.0, ready_at=2.0, updated_at=3.0,
        started_at=4.0, finished_at=5.0, attempts=2, next_attempt_at=6.0, last_error="e",
        runner_id="r", assigned_slot="sl", reserved_branch="b", artifacts=["a"],
        paths=("p/*",), branch="br", base="ba", head="he", commits=2, files_changed=("f",),
        landed="main", gate_failed="g", agent="codex", agent_options={"model": "m"},
        max_cost_usd=1.5, max_tokens=10, max_turns=3, usage=Usage(1, 2, 0, 0.5, 1),
        agent_summary="sum", from_base=True,
    )
    plain = Task("1")
    assert [f.name for f in dataclasses.fields(Task)
            if getattr(task, f.name) == getattr(plain, f.name)] == ["id"]
    row = _sql.task_row(task, seq=7, position=0)
    back = _sql.row_to_task(row)
    assert back == task
