"""Planning a taskset submit, shared by the registries: what to insert, update and record.

:func:`plan_submit` decides, from the submitted taskset and its tasks already stored, which
tasks are created (and in which state), which change, their dependency rows and events; each
registry then stores the plan its own way. :func:`created_task_rows` and
:func:`created_event_rows` give the SQLite registry the rows of the created tasks and of their
TaskCreated events straight from the plan and the submitted tasks, without a copy of each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RegistryError
from ..models import EventType, Task, TaskEvent, Taskset, TaskState, shallow_copy
from ._common import clone, ready_event
from .base import SubmitResult

#: Fields that define a task (from its taskset file); a resubmit compares and updates them.
DEFINITION_FIELDS = (
    "title",
    "description",
    "dependencies",
    "required_skill",
    "priority",
    "tenant",
    "resources",
    "command",
    "timeout",
    "max_attempts",
    "metadata",
    "repo",
    "optional",
    "estimated_duration",
    "paths",
    "agent",
    "agent_options",
    "max_cost_usd",
    "max_tokens",
    "max_turns",
)

#: States a new task may be submitted in (a checked Kiro box is DONE); others are computed.
#: (:func:`plan_submit` tells them by identity.)
KEPT_SUBMIT_STATES = frozenset({TaskState.DONE, TaskState.CANCELLED})


def submitted_keys(taskset: Taskset) -> list[str]:
    """The keys of the submitted tasks, in file order.

    Refuses what would corrupt the registry: duplicate ids and ids containing '/'.
    """
    prefix = f"{taskset.name}/"
    ids = [t.id for t in taskset.tasks]
    keys = [prefix + i for i in ids]
    distinct = set(ids)
    if len(distinct) != len(ids) or "" in distinct or "/" in "".join(ids):
        seen: set[str] = set()
        for tid in ids:
            if "/" in tid or not tid:
                raise RegistryError(
                    f"taskset {taskset.name!r}: task id {tid!r} is invalid; ids are non-empty "
                    "and contain no '/'"
                )
            if tid in seen:
                raise RegistryError(
                    f"taskset {taskset.name!r}: task id {tid!r} appears twice; ids are unique "
                    "within a taskset"
                )
            seen.add(tid)
    return keys


def member_tenant(task: Task, default_tenant: str) -> str:
    """The tenant of a submitted task: its own, else (empty, or defaulted from its old
    taskset's name) the taskset's default."""
    tenant = task.tenant
    return default_tenant if not tenant or tenant == task.taskset else tenant


def as_member(task: Task, taskset: Taskset) -> Task:
    """A shallow copy of ``task`` as a member of ``taskset`` (its name, default tenant)."""
    new = shallow_copy(task)
    new.tenant = member_tenant(task, taskset.tenant or taskset.name)
    new.taskset = taskset.name
    return new


def normalize_tasks(taskset: Taskset) -> list[Task]:
    """The submitted tasks as members of ``taskset`` (name, default tenant), in file order.

    Refuses what would corrupt the registry: duplicate ids and ids containing '/'.
    """
    submitted_keys(taskset)
    # Shallow copies: the registry stores deep copies or serialises, never these objects.
    return [as_member(t, taskset) for t in taskset.tasks]


@dataclass
class SubmitPlan:
    """What a submit writes: tasks to insert or replace, dependency rows, events.

    The TaskCreated events are kept as the created tasks' states (``created_states``, in the
    order of ``created`` and ``result.created``) and built as events on first use of
    :attr:`events`; the SQLite registry writes their rows without them
    (:func:`created_event_rows`).
    """

    result: SubmitResult
    taskset: Taskset | None = None  # what was submitted; its tasks are never changed
    created_index: list[int] = field(default_factory=list)  # of created tasks in the file
    updated: list[Task] = field(default_factory=list)  # full new rows of existing tasks
    deps_changed: list[Task] = field(default_factory=list)  # existing tasks with new deps
    later_events: list[TaskEvent] = field(default_factory=list)  # after the TaskCreated ones
    positions: dict[str, int] = field(default_factory=dict)
    dep_keys: dict[str, list[str]] = field(default_factory=dict)  # of every submitted task
    created_states: list[TaskState] = field(default_factory=list)
    stamp: float = 0.0
    _events: list[TaskEvent] | None = None
    _created: list[Task] | None = None

    @property
    def created(self) -> list[Task]:
        """The created tasks as stored (copies of the submitted ones as members of the
        taskset, in their state, with their times), built on first use: the SQLite
        registry writes their rows from the submitted tasks (:func:`created_task_rows`)."""
        if self._created is None:
            self._created = []
            if self.taskset is not None:
                tasks, stamp = self.taskset.tasks, self.stamp
                for i, state in zip(self.created_index, self.created_states, strict=True):
                    task = as_member(tasks[i], self.taskset)
                    task.state = state
                    task.created_at = task.updated_at = stamp
                    if state is TaskState.READY:
                        task.ready_at = stamp
                    elif state is TaskState.DONE and task.finished_at is None:
                        task.finished_at = stamp
                    self._created.append(task)
        return self._created

    @property
    def events(self) -> list[TaskEvent]:
        """Every event of the submit: one TaskCreated per created task, then the others."""
        if self._events is None:
            make = _CreatedEvents(self.stamp)
            self._events = [make(key, state) for key, state
                            in zip(self.result.created, self.created_states, strict=True)]
            self._events += self.later_events
        return self._events


def definition_changes(old: Task, new: Task) -> list[str]:
    return [f for f in DEFINITION_FIELDS if getattr(old, f) != getattr(new, f)]


class _CreatedEvents:
    """``TaskCreated`` events of one submit, built without the frozen dataclass's ``__init__``
    (one ``object.__setattr__`` per field: the slowest part of planning 100,000 new tasks).
    Every event gets every field; the details dict per state is shared (serialised once)."""

    def __init__(self, now: float) -> None:
        proto = TaskEvent(EventType.TASK_CREATED, None, timestamp=now)
        self._fields = {f.name: getattr(proto, f.name) for f in dataclasses.fields(TaskEvent)}
        self._per_state = {s: ({"state": s.value}, f"created {s.value}") for s in TaskState}

    def __call__(self, key: str, state: TaskState) -> TaskEvent:
        details, message = self._per_state[state]
        event: TaskEvent = object.__new__(TaskEvent)
        attrs = event.__dict__
        attrs.update(self._fields)
        attrs["task_key"], attrs["message"], attrs["details"] = key, message, details
        return event


def plan_submit(
    taskset: Taskset,
    existing: dict[str, Task],
    outside_states: Callable[[Iterable[str]], dict[str, TaskState]],
    now: float,
) -> SubmitPlan:
    """Decide what submitting ``taskset`` does, given its tasks already stored (by key).

    ``outside_states`` answers the states of dependency keys outside this taskset. The
    submitted tasks are not changed (nor copied, when they are all new).
    """
    keys = submitted_keys(taskset)
    tasks = taskset.tasks
    name = taskset.name
    prefix = f"{name}/"
    plan = SubmitPlan(result=SubmitResult(taskset=name), taskset=taskset, stamp=now)
    result = plan.result
    plan.positions = dict(zip(keys, range(len(keys)), strict=True))
    state_of: dict[str, TaskState] = {k: t.state for k, t in existing.items()}
    blocked, done, ready = TaskState.BLOCKED, TaskState.DONE, TaskState.READY
    cancelled = TaskState.CANCELLED  # KEPT_SUBMIT_STATES, told by identity (no enum hash)
    new_items: list[int] = []
    dep_lists = plan.dep_keys
    for i, (key, task) in enumerate(zip(keys, tasks, strict=True)):
        if key not in existing:
            new_items.append(i)
            state = task.state
            state_of[key] = state if state is done or state is cancelled else blocked
        deps = task.dependencies
        dep_lists[key] = [d if "/" in d else prefix + d for d in deps] if deps else []
    outside = {d for deps in dep_lists.values() for d in deps if d not in state_of}
    if outside:
        state_of.update(outside_states(outside))

    def all_done(key: str) -> bool:
        return all(state_of.get(d) is done for d in dep_lists[key])

    state_get = state_of.get
    created_keys, states = result.created, plan.created_states
    for i in new_items:
        key = keys[i]
        state = tasks[i].state
        if state is not done and state is not cancelled:
            state = ready
            for dep in dep_lists[key]:  # READY when every dependency is DONE
                if state_get(dep) is not done:
                    state = blocked
                    break
            state_of[key] = state
        created_keys.append(key)
        states.append(state)
    plan.created_index = new_items
    if len(created_keys) == len(keys):  # a new taskset: nothing else to compare
        result.ready.extend([key for key, state in zip(created_keys, states, strict=True)
                             if state is ready])
        return plan
    created_state = dict(zip(created_keys, states, strict=True))
    for key, submitted in zip(keys, tasks, strict=True):
        if key in created_state:
            if created_state[key] is ready:
                result.ready.append(key)
            continue
        task = as_member(submitted, taskset)
        old = existing[key]
        changed = definition_changes(old, task)
        new = clone(old, **{f: getattr(task, f) for f in changed}) if changed else old
        state_event: TaskEvent | None = None
        deps_changed = "dependencies" in changed
        if old.state is TaskState.BLOCKED or (old.state is TaskState.READY and deps_changed):
            target = TaskState.READY if all_done(key) else TaskState.BLOCKED
            if target is not old.state:
                if new is old:
                    new = clone(old)
                new.state = target
                if target is TaskState.READY:
                    new.ready_at = now
                    state_event = ready_event(key, now, "dependencies done")
                else:
                    state_event = TaskEvent(
                        EventType.TASK_BLOCKED, key, timestamp=now,
                        message="waits for dependencies", details={"reason": "dependencies"},
                    )
        if new is old:
            result.unchanged.append(key)
        else:
            new.updated_at = now
            plan.updated.append(new)
            result.updated.append(key)
            if changed:
                plan.later_events.append(
                    TaskEvent(
                        EventType.TASK_UPDATED, key, timestamp=now,
                        message=f"updated {', '.join(changed)}", details={"fields": changed},
                    )
                )
            if state_event is not None:
                plan.later_events.append(state_event)
        if deps_changed:
            plan.deps_changed.append(new)
        if new.state is TaskState.READY:
            result.ready.append(key)
    return plan


def created_task_rows(plan: SubmitPlan, first_seq: int,
                      row: Callable[[Task, str, str, str, TaskState, float, int, int], Any],
                      ) -> list[Any]:
    """Rows of the created tasks of ``plan`` (``row(task, key, taskset, tenant, state, stamp,
    seq, position)`` of each submitted task), numbered from ``first_seq``: what
    :attr:`SubmitPlan.created` holds, without copying the tasks."""
    taskset = plan.taskset
    if taskset is None:
        return []
    tasks, stamp, name = taskset.tasks, plan.stamp, taskset.name
    default_tenant = taskset.tenant or name
    done = TaskState.DONE
    rows = []
    for j, (i, key, state) in enumerate(zip(plan.created_index, plan.result.created,
                                            plan.created_states, strict=True)):
        task = tasks[i]
        tenant = task.tenant
        if not tenant or tenant == task.taskset:
            tenant = default_tenant
        if state is done and task.finished_at is None:  # finished at the submit's time
            task = shallow_copy(task)
            task.finished_at = stamp
        rows.append(row(task, key, name, tenant, state, stamp, first_seq + j, i))
    return rows


def created_event_rows(plan: SubmitPlan, first_seq: int,
                       dumps: Callable[[Any], str]) -> list[tuple[Any, ...]]:
    """Rows of the TaskCreated events of ``plan`` (the SQLite ``events`` columns), numbered
    from ``first_seq``: what :attr:`SubmitPlan.events` holds first, without the events."""
    kind, stamp = EventType.TASK_CREATED.value, plan.stamp
    per_state = {s: (f"created {s.value}", dumps({"state": s.value})) for s in TaskState}
    return [
        (first_seq + i, key, stamp, kind, per_state[state][0], None, None, None, None,
         per_state[state][1])
        for i, (key, state) in enumerate(zip(plan.result.created, plan.created_states,
                                             strict=True))
    ]
