"""Planning a taskset submit, shared by the registries: what to insert, update and record.

:func:`plan_submit` decides, from the submitted taskset and its tasks already stored, which
tasks are created (and in which state), which change, their dependency rows and events; each
registry then stores the plan its own way. :func:`created_event_rows` gives the SQLite
registry the rows of the TaskCreated events straight from the plan.
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
KEPT_SUBMIT_STATES = frozenset({TaskState.DONE, TaskState.CANCELLED})


def normalize_tasks(taskset: Taskset) -> list[Task]:
    """The submitted tasks as members of ``taskset`` (name, default tenant), in file order.

    Refuses what would corrupt the registry: duplicate ids and ids containing '/'.
    """
    out: list[Task] = []
    seen: set[str] = set()
    default_tenant = taskset.tenant or taskset.name
    for task in taskset.tasks:
        if "/" in task.id or not task.id:
            raise RegistryError(
                f"taskset {taskset.name!r}: task id {task.id!r} is invalid; ids are non-empty "
                "and contain no '/'"
            )
        if task.id in seen:
            raise RegistryError(
                f"taskset {taskset.name!r}: task id {task.id!r} appears twice; ids are unique "
                "within a taskset"
            )
        seen.add(task.id)
        tenant = task.tenant
        if not tenant or tenant == task.taskset:  # defaulted from its (old) taskset name
            tenant = default_tenant
        # A shallow copy: the registry stores deep copies or serialises, never these objects.
        new = shallow_copy(task)
        new.taskset = taskset.name
        new.tenant = tenant
        out.append(new)
    return out


@dataclass
class SubmitPlan:
    """What a submit writes: tasks to insert or replace, dependency rows, events.

    The TaskCreated events are kept as the created tasks' states (``created_states``, in the
    order of ``created`` and ``result.created``) and built as events on first use of
    :attr:`events`; the SQLite registry writes their rows without them
    (:func:`created_event_rows`).
    """

    result: SubmitResult
    created: list[Task] = field(default_factory=list)
    updated: list[Task] = field(default_factory=list)  # full new rows of existing tasks
    deps_changed: list[Task] = field(default_factory=list)  # existing tasks with new deps
    later_events: list[TaskEvent] = field(default_factory=list)  # after the TaskCreated ones
    positions: dict[str, int] = field(default_factory=dict)
    dep_keys: dict[str, list[str]] = field(default_factory=dict)  # of every submitted task
    created_states: list[TaskState] = field(default_factory=list)
    stamp: float = 0.0
    _events: list[TaskEvent] | None = None

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

    ``outside_states`` answers the states of dependency keys outside this taskset.
    """
    tasks = normalize_tasks(taskset)
    name = taskset.name
    prefix = f"{name}/"
    keys = [prefix + t.id for t in tasks]
    plan = SubmitPlan(result=SubmitResult(taskset=name), stamp=now)
    result = plan.result
    plan.positions = dict(zip(keys, range(len(keys)), strict=True))
    state_of: dict[str, TaskState] = {k: t.state for k, t in existing.items()}
    blocked, done, ready = TaskState.BLOCKED, TaskState.DONE, TaskState.READY
    kept = KEPT_SUBMIT_STATES
    new_items: list[tuple[str, Task]] = []
    dep_lists = plan.dep_keys
    for key, task in zip(keys, tasks, strict=True):
        if key not in existing:
            new_items.append((key, task))
            state_of[key] = task.state if task.state in kept else blocked
        deps = task.dependencies
        dep_lists[key] = [d if "/" in d else prefix + d for d in deps] if deps else []
    outside = {d for deps in dep_lists.values() for d in deps if d not in state_of}
    if outside:
        state_of.update(outside_states(outside))

    def all_done(key: str) -> bool:
        return all(state_of.get(d) is done for d in dep_lists[key])

    state_get = state_of.get
    created, created_keys, states = plan.created, result.created, plan.created_states
    for key, task in new_items:
        state = task.state
        if state not in kept:
            state = ready
            for dep in dep_lists[key]:  # READY when every dependency is DONE
                if state_get(dep) is not done:
                    state = blocked
                    break
            task.state = state_of[key] = state
        task.created_at = task.updated_at = now
        if state is ready:
            task.ready_at = now
        elif state is done and task.finished_at is None:
            task.finished_at = now
        created.append(task)
        created_keys.append(key)
        states.append(state)
    if len(created_keys) == len(keys):  # a new taskset: nothing else to compare
        result.ready.extend([key for key, state in zip(created_keys, states, strict=True)
                             if state is ready])
        return plan
    created_set = set(created_keys)
    for key, task in zip(keys, tasks, strict=True):
        if key in created_set:
            if task.state is TaskState.READY:
                result.ready.append(key)
            continue
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
