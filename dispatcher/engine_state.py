"""State shared by the parts of the engine (DispatcherCore and its engine_* mixins).

Only the engine thread mutates these objects; other threads post :class:`Command` objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import DispatcherConfig
from .engine.admission import Admission
from .engine.commands import Command
from .engine.event_log import EventLog
from .engine.fencer import Fencer
from .engine.launch_plane import LaunchPlane
from .engine.reconciler import Reconciler
from .engine.runner_table import RunnerDirectory, RunnerTable
from .engine.settler import Settler
from .engine.taskbook import TaskBook, ViewChanges
from .engine.workspaces import Workspaces
from .events import EventRecorder
from .launchers.base import RunnerLauncher
from .models import PoolType
from .registry.base import TaskRegistry
from .snapshot import DeadlockView, Snapshot


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
    _runners: RunnerTable
    _reconciler: Reconciler
    _launches: LaunchPlane
    _workspaces: Workspaces
    _fencer: Fencer
    _directory: RunnerDirectory
    _book: TaskBook
    _admission: Admission
    _views: ViewChanges
    _event_log: EventLog
    _settler: Settler
    _deadlocks: tuple[DeadlockView, ...]
    _deadlocked_keys: set[str]
    _state: str
    _registry_dirty: bool
    _engine_thread: threading.Thread | None
    _post: Callable[[Command], None]
    _snapshot: Snapshot | None
    _next_deadlock_check: float
    _deadlock_dirty: bool  # a change the deadlock check may report on since its last run

    # implemented by DispatcherCore
    def _on_runner_exit(self, runner_id: str) -> None:
        raise NotImplementedError

    def _publish(self, now: float, *, force: bool = False) -> None:
        raise NotImplementedError

    def _has_runner(self, key: str) -> bool:
        raise NotImplementedError

    def _set_platform_health(self, pool_name: str, ok: bool, message: str = "") -> None:
        raise NotImplementedError
