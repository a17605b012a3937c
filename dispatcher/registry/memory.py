"""An in-memory Task Registry with the same behaviour as the SQLite one, for unit tests.

Everything lives in dicts behind one lock; tasks are copied in and out so that callers never
share objects with the store. Sequence numbers, events and errors match
:class:`~.sqlite.SQLiteRegistry` (one behaviour test suite runs against both).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import InvalidTransitionError, TaskNotFoundError
from ..models import Task, TaskEvent, Taskset, TaskState, now
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
    clone,
    dependency_keys,
    event_type_values,
    paused_gc,
    priority_event,
    ready_event,
    sort_tasks,
)
from ._submit_plan import plan_submit
from .base import ChangeBatch, KnownVersion, SubmitResult


class MemoryRegistry:
    """Task Registry held in memory (lost when the object goes away). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._seq = 0
        self._tasks: dict[str, Task] = {}
        self._task_seq: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        self._feed_seqs: list[int] = []  # change feed, ascending; stale entries are skipped
        self._feed_keys: list[str] = []
        self._deps_of: dict[str, list[str]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._tasksets: dict[str, Taskset] = {}
        self._events: list[TaskEvent] = []

    def __repr__(self) -> str:
        return f"MemoryRegistry({len(self._tasks)} tasks)"

    # --- internal helpers ------------------------------------------------------------------
    def _load(self, key: str) -> Task:
        task = self._tasks.get(key)
        if task is None:
            raise TaskNotFoundError(key)
        return task

    def _store(self, task: Task) -> None:
        """Store a task (owned by the registry from now on) with a new change number."""
        self._seq += 1
        key = task.key
        self._tasks[key] = task
        self._task_seq[key] = self._seq
        self._feed_seqs.append(self._seq)
        self._feed_keys.append(key)

    def _set_deps(self, task: Task) -> None:
        key = task.key
        for old in self._deps_of.get(key, ()):
            self._dependents.get(old, set()).discard(key)
        deps = dependency_keys(task)
        self._deps_of[key] = deps
        for dep in deps:
            self._dependents.setdefault(dep, set()).add(key)

    def _add_events(self, events: Iterable[TaskEvent]) -> int:
        first = self._seq + 1
        for event in events:
            self._seq += 1
            self._events.append(replace(event, seq=self._seq, details=dict(event.details)))
        return first

    def _compact_feed(self) -> None:
        if len(self._feed_seqs) > 2 * len(self._tasks) + 1024:
            pairs = sorted((s, k) for k, s in self._task_seq.items())
            self._feed_seqs = [s for s, _ in pairs]
            self._feed_keys = [k for _, k in pairs]

    # --- tasksets --------------------------------------------------------------------------
    def submit_taskset(self, taskset: Taskset) -> SubmitResult:
        """Create or update a taskset and its tasks, atomically (see TaskRegistry)."""
        with self._lock, paused_gc():
            stamp = now()
            existing = {k: t for k, t in self._tasks.items() if t.taskset == taskset.name}

            def outside(keys: Iterable[str]) -> dict[str, TaskState]:
                return {k: self._tasks[k].state for k in keys if k in self._tasks}

            plan = plan_submit(taskset, existing, outside, stamp)
            old = self._tasksets.get(taskset.name)
            self._tasksets[taskset.name] = replace(
                taskset, tasks=[], created_at=old.created_at if old else taskset.created_at
            )
            for task in plan.created + plan.updated:
                self._store(clone(task))
            self._positions.update(plan.positions)
            for task in plan.created + plan.deps_changed:
                self._set_deps(task)
            self._add_events(plan.events)
            self._compact_feed()
            return plan.result

    def list_tasksets(self) -> list[Taskset]:
        """Every taskset (``tasks`` left empty; use list_tasks)."""
        with self._lock:
            return [replace(self._tasksets[n], tasks=[]) for n in sorted(self._tasksets)]

    def get_taskset(self, name: str) -> Taskset | None:
        """One taskset with its tasks (in submit order), or None."""
        with self._lock:
            ts = self._tasksets.get(name)
            if ts is None:
                return None
            tasks = [t for t in self._tasks.values() if t.taskset == name]
            tasks.sort(key=lambda t: (self._positions.get(t.key, 0), t.key))
            return replace(ts, tasks=[clone(t) for t in tasks])

    # --- tasks -----------------------------------------------------------------------------
    def get_task(self, key: str) -> Task:
        """The task with key ``taskset/id``; raises TaskNotFoundError."""
        with self._lock:
            return clone(self._load(key))

    def get_tasks(self, keys: Iterable[str]) -> dict[str, Task]:
        """Several tasks by key; missing keys are left out."""
        with self._lock:
            return {k: clone(self._tasks[k]) for k in dict.fromkeys(keys) if k in self._tasks}

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
        states = set(as_states(state))
        with self._lock:
            found = [
                t
                for t in self._tasks.values()
                if (not states or t.state in states)
                and (skill is None or t.required_skill == skill)
                and (taskset is None or t.taskset == taskset)
                and (tenant is None or t.tenant == tenant)
            ]
            found = sort_tasks(found, order_by, self._task_seq.__getitem__)
            end = None if limit is None else offset + limit
            return [clone(t) for t in found[offset:end]]

    def count_tasks(self, *, taskset: str | None = None) -> dict[TaskState, int]:
        """Number of tasks per state (every state present, zero included)."""
        counts = dict.fromkeys(TaskState, 0)
        with self._lock:
            for t in self._tasks.values():
                if taskset is None or t.taskset == taskset:
                    counts[t.state] += 1
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
        with self._lock:
            new = self._transition_in(key, target, expected, event, checked, now())
            self._compact_feed()
            return clone(new)

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Several compare-and-sets at once (see SQLiteRegistry.transition_many)."""
        checked = check_requests(requests)
        out: list[TransitionResult] = []
        with self._lock:
            stamp = now()
            for req, target, updates in checked:
                try:
                    new = self._transition_in(req.key, target, req.expected, req.event,
                                              updates, stamp)
                except (InvalidTransitionError, TaskNotFoundError) as exc:
                    out.append(exc)
                else:
                    out.append(clone(new))
            self._compact_feed()
        return out

    def _transition_in(
        self,
        key: str,
        target: TaskState,
        expected: TaskState | Sequence[TaskState] | None,
        event: TaskEvent | None,
        checked: dict[str, Any],
        stamp: float,
    ) -> Task:
        task = self._load(key)
        check_transition(key, task.state, target, expected)
        new = apply_transition(task, target, checked, stamp)
        self._store(new)
        if "dependencies" in checked:
            self._set_deps(new)
        events = [bind_event(event, key)] if event is not None else []
        if target is TaskState.DONE:
            for dep_key in sorted(self._dependents.get(key, ())):
                dependent = self._tasks.get(dep_key)
                if dependent is None or dependent.state is not TaskState.BLOCKED:
                    continue
                if all(
                    d in self._tasks and self._tasks[d].state is TaskState.DONE
                    for d in self._deps_of.get(dep_key, ())
                ):
                    self._store(apply_transition(dependent, TaskState.READY, {}, stamp))
                    events.append(ready_event(dep_key, stamp, f"dependency {key} done"))
        self._add_events(events)
        return new

    def update_task(self, key: str, *, event: TaskEvent | None = None, **updates: Any) -> Task:
        """Change fields of UPDATABLE_FIELDS (not the state) plus an event, atomically."""
        checked = check_updates(key, updates)
        with self._lock:
            new = apply_updates(self._load(key), checked, now())
            self._store(new)
            if "dependencies" in checked:
                self._set_deps(new)
            if event is not None:
                self._add_events([bind_event(event, key)])
            self._compact_feed()
            return clone(new)

    def set_priority(self, key: str, priority: int) -> Task:
        """Persist a new priority and write a PriorityChanged event (old and new in details)."""
        priority = int(priority)
        with self._lock:
            task = self._load(key)
            stamp = now()
            new = apply_updates(task, {"priority": priority}, stamp)
            self._store(new)
            self._add_events([priority_event(key, task.priority, priority, stamp)])
            self._compact_feed()
            return clone(new)

    # --- change feed -----------------------------------------------------------------------
    def current_seq(self) -> int:
        """The latest change sequence number."""
        with self._lock:
            return self._seq

    def changes_since(self, seq: int, limit: int | None = None, *,
                      known: KnownVersion | None = None) -> ChangeBatch:
        """Tasks whose latest change is after ``seq``, in sequence order (``known`` is not
        asked: nothing is decoded here)."""
        with self._lock:
            out: list[Task] = []
            last = seq
            if limit is not None and limit <= 0:
                return ChangeBatch([], seq)
            for i in range(bisect_right(self._feed_seqs, seq), len(self._feed_seqs)):
                s, key = self._feed_seqs[i], self._feed_keys[i]
                if self._task_seq.get(key) != s:
                    continue  # superseded by a later change of the same task
                out.append(clone(self._tasks[key]))
                last = s
                if limit is not None and len(out) >= limit:
                    break
            if limit is not None and len(out) >= limit and out:
                return ChangeBatch(out, last)
            return ChangeBatch(out, max(self._seq, seq))

    # --- events ----------------------------------------------------------------------------
    def record_event(self, event: TaskEvent) -> TaskEvent:
        """Store an event; returns it with its ``seq`` set."""
        with self._lock:
            self._add_events([event])
            stored = self._events[-1]
            return replace(stored, details=dict(stored.details))

    def record_events(self, events: Iterable[TaskEvent]) -> None:
        """Store several events in one transaction."""
        events = list(events)
        with self._lock:
            self._add_events(events)

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
        types = set(event_type_values(event_types))
        with self._lock:
            events = self._events[::-1] if newest_first else list(self._events)
        out: list[TaskEvent] = []
        for e in events:
            if (
                (task_key is None or e.task_key == task_key)
                and (since is None or e.timestamp >= since)
                and (until is None or e.timestamp < until)
                and (after_seq is None or (e.seq or 0) > after_seq)
                and (not types or e.event_type.value in types)
            ):
                out.append(replace(e, details=dict(e.details)))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def close(self) -> None:
        """Nothing to release; kept for the protocol."""


__all__ = ["MemoryRegistry"]
