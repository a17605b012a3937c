"""Frozen views of the engine's state, published by the engine thread after each change.

Readers (the console, the headless printer, the HTTP status endpoint, metrics) take the newest
:class:`Snapshot` and never touch engine internals. Everything here is immutable: tuples, frozen
dataclasses. ``version`` grows with every publication; per-row ``rev`` numbers let a reader
update only rows that changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .models import PoolStatus, RunnerState, Task, TaskEvent, TaskState, Usage

if TYPE_CHECKING:
    from .landing import LandReport


def work_fields(task: Task, branch: str | None = None) -> dict[str, Any]:
    """The work fields of a view, from the task (``branch``: its slot's, while it runs)."""
    return {"branch": branch or task.branch or task.reserved_branch, "head": task.head,
            "commits": task.commits, "files_changed": task.files_changed,
            "landed": task.landed, "gate_failed": task.gate_failed}


class PendingReason(str, Enum):
    """Why a queued task is not running now (B1)."""

    QUEUED = "queued"  # placeable; waits for its turn in this round
    WAITING_DEPENDENCIES = "waiting_dependencies"  # BLOCKED on unfinished dependencies
    BLOCKED_BY_FAILURE = "blocked_by_failure"  # a dependency FAILED or was CANCELLED
    POOL_FULL = "pool_full"  # every pool for its skill is at max_concurrency
    GLOBAL_LIMIT = "global_limit"  # max_global_concurrency reached
    CPU_QUOTA = "cpu_quota"  # its pools lack CPU quota for it now
    MEMORY_QUOTA = "memory_quota"  # its pools lack memory quota for it now
    EXCEEDS_QUOTA = "exceeds_quota"  # needs more than any mapped pool's quota: never placeable
    NO_SLOT = "no_slot"  # no free workspace slot for its repository
    RETRY_BACKOFF = "retry_backoff"  # waiting until next_attempt_at
    PAUSED = "paused"  # dispatching is paused
    NO_POOL_FOR_SKILL = "no_pool_for_skill"  # no skill_mapping entry and no default
    POOL_DISABLED = "pool_disabled"  # every mapped pool is disabled
    POOL_UNHEALTHY = "pool_unhealthy"  # mapped pools fail to launch runners
    DEADLOCK = "deadlock"  # part of a dependency cycle
    OVER_BUDGET = "over_budget"  # its tenant or taskset spent its coding-agent budget
    INVALID_TASK = "invalid_task"  # a number out of range (written by another tool): never runs
    START_CONFLICT = "start_conflict"  # its dependencies' work does not merge: the operator acts
    PATHS = "paths"  # its declared paths overlap those of a running task of its repository


@dataclass(frozen=True)
class Pending:
    """A pending reason with its human sentence, e.g. "pool 'docker' full (4/4)"."""

    reason: PendingReason
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class QueuedTaskView:
    """A task waiting to run (READY or BLOCKED), as the console shows it (slots: one per
    queued task, 100,000 of them in a big queue)."""

    key: str
    taskset: str
    task_id: str
    title: str
    state: TaskState
    skill: str
    tenant: str
    priority: int
    ready_at: float | None
    created_at: float
    attempts: int
    pending: Pending
    next_attempt_at: float | None = None
    in_queue: bool = True  # READY and waiting for its turn (it has a queue position)
    # its work (R21): the branch and what its last run recorded, landing
    branch: str | None = None
    head: str | None = None
    commits: int = 0
    files_changed: tuple[str, ...] = ()
    landed: str | None = None
    gate_failed: str | None = None
    rev: int = 0


@dataclass(frozen=True)
class RunningTaskView:
    """A task with a live runner."""

    key: str
    taskset: str
    task_id: str
    title: str
    skill: str
    tenant: str
    priority: int
    runner_id: str
    pool: str
    slot_id: str | None
    attempt: int
    started_at: float
    last_sign_of_life: float  # heartbeat, process check or log line
    runner_state: RunnerState
    handle: str | None = None
    progress: str | None = None
    log_path: str | None = None
    # its work (R21): the branch and what its last run recorded, landing
    branch: str | None = None
    head: str | None = None
    commits: int = 0
    files_changed: tuple[str, ...] = ()
    landed: str | None = None
    gate_failed: str | None = None
    agent: str | None = None  # the coding agent's preset (None: a plain command)
    usage: Usage | None = None  # the coding agent's usage so far in this attempt
    rev: int = 0


@dataclass(frozen=True)
class FinishedTaskView:
    """A task that reached DONE, FAILED or CANCELLED."""

    key: str
    taskset: str
    task_id: str
    title: str
    state: TaskState
    attempts: int
    started_at: float | None
    finished_at: float | None
    last_error: str | None
    pool: str | None = None
    # its work (R21): the branch and what its last run recorded, landing
    branch: str | None = None
    head: str | None = None
    commits: int = 0
    files_changed: tuple[str, ...] = ()
    landed: str | None = None
    gate_failed: str | None = None
    usage: Usage | None = None  # the coding agent's usage over every attempt
    rev: int = 0

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)


@dataclass(frozen=True)
class Counters:
    """Totals since the engine started (and task totals from the registry)."""

    total: int = 0
    blocked: int = 0
    ready: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    assigned: int = 0  # assignments made by this engine
    retried: int = 0
    launch_errors: int = 0
    heartbeat_timeouts: int = 0
    usage: Usage = field(default_factory=Usage)  # coding agents' usage over every task


@dataclass(frozen=True)
class DeadlockView:
    """A dependency cycle, or tasks blocked for good behind a failed root."""

    kind: str  # "cycle" | "failed_dependency"
    tasks: tuple[str, ...]
    root: str | None
    suggestion: str


@dataclass(frozen=True)
class LandingView:
    """A landing run through the dispatcher (``land`` verb): in flight, or its report."""

    land_id: str
    taskset: str
    state: str  # "landing" | "done" (see report.ok) | "error" (it could not run: error)
    started_at: float
    finished_at: float | None = None
    report: LandReport | None = None
    error: str | None = None

    @property
    def summary(self) -> str:
        if self.error is not None:
            return f"landing {self.taskset} could not run: {self.error}"
        if self.report is None:
            return f"landing {self.taskset}"
        return f"landed {self.taskset} into {self.report.branch}: {self.report.summary}"


@dataclass(frozen=True)
class Snapshot:
    """The engine's state at one moment."""

    version: int
    taken_at: float
    state: str  # "starting" | "running" | "paused" | "draining" | "stopping" | "stopped"
    policy: str
    max_global_concurrency: int
    registry_path: str
    api_url: str | None
    pools: tuple[PoolStatus, ...] = ()
    queued: tuple[QueuedTaskView, ...] = ()  # READY then BLOCKED, in dispatch order
    running: tuple[RunningTaskView, ...] = ()
    finished: tuple[FinishedTaskView, ...] = ()  # newest first, bounded
    events: tuple[TaskEvent, ...] = ()  # newest last, bounded
    counters: Counters = field(default_factory=Counters)
    throughput: tuple[int, ...] = ()  # tasks finished per interval, oldest first
    throughput_interval: float = 10.0
    deadlocks: tuple[DeadlockView, ...] = ()
    heartbeat_timeout: float = 60.0
    problems: tuple[str, ...] = ()  # degraded engine features, one line each
    capacity: int = 0  # runners that can run at once now: enabled, healthy pools, global cap
    leader: str | None = None  # ha: the replica holding the Lease (None without ha:)
    replica: str | None = None  # ha: this replica's identity
    landings: tuple[LandingView, ...] = ()  # recent landings through the dispatcher, oldest first

    @property
    def running_total(self) -> int:
        return len(self.running)

    @cached_property
    def _positions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for view in self.queued:
            if view.in_queue and view.state is TaskState.READY:
                out[view.key] = len(out) + 1
        return out

    def position_of(self, key: str) -> int | None:
        """A queued task's 1-based place in the dispatch order (None: BLOCKED, or READY but
        waiting outside the queue: no slot yet, paths, budget). Computed from this snapshot's
        order on first use, so publishing a snapshot never renumbers every queued view."""
        return self._positions.get(key)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``get_status()``, ``GET /v1/status``); queued tasks carry their
        ``position``."""
        data: dict[str, Any] = _jsonable(asdict(self))
        for entry in data["queued"]:
            entry["position"] = self.position_of(entry["key"])
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
