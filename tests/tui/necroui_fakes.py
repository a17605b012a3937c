"""A scripted stand-in for DispatcherCore: same control methods, deterministic Snapshots.

Every timestamp derives from ``T0`` so that snapshot tests with a frozen clock are stable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.errors import InvalidTransitionError, PoolNotFoundError, TaskNotFoundError
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolStatus,
    PoolType,
    RunnerState,
    Task,
    TaskEvent,
    Taskset,
    TaskState,
    Usage,
)
from necrocode.dispatcher.snapshot import (
    Counters,
    FinishedTaskView,
    Pending,
    PendingReason,
    QueuedTaskView,
    RunningTaskView,
    Snapshot,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def frozen_clock() -> float:
    return T0


class FakeRegistry:
    """The registry reads the console makes, over a dict of tasks and a list of events."""

    def __init__(self, tasks: Iterable[Task], events: Iterable[TaskEvent] = ()) -> None:
        self.tasks: dict[str, Task] = {t.key: t for t in tasks}
        self.events: list[TaskEvent] = list(events)

    def get_task(self, key: str) -> Task:
        try:
            return self.tasks[key].copy()
        except KeyError:
            raise TaskNotFoundError(key) from None

    def get_tasks(self, keys: Iterable[str]) -> dict[str, Task]:
        return {k: self.tasks[k].copy() for k in keys if k in self.tasks}

    def list_tasks(self, *, taskset: str | None = None, state: Any = None,
                   **_: Any) -> list[Task]:
        out = [t.copy() for t in self.tasks.values() if taskset in (None, t.taskset)]
        if state is not None:
            states = {state} if isinstance(state, TaskState) else set(state)
            out = [t for t in out if t.state in states]
        return sorted(out, key=lambda t: t.key)

    def list_tasksets(self) -> list[Taskset]:
        return [Taskset(name=n) for n in sorted({t.taskset for t in self.tasks.values()})]

    def count_tasks(self, *, taskset: str | None = None) -> dict[TaskState, int]:
        counts = dict.fromkeys(TaskState, 0)
        for t in self.tasks.values():
            if taskset in (None, t.taskset):
                counts[t.state] += 1
        return counts

    def get_events(self, *, task_key: str | None = None, **_: Any) -> list[TaskEvent]:
        return [e for e in self.events if task_key in (None, e.task_key)]

    def record(self, event: TaskEvent) -> None:
        self.events.append(replace(event, seq=len(self.events) + 1))


def demo_tasks(extra: int = 0) -> list[Task]:
    """A deterministic taskset in every state, plus ``extra`` READY filler tasks."""
    S = TaskState
    spec: list[tuple[str, str, TaskState, list[str], str, int]] = [
        ("1.1", "Set up repository", S.DONE, [], "backend", 5),
        ("1.2", "Define data model", S.DONE, ["1.1"], "backend", 5),
        ("1.3", "Write API schema", S.FAILED, ["1.1"], "backend", 3),
        ("2.1", "Implement chat service", S.RUNNING, ["1.2"], "backend", 4),
        ("2.2", "Message storage", S.RUNNING, ["1.2"], "backend", 2),
        ("2.3", "Login page", S.RUNNING, ["1.1"], "frontend", 1),
        ("3.1", "Chat window UI", S.READY, ["1.1"], "frontend", 2),
        ("3.2", "Notifications", S.READY, ["1.1"], "frontend", 0),
        ("3.3", "API client", S.BLOCKED, ["1.3"], "frontend", 1),
        ("4.1", "Integration tests", S.BLOCKED, ["2.1", "2.2", "3.1"], "qa", 0),
        ("4.2", "Load tests", S.BLOCKED, ["4.1"], "qa", 0),
        ("5.1", "Release notes", S.CANCELLED, ["4.2"], "docs", 0),
    ]
    tasks: list[Task] = []
    for i, (tid, title, state, deps, skill, prio) in enumerate(spec):
        t = Task(id=tid, title=title, taskset="chat", state=state, dependencies=deps,
                 required_skill=skill, priority=prio, created_at=T0 - 3600 + i,
                 updated_at=T0 - 60, estimated_duration=60.0 * (i % 4 + 1))
        if state in (S.READY, S.RUNNING, S.DONE, S.FAILED):
            t.ready_at = T0 - 900 + 30 * i
        if state in (S.RUNNING, S.DONE, S.FAILED):
            t.started_at = T0 - 600 + 20 * i
            t.attempts = 1
        if state in (S.DONE, S.FAILED, S.CANCELLED):
            t.finished_at = T0 - 300 + 10 * i
        if state is S.FAILED:
            t.last_error = "exit code 2: pytest failed (3 tests)"
            t.attempts = 3
        if state is S.RUNNING:
            t.runner_id = f"r-chat-{tid}-a1"
            t.assigned_slot = f"slot-{i}"
        tasks.append(t)
    for j in range(extra):
        tasks.append(Task(id=f"f{j:05d}", title=f"Filler task {j}", taskset="bulk",
                          required_skill=("backend", "frontend", "qa")[j % 3], priority=j % 7,
                          created_at=T0 - 5000 + j, ready_at=T0 - 4000 + j, updated_at=T0))
    return tasks


def demo_events(tasks: list[Task]) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    for t in tasks:
        if t.taskset != "chat":
            continue
        events.append(TaskEvent(EventType.TASK_CREATED, t.key, timestamp=t.created_at,
                                message="submitted"))
        if t.started_at:
            events.append(TaskEvent(EventType.TASK_ASSIGNED, t.key, timestamp=t.started_at,
                                    message="assigned", pool=_pool_of(t)))
        if t.finished_at and t.state is TaskState.DONE:
            events.append(TaskEvent(EventType.TASK_COMPLETED, t.key, timestamp=t.finished_at,
                                    message="exit 0", pool=_pool_of(t)))
        if t.state is TaskState.FAILED:
            events.append(TaskEvent(EventType.TASK_FAILED, t.key, timestamp=t.finished_at or T0,
                                    message=t.last_error or ""))
    events.sort(key=lambda e: e.timestamp)
    return [replace(e, seq=i + 1) for i, e in enumerate(events)]


def _pool_of(task: Task) -> str:
    return "docker" if task.required_skill == "frontend" else "local"


class FakeEngine:
    """DispatcherCore's console-facing interface over a FakeRegistry; records control calls."""

    def __init__(self, tasks: list[Task] | None = None, *, state: str = "running") -> None:
        tasks = demo_tasks() if tasks is None else tasks
        self.registry = FakeRegistry(tasks, demo_events(tasks))
        self.config = DispatcherConfig(
            registry_path="/tmp/necro/registry.db",
            max_global_concurrency=6,
            agent_pools=[
                AgentPool("local", PoolType.LOCAL_PROCESS, max_concurrency=4),
                AgentPool("docker", PoolType.DOCKER, max_concurrency=2, cpu_quota=4.0,
                          memory_quota=8192),
            ],
        )
        self.state = state
        self.pool_enabled = {p.name: True for p in self.config.agent_pools}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.version = 1
        self.heartbeats: dict[str, float] = {}
        self.usage: dict[str, Usage] = {}  # a coding agent's usage per task (running/finished)
        self._snap: Snapshot | None = None

    # --- snapshot ------------------------------------------------------------------------------
    def bump(self) -> None:
        self.version += 1

    def snapshot(self) -> Snapshot:
        if self._snap is not None and self._snap.version == self.version:
            return self._snap
        self._snap = self._build()
        return self._snap

    def _pending(self, t: Task) -> Pending:
        if t.state is TaskState.BLOCKED:
            deps = [self.registry.tasks.get(f"{t.taskset}/{d}") for d in t.dependencies]
            bad = [d for d in deps if d and d.state in (TaskState.FAILED, TaskState.CANCELLED)]
            if bad:
                return Pending(PendingReason.BLOCKED_BY_FAILURE,
                               f"dependency {bad[0].key} {bad[0].state.value}")
            waiting = [d.id for d in deps if d and d.state is not TaskState.DONE]
            return Pending(PendingReason.WAITING_DEPENDENCIES,
                           f"waiting on {', '.join(waiting)}")
        if self.state == "paused":
            return Pending(PendingReason.PAUSED, "dispatching is paused")
        pool = _pool_of(t)
        if not self.pool_enabled[pool]:
            return Pending(PendingReason.POOL_DISABLED, f"pool '{pool}' disabled")
        return Pending(PendingReason.POOL_FULL, f"pool '{pool}' full")

    def _build(self) -> Snapshot:
        tasks = sorted(self.registry.tasks.values(), key=lambda t: t.key)
        ready = sorted((t for t in tasks if t.state is TaskState.READY),
                       key=lambda t: (-t.priority, t.ready_at or 0, t.key))
        blocked = [t for t in tasks if t.state is TaskState.BLOCKED]
        queued = tuple(
            QueuedTaskView(t.key, t.taskset, t.id, t.title, t.state, t.required_skill, t.tenant,
                           t.priority, t.ready_at, t.created_at, t.attempts, self._pending(t),
                           in_queue=t.state is TaskState.READY)
            for t in [*ready, *blocked]
        )
        running = tuple(
            RunningTaskView(t.key, t.taskset, t.id, t.title, t.required_skill, t.tenant,
                            t.priority, t.runner_id or "", _pool_of(t), t.assigned_slot,
                            t.attempts or 1, t.started_at or T0,
                            self.heartbeats.get(t.key, T0 - 5 - 20 * n), RunnerState.RUNNING,
                            progress="working", usage=self.usage.get(t.key))
            for n, t in enumerate(t for t in tasks if t.state is TaskState.RUNNING)
        )
        finished = tuple(sorted(
            (FinishedTaskView(t.key, t.taskset, t.id, t.title, t.state, t.attempts,
                              t.started_at, t.finished_at, t.last_error, _pool_of(t),
                              usage=self.usage.get(t.key))
             for t in tasks if t.state.terminal),
            key=lambda v: -(v.finished_at or 0)))
        pools = []
        for p in self.config.agent_pools:
            n = sum(1 for r in running if r.pool == p.name)
            pools.append(PoolStatus(p.name, p.type, n, p.max_concurrency,
                                    n / p.max_concurrency, float(n), p.cpu_quota, 512 * n,
                                    p.memory_quota, enabled=self.pool_enabled[p.name],
                                    healthy=p.name != "docker", recent_launch_errors=int(
                                        p.name == "docker"),
                                    last_error="image not found" if p.name == "docker" else None))
        counts = self.registry.count_tasks()
        counters = Counters(total=len(tasks), blocked=counts[TaskState.BLOCKED],
                            ready=counts[TaskState.READY], running=counts[TaskState.RUNNING],
                            done=counts[TaskState.DONE], failed=counts[TaskState.FAILED],
                            cancelled=counts[TaskState.CANCELLED],
                            usage=sum(self.usage.values(), Usage()))
        slots = sum(p.max_concurrency for p in self.config.agent_pools
                    if self.pool_enabled[p.name])
        return Snapshot(
            version=self.version, taken_at=T0, state=self.state, policy="priority",
            max_global_concurrency=self.config.max_global_concurrency,
            registry_path=str(self.config.registry_path), api_url="http://127.0.0.1:8765",
            pools=tuple(pools), queued=queued, running=running, finished=finished,
            events=tuple(self.registry.events[-50:]), counters=counters,
            throughput=(0, 1, 3, 2, 5, 4, 6, 3, 2, 4), heartbeat_timeout=60.0,
            capacity=min(slots, self.config.max_global_concurrency),
        )

    # --- control (what DispatcherCore offers) -------------------------------------------------
    def pause(self) -> str:
        self.calls.append(("pause", ()))
        self.state = "paused"
        self.bump()
        return "paused dispatching"

    def resume(self) -> str:
        self.calls.append(("resume", ()))
        self.state = "running"
        self.bump()
        return "resumed dispatching"

    def set_priority(self, task_key: str, priority: int) -> str:
        self.calls.append(("set_priority", (task_key, priority)))
        task = self.registry.tasks.get(task_key)
        if task is None:
            raise TaskNotFoundError(task_key)
        old, task.priority = task.priority, priority
        self.bump()
        return f"priority of {task_key}: {old} -> {priority}"

    def land(self, taskset: str) -> str:
        self.calls.append(("land", (taskset,)))
        return f"landing {taskset}"

    def retry(self, task_key: str, *, from_base: bool = False) -> str:
        self.calls.append(("retry", (task_key, "from_base") if from_base else (task_key,)))
        task = self.registry.tasks.get(task_key)
        if task is None:
            raise TaskNotFoundError(task_key)
        if task.state not in (TaskState.FAILED, TaskState.CANCELLED, TaskState.BLOCKED):
            raise InvalidTransitionError(task_key, task.state.value, "ready", "not failed")
        task.state, task.ready_at, task.last_error = TaskState.READY, T0, None
        self.bump()
        return f"retrying {task_key}"

    def cancel(self, task_key: str) -> str:
        self.calls.append(("cancel", (task_key,)))
        task = self.registry.tasks.get(task_key)
        if task is None:
            raise TaskNotFoundError(task_key)
        if task.state.terminal:
            raise InvalidTransitionError(task_key, task.state.value, "cancelled", "finished")
        task.state, task.finished_at = TaskState.CANCELLED, T0
        self.bump()
        return f"cancelled {task_key}"

    def set_pool_enabled(self, pool_name: str, enabled: bool) -> str:
        self.calls.append(("set_pool_enabled", (pool_name, enabled)))
        if pool_name not in self.pool_enabled:
            raise PoolNotFoundError(pool_name, list(self.pool_enabled))
        self.pool_enabled[pool_name] = enabled
        self.bump()
        return f"pool {pool_name} {'enabled' if enabled else 'disabled'}"

    def stop(self, timeout: float = 300, *, leave_running: bool = False) -> None:
        self.calls.append(("stop", (timeout, leave_running)))
