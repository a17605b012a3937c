"""Operator controls of the engine: pause, resume, priority, retry (or start from the base),
cancel, pool on/off, land.

:meth:`Controls.apply` runs on the engine thread while the engine runs (the public
methods of DispatcherCore post a command and wait for its answer), or directly on the caller's
thread when the engine is not started; then it acts on the registry alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import (
    DispatcherError,
    DispatcherStateError,
    InvalidTransitionError,
    PoolNotFoundError,
)
from ..models import EventType, Task, TaskEvent, TaskState
from .commands import FenceOutcome
from .launch_plane import LaunchPlane
from .ownership import Ownership
from .parts import EngineParts
from .runner_table import RunnerRecord

logger = logging.getLogger(__name__)

_RETRYABLE = (TaskState.FAILED, TaskState.CANCELLED)
_WRITES = frozenset({"priority", "retry", "cancel", "land"})  # verbs that write to the registry


def _payload_key(payload: dict[str, Any]) -> str:
    key = payload.get("task") or payload.get("key") or payload.get("task_key")
    if not key or not isinstance(key, str):
        raise DispatcherError("control command needs the task key: {\"task\": \"taskset/id\"}")
    return key


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "enable", "enabled")
    return bool(value)


PRIORITY_LIMIT = 10**9  # priorities are integers within +/- this


def _priority(raw: Any, what: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise DispatcherError(f"{what} must be an integer, got {raw!r}")
    try:
        value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
    except (TypeError, ValueError, OverflowError):
        value = None
    if value is None or abs(value) > PRIORITY_LIMIT:
        raise DispatcherError(f"{what} must be an integer between -{PRIORITY_LIMIT} and "
                              f"{PRIORITY_LIMIT}, got {raw!r}")
    return value


class Controls:
    """The control verbs (engine thread, or the caller's thread when no engine runs)."""

    def __init__(self, parts: EngineParts, launches: LaunchPlane,
                 fence: Callable[[RunnerRecord, FenceOutcome, str], None],
                 after_write: Callable[[Task], None], ownership: Ownership) -> None:
        self._p = parts
        self._ownership = ownership
        self._launches = launches
        self._fence = fence
        self._after_write = after_write

    def apply(self, verb: str, payload: dict[str, Any]) -> str:
        """Apply one control verb; returns a short message, raises DispatcherError on refusal."""
        if verb in _WRITES and not self._ownership.may_act():
            leader = self._ownership.holder() or "another replica"
            raise DispatcherStateError(
                f"this dispatcher is a standby (the leader is {leader}); send {verb!r} to the "
                "leader")
        if verb == "pause":
            return self._ctl_pause(True)
        if verb == "resume":
            return self._ctl_pause(False)
        if verb == "priority":
            key = _payload_key(payload)
            if "delta" in payload:  # a relative change, applied here so that none is lost
                return self._ctl_priority(key, None, _priority(payload["delta"], "delta"))
            return self._ctl_priority(key, _priority(payload.get("priority"), "priority"), 0)
        if verb == "retry":
            return self._ctl_retry(_payload_key(payload),
                                   _truthy(payload.get("from_base", False)))
        if verb == "cancel":
            return self._ctl_cancel(_payload_key(payload))
        if verb == "pool":
            name = payload.get("pool") or payload.get("name")
            if not isinstance(name, str) or not name:
                raise DispatcherError("pool command needs {\"pool\": NAME, \"enabled\": bool}")
            return self._ctl_pool(name, _truthy(payload.get("enabled", True)))
        if verb == "land":
            return self._p.landings.request(payload)
        raise DispatcherError(
            f"unknown control verb {verb!r}; known: pause, resume, priority, retry, cancel, "
            "pool, land")

    # --- verbs -----------------------------------------------------------------------------
    def _ctl_pause(self, pause: bool) -> str:
        if not self._p.admission.pause(pause):
            return "dispatching already paused" if pause else "dispatching already running"
        self._p.events.record(TaskEvent(
            event_type=EventType.DISPATCHER_PAUSED if pause else EventType.DISPATCHER_RESUMED,
            message="dispatching paused" if pause else "dispatching resumed"))
        return "paused dispatching" if pause else "resumed dispatching"

    def _ctl_priority(self, key: str, priority: int | None, delta: int) -> str:
        task = self._p.registry.get_task(key)
        old = task.priority
        if priority is None:
            priority = max(-PRIORITY_LIMIT, min(PRIORITY_LIMIT, old + delta))
        if old == priority:
            return f"priority of {key} already {priority}"
        new = self._p.registry.set_priority(key, priority)
        self._after_write(new)
        self._p.admission.set_priority(new)
        return f"priority of {key}: {old} -> {priority}"

    def _ctl_retry(self, key: str, from_base: bool = False) -> str:
        """Retry ``key`` now; ``from_base``: its next start leaves out its dependencies' work
        (kept on the task until it is DONE), else it starts from their work again."""
        task = self._p.registry.get_task(key)
        if task.state in _RETRYABLE:
            return self._retry_one(task, from_base)
        if task.state is TaskState.READY:
            return self._retry_ready(task, from_base)
        if from_base:
            raise InvalidTransitionError(key, task.state.value, TaskState.READY.value,
                                         "only a READY, FAILED or CANCELLED task can be "
                                         "started from the base")
        if task.state is TaskState.BLOCKED:
            roots = self._failed_roots(task)
            if not roots:
                raise DispatcherStateError(
                    f"{key} is BLOCKED on dependencies that have not finished yet; "
                    "nothing to retry")
            messages = [self._retry_one(root) for root in roots]
            noun = "dependency" if len(roots) == 1 else "dependencies"
            return f"{key} was blocked by {len(roots)} failed {noun}: " + "; ".join(messages)
        raise InvalidTransitionError(key, task.state.value, TaskState.READY.value,
                                     "only FAILED, CANCELLED or blocked tasks can be retried")

    def _retry_ready(self, task: Task, from_base: bool) -> str:
        """A READY task: skip its backoff, or offer it again after a start conflict."""
        key = task.key
        held = self._p.admission.conflict_of(key)
        if not task.next_attempt_at and held is None and task.from_base == from_base:
            return f"{key} is already READY"
        if held is not None:
            what = ("start it from the base (its dependencies' work left out)" if from_base
                    else "start it from its dependencies' work again")
            message, answer = f"retry after a start conflict: {what}", f"{key}: {what}"
        elif task.next_attempt_at:
            message, answer = "retry now (backoff skipped by an operator)", \
                f"{key} retries now (backoff skipped)"
        else:
            message = answer = f"{key} starts from " + (
                "the base" if from_base else "its dependencies' work")
        new = self._p.events.update(key, next_attempt_at=None, from_base=from_base,
                                    event=TaskEvent(event_type=EventType.TASK_RETRIED,
                                                    task_key=key, message=message,
                                                    details={"manual": True,
                                                             "from_base": from_base}))
        self._after_write(new)
        self._p.admission.release_conflict(key)
        return answer

    def _retry_one(self, task: Task, from_base: bool = False) -> str:
        deps = self._p.registry.get_tasks(
            [f"{task.taskset}/{d}" for d in task.dependencies]) if task.dependencies else {}
        all_done = all(d.state is TaskState.DONE for d in deps.values()) and len(deps) == len(
            task.dependencies)
        target = TaskState.READY if all_done else TaskState.BLOCKED
        new = self._p.events.transition(
            task.key, target, expected=task.state, attempts=0, next_attempt_at=None,
            last_error=None, finished_at=None, runner_id=None, from_base=from_base,
            event=TaskEvent(event_type=EventType.TASK_RETRIED, task_key=task.key,
                            message=f"retried by an operator (was {task.state.value}; "
                                    "attempts reset" + ("; from the base" if from_base
                                                        else "") + ")",
                            details={"manual": True, "previous_attempts": task.attempts,
                                     "from_base": from_base}))
        self._after_write(new)
        tail = " (from the base)" if from_base else ""
        return f"{task.key}: {task.state.value} -> {target.value}{tail}"

    def _failed_roots(self, task: Task) -> list[Task]:
        """FAILED/CANCELLED tasks among the (transitive) dependencies of ``task``."""
        roots: dict[str, Task] = {}
        seen: set[str] = set()
        stack = [task]
        while stack:
            current = stack.pop()
            keys = [f"{current.taskset}/{d}" for d in current.dependencies]
            for dep in self._p.registry.get_tasks(k for k in keys if k not in seen).values():
                seen.add(dep.key)
                if dep.state in _RETRYABLE:
                    roots[dep.key] = dep
                elif dep.state is not TaskState.DONE:
                    stack.append(dep)
        return list(roots.values())

    def _ctl_cancel(self, key: str) -> str:
        task = self._p.registry.get_task(key)
        if task.state.terminal:
            raise InvalidTransitionError(key, task.state.value, TaskState.CANCELLED.value,
                                         "the task has already finished")
        if key in self._p.work:  # its runner is gone: nothing to stop, DONE in a moment
            raise InvalidTransitionError(key, task.state.value, TaskState.CANCELLED.value,
                                         "its run succeeded and its work is being committed "
                                         "on its branch; once DONE, retry it to run it again")
        pending = self._launches.request_stop(key, FenceOutcome.CANCELLED,
                                              "cancelled by an operator")
        if pending is not None:
            return f"cancelling {key}: stopping runner {pending.runner_id} once it has started"
        rec = self._p.runners.for_task(key)
        if rec is not None:
            rid = rec.runner_id
            fence = self._p.fencer.state(rid)
            if fence is not None:
                if fence.outcome in (FenceOutcome.LOST, FenceOutcome.TIMEOUT,
                                     FenceOutcome.SHUTDOWN, FenceOutcome.REPORTED,
                                     FenceOutcome.BUDGET):
                    # the operator's cancel wins: once the runner is gone, the task is CANCELLED
                    self._p.fencer.override(rid, FenceOutcome.CANCELLED, "cancelled by an operator")
                    return f"cancelling {key}: its runner {rid} is being stopped"
                return f"{key} is already being stopped ({fence.outcome.value})"
            self._fence(rec, FenceOutcome.CANCELLED, "cancelled by an operator")
            return f"cancelling {key}: stopping runner {rid}"
        new = self._p.events.transition(
            key, TaskState.CANCELLED, expected=task.state, runner_id=None,
            event=TaskEvent(event_type=EventType.TASK_CANCELLED, task_key=key,
                            message=f"cancelled by an operator (was {task.state.value})",
                            runner_id=task.runner_id))
        self._after_write(new)
        self._p.admission.remove(key)
        blocked = self._dependents_count(new)
        tail = f"; {blocked} dependent task(s) now blocked" if blocked else ""
        return f"cancelled {key}{tail}"

    def _dependents_count(self, task: Task) -> int:
        return self._p.book.dependents_count(task)

    def _ctl_pool(self, name: str, enabled: bool) -> str:
        if name not in self._p.seed.pools.pools:
            raise PoolNotFoundError(name, sorted(self._p.seed.pools.pools))
        pool = self._p.seed.pools.pools[name]
        if pool.enabled == enabled:
            return f"pool {name} already {'enabled' if enabled else 'disabled'}"
        self._p.admission.set_pool_enabled(name, enabled)
        self._p.events.record(TaskEvent(
            event_type=EventType.POOL_ENABLED if enabled else EventType.POOL_DISABLED,
            pool=name, message=f"pool {name} {'enabled' if enabled else 'disabled'}"))
        return f"pool {name} {'enabled' if enabled else 'disabled (running tasks finish)'}"
