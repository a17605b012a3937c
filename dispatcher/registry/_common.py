"""Behaviour shared by the registry implementations, so that they cannot drift apart.

Both :class:`~.sqlite.SQLiteRegistry` and :class:`~.memory.MemoryRegistry` validate transitions
and updates, plan a taskset submit and order tasks through the functions here; they differ only
in how they store the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidTransitionError, RegistryError, TaskNotFoundError
from ..models import (
    ALLOWED_TRANSITIONS,
    EventType,
    Resources,
    Task,
    TaskEvent,
    Taskset,
    TaskState,
    Usage,
    shallow_copy,
    task_key,
)
from ..yaml_source import paused_gc  # noqa: F401 - the registries import it from here
from .base import UPDATABLE_FIELDS, SubmitResult

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

#: Orders accepted by ``list_tasks(order_by=...)``.
ORDER_BY = ("key", "priority", "updated")

#: States a new task may be submitted in (a checked Kiro box is DONE); others are computed.
KEPT_SUBMIT_STATES = frozenset({TaskState.DONE, TaskState.CANCELLED})


def clone(task: Task, **changes: Any) -> Task:
    """A deep-enough copy of ``task`` (like Task.copy, ~10x faster) with ``changes`` set.

    Values in ``changes`` must already be normalised (see :func:`check_updates`).
    """
    new = shallow_copy(task)
    new.dependencies = list(task.dependencies)
    new.metadata = dict(task.metadata)
    new.artifacts = list(task.artifacts)
    new.agent_options = dict(task.agent_options)
    res = task.resources
    new.resources = Resources(res.cpu, res.memory_mb)
    if task.command is not None:
        new.command = list(task.command)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


@dataclass(frozen=True)
class TransitionRequest:
    """One compare-and-set of :meth:`transition_many` (the arguments of ``transition``)."""

    key: str
    to_state: TaskState
    expected: TaskState | Sequence[TaskState] | None = None
    event: TaskEvent | None = None
    updates: dict[str, Any] = field(default_factory=dict)


#: What :meth:`transition_many` answers per request: the new task, or why it was refused.
TransitionResult = Task | InvalidTransitionError | TaskNotFoundError


def check_requests(
    requests: Sequence[TransitionRequest],
) -> list[tuple[TransitionRequest, TaskState, dict[str, Any]]]:
    """Targets and checked updates of a batch; raises RegistryError (nothing written) for a
    request that could never apply (an unknown field, a state that does not exist)."""
    return [(r, TaskState(r.to_state), check_updates(r.key, dict(r.updates))) for r in requests]


def as_states(state: TaskState | str | Sequence[TaskState | str] | None) -> tuple[TaskState, ...]:
    """One state or several as a tuple of :class:`TaskState` (empty for None)."""
    if state is None:
        return ()
    if isinstance(state, TaskState | str):
        return (TaskState(state),)
    return tuple(TaskState(s) for s in state)


def event_type_values(types: Sequence[Any] | None) -> tuple[str, ...]:
    """Event types given as :class:`EventType` or their string value, as stored values."""
    if not types:
        return ()
    return tuple(t.value if isinstance(t, EventType) else EventType(t).value for t in types)


def check_order_by(order_by: str) -> None:
    if order_by not in ORDER_BY:
        raise RegistryError(
            f"cannot order tasks by {order_by!r}; use one of: {', '.join(ORDER_BY)}"
        )


def check_transition(
    key: str,
    current: TaskState,
    target: TaskState,
    expected: TaskState | Sequence[TaskState] | None,
) -> None:
    """Raise InvalidTransitionError unless ``current -> target`` may happen now."""
    wanted = as_states(expected)
    if wanted and current not in wanted:
        names = " or ".join(s.value for s in wanted)
        raise InvalidTransitionError(
            key, current.value, target.value, f"expected it to be {names} (it moved on)"
        )
    if target not in ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED_TRANSITIONS[current])) or "nothing"
        raise InvalidTransitionError(
            key,
            current.value,
            target.value,
            f"not allowed by the state machine (from {current.value}: {allowed})",
        )


def check_updates(key: str, updates: dict[str, Any]) -> dict[str, Any]:
    """Validate field updates and normalise their values (copies, Resources)."""
    unknown = sorted(set(updates) - UPDATABLE_FIELDS)
    if unknown:
        hint = "use transition() to change the state" if "state" in unknown else (
            f"updatable fields: {', '.join(sorted(UPDATABLE_FIELDS))}"
        )
        raise RegistryError(f"cannot update {', '.join(unknown)} of task {key!r}; {hint}")
    out = dict(updates)
    for name in ("dependencies", "artifacts"):
        if name in out:
            out[name] = list(out[name] or [])
    for name in ("paths", "files_changed"):
        if name in out:
            out[name] = tuple(out[name] or ())
    for name in ("metadata", "agent_options"):
        if name in out:
            out[name] = dict(out[name] or {})
    if isinstance(out.get("usage"), dict):
        out["usage"] = Usage.from_dict(out["usage"])
    if "command" in out and out["command"] is not None:
        out["command"] = list(out["command"])
    if "resources" in out:
        res = out["resources"]
        out["resources"] = (
            Resources(res.cpu, res.memory_mb) if isinstance(res, Resources)
            else Resources.from_dict(res)
        )
    return out


def apply_updates(task: Task, updates: dict[str, Any], now: float) -> Task:
    """A copy of ``task`` with checked updates applied and ``updated_at`` set."""
    new = clone(task, **updates)
    new.updated_at = now
    return new


def apply_transition(task: Task, target: TaskState, updates: dict[str, Any], now: float) -> Task:
    """A copy of ``task`` in ``target`` with updates; entering READY stamps ``ready_at``."""
    new = apply_updates(task, updates, now)
    new.state = target
    if target is TaskState.READY and "ready_at" not in updates:
        new.ready_at = now
    return new


def bind_event(event: TaskEvent, key: str) -> TaskEvent:
    """The event about task ``key`` (its task_key filled in when left empty)."""
    return event if event.task_key else dataclasses.replace(event, task_key=key)


def dependency_keys(task: Task) -> list[str]:
    """Keys of a task's dependencies (ids in its taskset; an id with '/' is a full key)."""
    ts = task.taskset
    return [d if "/" in d else task_key(ts, d) for d in task.dependencies]


def ready_event(key: str, now: float, cause: str) -> TaskEvent:
    return TaskEvent(
        EventType.TASK_READY, key, timestamp=now, message=cause, details={"reason": cause}
    )


def priority_event(key: str, old: int, new: int, stamp: float) -> TaskEvent:
    return TaskEvent(
        EventType.PRIORITY_CHANGED, key, timestamp=stamp, message=f"priority {old} -> {new}",
        details={"old": old, "new": new},
    )


def with_seq(event: TaskEvent, seq: int) -> TaskEvent:
    return dataclasses.replace(event, seq=seq)


def priority_sort_key(task: Task) -> tuple[int, bool, float, str]:
    """Priority descending, then ready_at ascending (never-ready last), then key."""
    ready = task.ready_at
    return (-task.priority, ready is None, ready if ready is not None else 0.0, task.key)


def sort_tasks(tasks: list[Task], order_by: str, seq_of: Callable[[str], int]) -> list[Task]:
    if order_by == "priority":
        return sorted(tasks, key=priority_sort_key)
    if order_by == "updated":
        return sorted(tasks, key=lambda t: -seq_of(t.key))
    return sorted(tasks, key=lambda t: t.key)


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
    """What a submit writes: tasks to insert or replace, dependency rows, events."""

    result: SubmitResult
    created: list[Task] = field(default_factory=list)
    updated: list[Task] = field(default_factory=list)  # full new rows of existing tasks
    deps_changed: list[Task] = field(default_factory=list)  # existing tasks with new deps
    events: list[TaskEvent] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    dep_keys: dict[str, list[str]] = field(default_factory=dict)  # of every submitted task


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
    plan = SubmitPlan(result=SubmitResult(taskset=name))
    result = plan.result
    plan.positions = {k: i for i, k in enumerate(keys)}
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

    created_event = _CreatedEvents(now)
    created, created_keys, events = plan.created, result.created, plan.events
    for key, task in new_items:
        state = task.state
        if state not in kept:
            state = task.state = ready if all_done(key) else blocked
            state_of[key] = state
        task.created_at = task.updated_at = now
        if state is ready:
            task.ready_at = now
        elif state is done and task.finished_at is None:
            task.finished_at = now
        created.append(task)
        created_keys.append(key)
        events.append(created_event(key, state))
    if len(created_keys) == len(keys):  # a new taskset: nothing else to compare
        result.ready.extend(key for key, task in new_items if task.state is ready)
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
                plan.events.append(
                    TaskEvent(
                        EventType.TASK_UPDATED, key, timestamp=now,
                        message=f"updated {', '.join(changed)}", details={"fields": changed},
                    )
                )
            if state_event is not None:
                plan.events.append(state_event)
        if deps_changed:
            plan.deps_changed.append(new)
        if new.state is TaskState.READY:
            result.ready.append(key)
    return plan
