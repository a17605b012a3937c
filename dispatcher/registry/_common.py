"""Behaviour shared by the registry implementations, so that they cannot drift apart.

Both :class:`~.sqlite.SQLiteRegistry` and :class:`~.memory.MemoryRegistry` validate transitions
and updates, plan a taskset submit and order tasks through the functions here; they differ only
in how they store the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidTransitionError, RegistryError, TaskNotFoundError
from ..models import (
    ALLOWED_TRANSITIONS,
    EventType,
    Resources,
    Task,
    TaskEvent,
    TaskState,
    Usage,
    shallow_copy,
    task_key,
)
from ..yaml_source import paused_gc  # noqa: F401 - the registries import it from here
from .base import UPDATABLE_FIELDS

#: Orders accepted by ``list_tasks(order_by=...)``.
ORDER_BY = ("key", "priority", "updated")

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
