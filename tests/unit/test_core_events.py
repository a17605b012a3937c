"""EventRecorder (registry first, JSONL fallback, replay without duplicates) and TaskMonitor."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.errors import InvalidTransitionError, RegistryError
from necrocode.dispatcher.events import FALLBACK_NAME, EventRecorder
from necrocode.dispatcher.models import EventType, Task, TaskEvent, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.task_monitor import TaskMonitor


class FlakyRegistry(MemoryRegistry):
    """A MemoryRegistry whose event writes fail while ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.fail_after_commit = False

    def record_event(self, event: TaskEvent) -> TaskEvent:
        if self.broken:
            raise RegistryError("database is locked")
        return super().record_event(event)

    def record_events(self, events: Iterable[TaskEvent]) -> None:
        if self.broken:
            raise RegistryError("database is locked")
        super().record_events(events)
        if self.fail_after_commit:  # the commit happened, the caller never heard of it
            self.fail_after_commit = False
            raise RegistryError("connection lost after commit")

    def transition(self, key: str, to_state: TaskState, *, expected: Any = None,
                   event: TaskEvent | None = None, **updates: Any) -> Task:
        if self.broken and event is not None:
            raise RegistryError("events table is locked")
        return super().transition(key, to_state, expected=expected, event=event, **updates)


def ev(kind: EventType, key: str | None = None, msg: str = "") -> TaskEvent:
    return TaskEvent(event_type=kind, task_key=key, message=msg)


def test_events_go_to_the_registry_and_recent(tmp_path: Path) -> None:
    reg = FlakyRegistry()
    rec = EventRecorder(reg, tmp_path)
    stored = rec.record(ev(EventType.DISPATCHER_STARTED, msg="hi"))
    assert stored.seq is not None
    assert [e.message for e in reg.get_events()] == ["hi"]
    assert list(rec.recent)[-1].message == "hi"
    assert not (tmp_path / FALLBACK_NAME).exists()


def test_fallback_then_replay_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    reg = FlakyRegistry()
    rec = EventRecorder(reg, tmp_path)
    reg.broken = True
    rec.record(ev(EventType.RUNNER_STARTED, "a/1", "one"))
    rec.record_many([ev(EventType.RUNNER_STARTED, "a/2", "two"),
                     ev(EventType.RUNNER_STARTED, "a/3", "three")])
    lines = (tmp_path / FALLBACK_NAME).read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["details"]["fallback_id"] for x in lines)
    assert rec.has_fallback and reg.get_events() == []
    reg.broken = False
    # the next record replays the fallback first, in order
    rec.record(ev(EventType.RUNNER_STARTED, "a/4", "four"))
    assert [e.message for e in reg.get_events()] == ["one", "two", "three", "four"]
    assert not (tmp_path / FALLBACK_NAME).exists()
    assert rec.replay() == 0


def test_replay_after_a_commit_whose_answer_was_lost(tmp_path: Path) -> None:
    reg = FlakyRegistry()
    rec = EventRecorder(reg, tmp_path)
    reg.broken = True
    rec.record(ev(EventType.RUNNER_LOST, "b/1", "lost"))
    reg.broken = False
    reg.fail_after_commit = True
    assert rec.replay() == 0  # failed as far as the recorder knows: the file stays
    assert (tmp_path / FALLBACK_NAME).exists()
    assert rec.replay() == 0  # already stored: skipped by its fallback id, file removed
    assert [e.message for e in reg.get_events()] == ["lost"]
    assert not (tmp_path / FALLBACK_NAME).exists()


def test_a_new_recorder_replays_an_old_fallback_file(tmp_path: Path) -> None:
    reg = FlakyRegistry()
    reg.broken = True
    EventRecorder(reg, tmp_path).record(ev(EventType.DISPATCHER_STOPPED, msg="bye"))
    with open(tmp_path / FALLBACK_NAME, "a") as fh:
        fh.write('{"event_type": "RunnerSt')  # a torn last line after a crash
    reg.broken = False
    rec = EventRecorder(reg, tmp_path)
    assert rec.has_fallback
    assert rec.replay() == 1
    assert [e.message for e in reg.get_events()] == ["bye"]


def test_transition_keeps_the_state_change_when_only_the_event_fails(tmp_path: Path) -> None:
    reg = FlakyRegistry()
    reg.submit_taskset(Taskset(name="t", tasks=[Task(id="1", title="x", taskset="t")]))
    rec = EventRecorder(reg, tmp_path)
    reg.broken = True
    task = rec.transition("t/1", TaskState.RUNNING, expected=TaskState.READY,
                          event=ev(EventType.TASK_ASSIGNED, "t/1", "assigned"))
    assert task.state is TaskState.RUNNING
    assert (tmp_path / FALLBACK_NAME).exists()
    reg.broken = False
    with pytest.raises(InvalidTransitionError):  # refusals are not swallowed
        rec.transition("t/1", TaskState.RUNNING, expected=TaskState.READY)
    rec.replay()
    assert "assigned" in [e.message for e in reg.get_events(task_key="t/1")]


def test_task_monitor_polls_incrementally() -> None:
    reg = MemoryRegistry()
    mon = TaskMonitor(registry=reg)
    reg.submit_taskset(Taskset(name="m", tasks=[
        Task(id="a", title="a", taskset="m"),
        Task(id="b", title="b", taskset="m", dependencies=["a"])]))
    first = mon.poll_ready_tasks()
    assert [t.key for t in first] == ["m/a"]
    assert mon.poll_changes() == []
    assert not mon.has_changes()
    reg.transition("m/a", TaskState.RUNNING, expected=TaskState.READY)
    reg.transition("m/a", TaskState.DONE, expected=TaskState.RUNNING)
    assert mon.has_changes()
    changed = mon.poll_changes()
    assert {t.key: t.state for t in changed} == {"m/a": TaskState.DONE, "m/b": TaskState.READY}
    assert mon.poll_ready_tasks() == []


def test_task_monitor_pages_through_big_batches() -> None:
    reg = MemoryRegistry()
    reg.submit_taskset(Taskset(name="p", tasks=[Task(id=str(i), title="x", taskset="p")
                                                for i in range(25)]))
    mon = TaskMonitor(registry=reg, batch_size=10)
    assert len(mon.poll_ready_tasks()) == 25
