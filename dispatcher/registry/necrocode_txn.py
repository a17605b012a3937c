"""One write to a NecroCode registry: tasks changed under the locks of their specs.

A :class:`Txn` collects the tasks a write changes (reading earlier changes of the same write
first), the events that go with them and the original's state lines; the registry writes each
changed taskset file once when the write ends, then appends the events. So N transitions of one
taskset in :meth:`NecroCodeRegistry.transition_many` cost one rewrite of its file, not N.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import TaskNotFoundError
from ..models import EventType, Task, TaskEvent, Taskset, TaskState, split_key
from ._common import apply_transition, bind_event, check_transition, ready_event
from .necrocode_events import StateChange, state_line


@dataclass
class Txn:
    """Changes of one write, not yet on disk."""

    locked: frozenset[str]  # specs whose lock is held
    lookup: Callable[[str], Task | None]  # the registry's current task by key
    stamp: float
    changed: dict[str, dict[str, Task]] = field(default_factory=dict)  # spec -> id -> task
    put_order: dict[str, None] = field(default_factory=dict)  # keys, in the order last changed
    events: list[tuple[TaskEvent, StateChange | None]] = field(default_factory=list)
    state_lines: list[str] = field(default_factory=list)
    orders: dict[str, list[str]] = field(default_factory=dict)  # spec -> new task order
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    infos: dict[str, Taskset] = field(default_factory=dict)  # spec -> its new own fields
    deferred: set[str] = field(default_factory=set)  # dependents in specs not locked

    def find(self, key: str) -> Task | None:
        spec, tid = split_key(key)
        pending = self.changed.get(spec, {}).get(tid)
        return pending if pending is not None else self.lookup(key)

    def get(self, key: str) -> Task:
        task = self.find(key)
        if task is None:
            raise TaskNotFoundError(key)
        return task

    def put(self, task: Task) -> None:
        self.changed.setdefault(task.taskset, {})[task.id] = task
        key = task.key
        self.put_order.pop(key, None)
        self.put_order[key] = None

    def transition(self, key: str, target: TaskState,
                   expected: TaskState | Sequence[TaskState] | None, event: TaskEvent | None,
                   updates: dict[str, Any], dependents: Callable[[str], list[str]],
                   deps_of: Callable[[str], list[str]]) -> Task:
        """One compare-and-set (refused before anything changes); entering DONE unblocks the
        dependents whose dependencies are now all DONE, each with a TaskReady event."""
        task = self.get(key)
        check_transition(key, task.state, target, expected)
        new = apply_transition(task, target, updates, self.stamp)
        self.put(new)
        change = StateChange(task.state, target)
        if event is not None:
            self.events.append((bind_event(event, key), change))
        else:
            self.state_lines.append(state_line(key, change, self.stamp))
        if target is TaskState.DONE:
            for dep_key in dependents(key):
                self.unblock(dep_key, f"dependency {key} done", deps_of(dep_key))
        return new

    def unblock(self, key: str, cause: str, deps: list[str]) -> None:
        """BLOCKED -> READY when every dependency is DONE (specs not locked: left for later)."""
        task = self.find(key)
        if task is None or task.state is not TaskState.BLOCKED:
            return
        if not all((d := self.find(dep)) is not None and d.state is TaskState.DONE
                   for dep in deps):
            return
        if task.taskset not in self.locked:
            self.deferred.add(key)
            return
        self.put(apply_transition(task, TaskState.READY, {}, self.stamp))
        self.events.append((ready_event(key, self.stamp, cause),
                            StateChange(TaskState.BLOCKED, TaskState.READY)))

    def settle(self, key: str, deps: list[str]) -> None:
        """Make a task the original left inconsistent follow its dependencies: BLOCKED with
        every dependency DONE -> READY; READY with one not DONE -> BLOCKED."""
        task = self.find(key)
        if task is None or task.state not in (TaskState.BLOCKED, TaskState.READY):
            return
        done = all((d := self.find(dep)) is not None and d.state is TaskState.DONE
                   for dep in deps)
        if task.state is TaskState.BLOCKED and done:
            self.unblock(key, "dependencies done", deps)
        elif task.state is TaskState.READY and not done:
            self.put(apply_transition(task, TaskState.BLOCKED, {}, self.stamp))
            event = TaskEvent(EventType.TASK_BLOCKED, key, timestamp=self.stamp,
                              message="waits for dependencies that are not done",
                              details={"reason": "dependencies"})
            self.events.append((event, StateChange(TaskState.READY, TaskState.BLOCKED)))
