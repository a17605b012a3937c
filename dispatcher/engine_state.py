"""State shared by the parts of the engine (DispatcherCore and its engine_* mixins).

Only the engine thread mutates these objects; other threads post :class:`Command` objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DispatcherConfig
from .engine.commands import Command, FenceOutcome
from .engine.event_log import EventLog
from .engine.settler import Settler
from .engine.taskbook import TaskBook, ViewChanges
from .events import EventRecorder
from .launchers.base import RunnerLauncher
from .models import AgentPool, PoolType, Runner, RunnerState, Slot, Task
from .registry.base import TaskRegistry
from .snapshot import DeadlockView, Snapshot


@dataclass
class RunnerRecord:
    """The engine's book of one live runner (one attempt of one task)."""

    runner: Runner
    task: Task
    pool: AgentPool
    launcher: RunnerLauncher
    slot: Slot | None
    started_at: float
    last_sign: float
    attempt: int
    state: RunnerState = RunnerState.RUNNING
    progress: str | None = None
    log_size: int = -1
    stopping: bool = False  # a fence (stop) is in progress in a worker thread
    fence_outcome: FenceOutcome | None = None
    fence_reason: str = ""
    stop_problem: str = ""  # why the last stop was not confirmed ("" when none failed)
    report: dict[str, Any] | None = None  # completion report received over the API
    reported_at: float | None = None
    released: bool = False  # slot and pool capacity given back
    adopted: bool = False
    heartbeats: int = 0  # heartbeats received: a heartbeating runner is judged by them
    rev: int = 0

    @property
    def runner_id(self) -> str:
        return self.runner.runner_id

    @property
    def key(self) -> str:
        return self.task.key


@dataclass
class PendingLaunch:
    """A runner being started in a launch worker (its task is RUNNING, capacity held)."""

    task: Task  # as it was READY; the RUNNING version comes back in the LaunchOutcome
    pool: AgentPool
    slot: Slot | None
    launcher: RunnerLauncher
    attempt: int
    runner_id: str
    assigned_at: float
    ready_at: float
    stop_outcome: FenceOutcome | None = None  # cancelled / shutdown requested while launching
    stop_reason: str = ""
    early_report: dict[str, Any] | None = None  # completion report that came first


class EngineBase:
    """Attributes every engine mixin relies on (declared once for the type checker)."""

    config: DispatcherConfig
    registry: TaskRegistry
    events: EventRecorder
    state_dir: Path
    runs_dir: Path
    queue: Any  # TaskQueue
    scheduler: Any  # Scheduler
    pool_manager: Any  # AgentPoolManager
    retry_manager: Any  # RetryManager
    runner_monitor: Any  # RunnerMonitor
    repo_pool: Any  # RepoPoolManager
    deadlock_detector: Any  # DeadlockDetector
    metrics: Any  # MetricsCollector or a null object

    registry_label: str
    api_url: str | None
    admin_token: str | None
    _api_server: Any
    _secret: bytes
    _given_launchers: dict[Any, RunnerLauncher]
    _stop_requested: bool
    _leave_running: bool
    _drain_deadline: float | None
    _crash: BaseException | None
    _launchers: dict[PoolType | str, RunnerLauncher]
    _runners: dict[str, RunnerRecord]  # runner id -> record
    _by_task: dict[str, str]  # task key -> runner id
    _launching: dict[str, PendingLaunch]  # task key -> launch in progress
    _launching_ids: dict[str, str]  # runner id -> task key, launches in progress
    _launch_pool: ThreadPoolExecutor | None
    _slot_releases: dict[str, int]  # task key -> slot releases in flight
    _unsure: dict[str, str]  # task key -> runner id of an assignment not known to have committed
    _book: TaskBook
    _views: ViewChanges
    _no_slot: dict[str, Task]  # READY tasks waiting for a workspace slot
    _delayed: list[tuple[float, str]]  # heap of (next_attempt_at, key) in retry backoff
    _flagged_exits: set[str]
    _event_log: EventLog
    _settler: Settler
    _deadlocks: tuple[DeadlockView, ...]
    _deadlocked_keys: set[str]
    _last_pool: dict[str, str]  # task key -> pool of its last runner
    _paused: bool
    _state: str
    _sched_dirty: bool
    _registry_dirty: bool
    _stopper: ThreadPoolExecutor | None
    _fence_abort: threading.Event  # set at teardown: fence workers stop retrying
    _engine_thread: threading.Thread | None
    _post: Callable[[Command], None]
    _snapshot: Snapshot | None
    _counters: dict[str, int]
    _next_deadlock_check: float
    _deadlock_dirty: bool  # a change the deadlock check may report on since its last run

    # implemented by DispatcherCore
    def _on_runner_exit(self, runner_id: str) -> None:
        raise NotImplementedError

    def _publish(self, now: float, *, force: bool = False) -> None:
        raise NotImplementedError
