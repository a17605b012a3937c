"""The engine's components, built once and handed to the parts that coordinate them.

Each component owns its state and offers a small typed interface (its module says what it
owns). The coordinators — the engine loop (:mod:`.engine`), the runner supervision
(:mod:`.supervisor`), the restart (:mod:`.restart`), the operator controls (:mod:`.controls`) —
act only through those interfaces.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..agents.checks import budget_of, prices_of
from ..agents.supervisor import AgentRuns
from ..config import DispatcherConfig
from ..deadlock import DeadlockDetector
from ..events import EventRecorder
from ..metrics import MetricsCollector
from ..pool_manager import AgentPoolManager
from ..registry.base import TaskRegistry
from ..retry import RetryManager
from ..runner_monitor import RunnerMonitor
from ..scheduler import Scheduler
from ..task_queue import TaskQueue
from .admission import Admission
from .commands import Command
from .deadlocks import DeadlockWatch
from .event_log import EventLog
from .fencer import Fencer
from .health import EngineHealth
from .landings import Landings
from .reconciler import Reconciler
from .runner_table import RunnerDirectory, RunnerTable
from .settler import Settler
from .taskbook import TaskBook, ViewChanges
from .usage import UsageLedger
from .work_step import WorkStep
from .workspaces import SlotProvider, Workspaces


@dataclass(frozen=True)
class Seed:
    """The seed's components (DispatcherCore exposes them under their seed names)."""

    config: DispatcherConfig
    registry: TaskRegistry
    recorder: EventRecorder
    queue: TaskQueue
    pools: AgentPoolManager
    scheduler: Scheduler
    retry: RetryManager
    monitor: RunnerMonitor
    detector: DeadlockDetector
    metrics: MetricsCollector
    runs_dir: Path


@dataclass(frozen=True)
class EngineParts:
    """Every component of one engine."""

    seed: Seed
    views: ViewChanges
    book: TaskBook
    events: EventLog
    health: EngineHealth
    admission: Admission
    directory: RunnerDirectory
    runners: RunnerTable
    fencer: Fencer
    settler: Settler
    workspaces: Workspaces
    reconciler: Reconciler
    deadlocks: DeadlockWatch
    work: WorkStep  # successful runs whose work is being committed
    landings: Landings  # the land verb's landings, one at a time
    agents: AgentRuns  # coding-agent runs: their streams read live (its own thread)
    usage: UsageLedger  # agent usage per tenant and taskset, and their budgets

    @property
    def config(self) -> DispatcherConfig:
        return self.seed.config

    @property
    def registry(self) -> TaskRegistry:
        return self.seed.registry

    @property
    def metrics(self) -> MetricsCollector:
        return self.seed.metrics


def build_parts(seed: Seed, post: Callable[[Command], None],
                repo_pool: Callable[[], SlotProvider], has_runner: Callable[[str], bool],
                on_written: Callable[..., None], on_refused: Callable[[], None]) -> EngineParts:
    """Wire the components of one engine together."""
    views = ViewChanges()
    book = TaskBook(views, time.time())
    events = EventLog(seed.recorder)
    health = EngineHealth()
    usage = UsageLedger({n: budget_of(b) for n, b in seed.config.tenant_budgets.items()},
                        {n: budget_of(b) for n, b in seed.config.taskset_budgets.items()})
    admission = Admission(seed.queue, seed.scheduler, seed.pools, book, views, has_runner,
                          over_budget=usage.hold_reason)
    directory = RunnerDirectory()
    return EngineParts(
        seed=seed, views=views, book=book, events=events, health=health, admission=admission,
        directory=directory, runners=RunnerTable(seed.monitor, directory),
        fencer=Fencer(seed.config.runner_stop_grace, post),
        settler=Settler(seed.config, events, seed.retry, seed.metrics, on_written=on_written,
                        on_refused=on_refused),
        workspaces=Workspaces(repo_pool, post), reconciler=Reconciler(),
        deadlocks=DeadlockWatch(seed.detector, seed.config.deadlock_check_interval, events,
                                views, health),
        work=WorkStep(seed.config.work, post),
        landings=Landings(seed.registry, seed.config.resolved_state_dir(), seed.config.work,
                          events, views, post, registry_changed=on_refused),
        agents=AgentRuns(prices=prices_of(seed.config.agent_prices)),
        usage=usage)
