"""Data model of the Dispatcher: tasks, tasksets, events, pools, runners and slots.

Names and values follow the seed design document. A task is identified across tasksets by its
``key``: ``"{taskset}/{id}"``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any


def now() -> float:
    """Wall-clock time in seconds since the epoch (one place to read the clock)."""
    return time.time()


class TaskState(str, Enum):
    """Where a task is in its life."""

    BLOCKED = "blocked"  # waiting for dependencies that are not DONE yet
    READY = "ready"  # may run now (or after its retry backoff, see next_attempt_at)
    RUNNING = "running"  # a runner has been assigned and launched for it
    DONE = "done"  # finished successfully; dependents may become READY
    FAILED = "failed"  # failed for good (attempts exhausted or not retryable)
    CANCELLED = "cancelled"  # stopped by an operator; will not run unless retried

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL  # a constant set: this is asked for every task change


_TERMINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})

#: Allowed state changes. Everything else is refused with InvalidTransitionError.
ALLOWED_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.BLOCKED: frozenset({TaskState.READY, TaskState.CANCELLED}),
    TaskState.READY: frozenset({TaskState.RUNNING, TaskState.BLOCKED, TaskState.CANCELLED,
                                TaskState.FAILED}),
    TaskState.RUNNING: frozenset({TaskState.DONE, TaskState.FAILED, TaskState.READY,
                                  TaskState.CANCELLED}),
    # a DONE task goes back to READY only when landing sends it back (its gate failed)
    TaskState.DONE: frozenset({TaskState.READY}),
    TaskState.FAILED: frozenset({TaskState.READY, TaskState.BLOCKED, TaskState.CANCELLED}),
    TaskState.CANCELLED: frozenset({TaskState.READY, TaskState.BLOCKED}),
}


def can_transition(current: TaskState, target: TaskState) -> bool:
    """True when the state machine allows ``current -> target``."""
    return target in ALLOWED_TRANSITIONS[current]


class SchedulingPolicy(str, Enum):
    """How the Scheduler orders ready tasks."""

    FIFO = "fifo"  # by the time a task became ready
    PRIORITY = "priority"  # higher priority first, then ready time (optional aging)
    SKILL_BASED = "skill-based"  # priority within each skill; a full pool never blocks others
    FAIR_SHARE = "fair-share"  # tenants share capacity in proportion to their weights


class PoolType(str, Enum):
    """Where a pool runs its Agent Runners."""

    LOCAL_PROCESS = "local-process"  # child processes of the Dispatcher
    DOCKER = "docker"  # one container per runner, through the Docker Engine
    KUBERNETES = "kubernetes"  # one batch/v1 Job per runner


class EventType(str, Enum):
    """Kinds of events recorded in the registry."""

    TASK_CREATED = "TaskCreated"
    TASK_UPDATED = "TaskUpdated"
    TASK_READY = "TaskReady"
    TASK_BLOCKED = "TaskBlocked"
    TASK_ASSIGNED = "TaskAssigned"
    TASK_COMPLETED = "TaskCompleted"
    TASK_RETRIED = "TaskRetried"
    TASK_REQUEUED = "TaskRequeued"  # put back without spending an attempt (shutdown, no slot)
    TASK_FAILED = "TaskFailed"
    TASK_CANCELLED = "TaskCancelled"
    PRIORITY_CHANGED = "PriorityChanged"
    RUNNER_STARTED = "RunnerStarted"
    RUNNER_COMPLETED = "RunnerCompleted"
    RUNNER_FAILED = "RunnerFailed"
    RUNNER_LOST = "RunnerLost"
    RUNNER_TIMED_OUT = "RunnerTimedOut"
    RUNNER_ADOPTED = "RunnerAdopted"
    RUNNER_UNKNOWN = "RunnerUnknown"  # after a restart its platform could not be asked
    BUDGET_EXCEEDED = "BudgetExceeded"  # a coding agent's run crossed its budget: stopped
    RUNNER_LAUNCH_FAILED = "RunnerLaunchFailed"
    DEADLOCK_DETECTED = "DeadlockDetected"
    POOL_ENABLED = "PoolEnabled"
    POOL_DISABLED = "PoolDisabled"
    DISPATCHER_STARTED = "DispatcherStarted"
    DISPATCHER_PAUSED = "DispatcherPaused"
    DISPATCHER_RESUMED = "DispatcherResumed"
    DISPATCHER_STOPPED = "DispatcherStopped"
    LEADER_ELECTED = "LeaderElected"  # ha: this replica took the Lease and dispatches now
    # work flowing between tasks (R21)
    WORK_RECORDED = "WorkRecorded"  # a run's work committed on its branch and recorded
    START_CONFLICT = "StartConflict"  # its dependencies' branches do not merge
    TASK_LANDED = "TaskLanded"  # merged into the integration branch
    LAND_CONFLICT = "LandConflict"  # does not merge into the integration branch
    GATE_FAILED = "GateFailed"  # the landing check failed on the merged tree
    PATHS_OVERLAP = "PathsOverlap"  # tasks that ran at once changed the same files
    TASKSET_LANDED = "TasksetLanded"  # a landing through the dispatcher finished (its report)


_intern = sys.intern


def task_key(taskset: str, task_id: str) -> str:
    """The registry-wide key of a task (interned, like :attr:`Task.key`)."""
    return _intern(f"{taskset}/{task_id}")


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`task_key`. Task ids may contain dots but not slashes."""
    taskset, _, task_id = key.rpartition("/")
    return taskset, task_id


@dataclass(slots=True)
class Resources:
    """What one task needs while it runs."""

    cpu: float = 1.0  # cores
    memory_mb: int = 512

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Resources:
        data = data or {}
        return cls(cpu=float(data.get("cpu", 1.0)), memory_mb=int(data.get("memory_mb", 512)))


@dataclass(frozen=True)
class Usage:
    """What an agent spent: tokens, cost and turns, per attempt or summed (``a + b``).

    ``cost_usd`` is None when neither the agent reported a cost nor a price table gave one; a
    sum is None only when every part is.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of the input tokens, those read from the provider's cache
    cost_usd: float | None = None
    turns: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens (cached tokens are part of the input)."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        cost = (None if self.cost_usd is None and other.cost_usd is None
                else (self.cost_usd or 0.0) + (other.cost_usd or 0.0))
        return Usage(self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens,
                     self.cached_tokens + other.cached_tokens, cost, self.turns + other.turns)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``usage.json``, ``necroui tasks --json``)."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_tokens": self.cached_tokens, "cost_usd": self.cost_usd,
                "turns": self.turns}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        """Inverse of :meth:`to_dict`; missing or malformed numbers count as 0 (cost: None)."""
        data = data or {}

        def count(name: str) -> int:
            value = data.get(name)
            return int(value) if isinstance(value, int | float) and value >= 0 else 0

        cost = data.get("cost_usd")
        return cls(count("input_tokens"), count("output_tokens"), count("cached_tokens"),
                   float(cost) if isinstance(cost, int | float) else None, count("turns"))


@dataclass(slots=True)
class Task:
    """One unit of work for an agent. ``Task(id="1.1", title="...")`` is enough to build one.

    Its fields are slots (no per-task ``__dict__``: a 100,000-task queue is about a third of
    the memory); :func:`shallow_copy` copies one fast.
    """

    id: str
    title: str = ""
    taskset: str = "default"
    description: str = ""
    state: TaskState = TaskState.READY
    dependencies: list[str] = field(default_factory=list)  # ids in the same taskset
    required_skill: str = ""
    priority: int = 0  # higher first
    tenant: str = ""  # "" means: the taskset's name
    resources: Resources = field(default_factory=Resources)
    command: list[str] | None = None  # argv; None: the pool's agent_command
    timeout: float | None = None  # max runtime in seconds
    max_attempts: int | None = None  # None: the config's retry_max_attempts
    metadata: dict[str, Any] = field(default_factory=dict)
    repo: str | None = None  # local path or URL of the repository to work in
    optional: bool = False  # Kiro `*` tasks
    estimated_duration: float | None = None  # seconds, for the critical path and `plan`
    created_at: float = field(default_factory=now)
    ready_at: float | None = None  # when it last became READY (FIFO order)
    updated_at: float = field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0  # attempts spent (failures counted; requeues after shutdown are not)
    next_attempt_at: float | None = None  # backoff: not before this time
    last_error: str | None = None
    runner_id: str | None = None
    assigned_slot: str | None = None
    reserved_branch: str | None = None
    artifacts: list[str] = field(default_factory=list)
    # --- its work (R21): globs it declares, then what its runs produced ----------------------
    paths: tuple[str, ...] = ()  # globs of the files it touches (from the taskset)
    branch: str | None = None  # branch holding its work, in the dispatcher's clone
    base: str | None = None  # commit its work started from (base + dependencies merged)
    head: str | None = None  # last commit of its work
    commits: int = 0  # commits from base to head
    files_changed: tuple[str, ...] = ()  # files that differ between base and head
    landed: str | None = None  # integration branch its work was merged into
    gate_failed: str | None = None  # output of the landing check that refused its work
    # --- coding agents (R20): preset, its options, budgets, what was spent -----------------
    agent: str | None = None  # preset name; None: the pool's agent (else command/agent_command)
    agent_options: dict[str, Any] = field(default_factory=dict)  # over the pool's options
    max_cost_usd: float | None = None
    max_tokens: int | None = None  # input + output tokens of one attempt
    max_turns: int | None = None
    usage: Usage | None = None  # summed over the attempts; None: no agent usage recorded
    agent_summary: str | None = None  # the agent's final message (dependents' prompts)
    from_base: bool = False  # an operator's choice: start without its dependencies' work

    def __post_init__(self) -> None:
        if isinstance(self.usage, dict):
            self.usage = Usage.from_dict(self.usage)
        if not isinstance(self.state, TaskState):
            self.state = TaskState(self.state)
        if not isinstance(self.paths, tuple):
            self.paths = tuple(self.paths or ())
        if not isinstance(self.files_changed, tuple):
            self.files_changed = tuple(self.files_changed or ())
        if isinstance(self.resources, dict):
            self.resources = Resources.from_dict(self.resources)
        if not self.tenant:
            self.tenant = self.taskset

    @property
    def key(self) -> str:
        """``taskset/id``, interned: the engine keys a dozen maps by it, and every map of a
        100,000-task queue then shares one string per task instead of holding its own."""
        return _intern(f"{self.taskset}/{self.id}")

    @property
    def skill(self) -> str:
        return self.required_skill

    def copy(self, **changes: Any) -> Task:
        """A copy with ``changes`` applied (lists and dicts are copied, not shared)."""
        base = replace(
            self,
            dependencies=list(self.dependencies),
            metadata=dict(self.metadata),
            artifacts=list(self.artifacts),
            agent_options=dict(self.agent_options),
            resources=Resources(self.resources.cpu, self.resources.memory_mb),
            command=list(self.command) if self.command is not None else None,
        )
        return replace(base, **changes) if changes else base

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the R1.2 field names (``necroui tasks --json``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Resources | Usage):
                value = value.to_dict()
            elif isinstance(value, list | dict):
                value = type(value)(value)
            out[f.name] = value
        out["key"] = self.key
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(**kwargs)


def _field_copier(cls: type[Any]) -> Callable[[Any], Any]:
    """A function returning a shallow copy of a slots dataclass: every field assigned once, no
    ``__init__`` (generated like dataclasses' own methods; several times faster than
    ``copy.copy``, which matters for registries copying thousands of tasks)."""
    names = [f.name for f in fields(cls)]
    body = "".join(f"    new.{name} = old.{name}\n" for name in names)
    code = f"def copy_fields(old):\n    new = _new(_cls)\n{body}    return new\n"
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    exec(code, scope)  # noqa: S102 - code made from the field names only
    copier: Callable[[Any], Any] = scope["copy_fields"]
    copier.__doc__ = f"A shallow copy of a {cls.__name__} (lists and dicts shared)."
    return copier


#: ``shallow_copy(task)``: a new Task with the same field values (lists and dicts shared).
shallow_copy: Callable[[Task], Task] = _field_copier(Task)


@dataclass
class Taskset:
    """A named set of tasks (a spec)."""

    name: str
    tasks: list[Task] = field(default_factory=list)
    repo: str | None = None
    tenant: str | None = None
    description: str = ""
    source: str | None = None  # file it came from
    created_at: float = field(default_factory=now)


@dataclass(frozen=True)
class TaskEvent:
    """Something that happened to a task or to the Dispatcher, as recorded in the registry."""

    event_type: EventType
    task_key: str | None = None  # None for dispatcher-wide events
    timestamp: float = field(default_factory=now)
    message: str = ""
    runner_id: str | None = None
    slot_id: str | None = None
    pool: str | None = None
    duration: float | None = None  # seconds, where it applies
    details: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None  # assigned by the registry

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type.value,
            "task_key": self.task_key,
            "timestamp": self.timestamp,
            "message": self.message,
            "runner_id": self.runner_id,
            "slot_id": self.slot_id,
            "pool": self.pool,
            "duration": self.duration,
            "details": dict(self.details),
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskEvent:
        return cls(
            event_type=EventType(data["event_type"]),
            task_key=data.get("task_key"),
            timestamp=float(data.get("timestamp") or now()),
            message=data.get("message") or "",
            runner_id=data.get("runner_id"),
            slot_id=data.get("slot_id"),
            pool=data.get("pool"),
            duration=data.get("duration"),
            details=dict(data.get("details") or {}),
            seq=data.get("seq"),
        )


@dataclass
class AgentPool:
    """A place where Agent Runners run, with its limits."""

    name: str
    type: PoolType = PoolType.LOCAL_PROCESS
    max_concurrency: int = 1
    cpu_quota: float | None = None  # cores; None: no CPU limit
    memory_quota: int | None = None  # MB; None: no memory limit
    enabled: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    agent_command: list[str] | None = None  # argv template for tasks without a command
    agent: str | None = None  # coding-agent preset of the pool's tasks (dispatcher.agents)
    agent_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, PoolType):
            self.type = PoolType(self.type)


class RunnerState(str, Enum):
    """Life of one Agent Runner (one attempt of one task)."""

    LAUNCHING = "launching"  # being started on its platform
    RUNNING = "running"  # started; alive as far as we know
    COMPLETED = "completed"  # agent exited 0
    FAILED = "failed"  # agent exited non-zero, or was killed by its platform
    LOST = "lost"  # no heartbeat or no platform trace; fenced
    CANCELLED = "cancelled"  # stopped by an operator or by shutdown
    UNKNOWN = "unknown"  # after a restart its platform could not be asked; kept RUNNING
    COMMITTING = "committing"  # exited 0; its work is being committed before DONE

    @property
    def finished(self) -> bool:
        return self not in (RunnerState.LAUNCHING, RunnerState.RUNNING, RunnerState.UNKNOWN)


@dataclass
class Slot:
    """A workspace reserved for one task: a git worktree or a scratch directory.

    ``base`` is the commit its branch started from (the default branch, or the merge of the
    dependencies' work); ``merged`` the keys of the dependencies whose work it contains.
    """

    slot_id: str
    slot_path: str
    repo: str | None = None
    branch: str | None = None
    base: str | None = None
    merged: tuple[str, ...] = ()


@dataclass
class Runner:
    """A launched Agent Runner."""

    runner_id: str
    task_key: str
    pool_name: str
    slot_id: str | None = None
    slot_path: str | None = None
    handle: str | None = None  # pid / container id / job name
    state: RunnerState = RunnerState.LAUNCHING
    started_at: float = field(default_factory=now)
    attempt: int = 1
    log_path: str | None = None
    attempt_dir: str | None = None
    cpu: float = 0.0
    memory_mb: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # platform extras (pgid, start time)


@dataclass(frozen=True)
class RunnerInfo:
    """What is known of a runner now (RunnerMonitor.get_runner_status)."""

    runner_id: str
    task_key: str
    pool_name: str
    state: RunnerState
    started_at: float
    last_heartbeat: float | None
    heartbeat_age: float  # seconds since the last sign of life (or since start)
    runtime: float
    slot_id: str | None = None
    handle: str | None = None
    attempt: int = 1
    progress: str | None = None  # last progress message sent by the agent


@dataclass(frozen=True)
class PoolStatus:
    """Load and limits of one pool."""

    pool_name: str
    pool_type: PoolType
    running: int
    max_concurrency: int
    utilization: float  # running / max_concurrency, 0..1
    cpu_in_use: float
    cpu_quota: float | None
    memory_in_use: int
    memory_quota: int | None
    enabled: bool = True
    healthy: bool = True
    recent_launch_errors: int = 0
    last_error: str | None = None

    # Names used by the seed's examples.
    @property
    def current_running(self) -> int:
        return self.running

    @property
    def name(self) -> str:
        return self.pool_name
