"""NecroCode Dispatcher: schedules tasks from a Task Registry onto Agent Runners.

Every component the seed design names is importable from here::

    from necrocode.dispatcher import DispatcherCore, DispatcherConfig

Components are imported lazily, so ``import necrocode.dispatcher`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # configuration
    "DispatcherConfig": "config",
    "load_config": "config",
    # models
    "Task": "models",
    "TaskState": "models",
    "Taskset": "models",
    "TaskEvent": "models",
    "EventType": "models",
    "AgentPool": "models",
    "PoolType": "models",
    "SchedulingPolicy": "models",
    "Runner": "models",
    "RunnerState": "models",
    "RunnerInfo": "models",
    "PoolStatus": "models",
    "Slot": "models",
    "Resources": "models",
    # errors
    "DispatcherError": "errors",
    "ConfigError": "errors",
    "TasksetError": "errors",
    "RegistryError": "errors",
    "TaskNotFoundError": "errors",
    "InvalidTransitionError": "errors",
    "RunnerLaunchError": "errors",
    "DeadlockDetectedError": "errors",
    # components (seed architecture)
    "DispatcherCore": "core",
    "TaskMonitor": "task_monitor",
    "TaskQueue": "task_queue",
    "Scheduler": "scheduler",
    "AgentPoolManager": "pool_manager",
    "RunnerLauncher": "launchers",
    "RunnerMonitor": "runner_monitor",
    "MetricsCollector": "metrics",
    "RetryManager": "retry",
    "DeadlockDetector": "deadlock",
    "EventRecorder": "events",
    "RepoPoolManager": "repo_pool",
    "Snapshot": "snapshot",
    "PendingReason": "snapshot",
    "open_registry": "registry",
    "SQLiteRegistry": "registry",
    "MemoryRegistry": "registry",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'necrocode.dispatcher' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
