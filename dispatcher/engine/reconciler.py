"""Reconciler: what to do, after a restart, with the tasks the registry says are RUNNING.

:func:`plan_reconcile` is pure: from the RUNNING tasks and each pool's *platform view* (the
runners its launcher still finds, or why it could not be asked) it decides per task: **adopt**
its live runner, **settle** it from the exit status its run recorded, **fence** stray local
processes of a run whose record was never written and then requeue it, **requeue** it (its
runner is gone without a trace), or leave it **unknown**: a pool it may run on could not be
asked. An unknown task stays RUNNING, holds its capacity and is never started again until a
platform answer settles it (:class:`Reconciler` asks again with backoff). Runners alive on a
platform that no RUNNING task claims are stopped before their task may run again.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..launchers.base import attempt_dir, read_exit_record
from ..models import AgentPool, PoolType, Runner, Task
from .runs import run_number_of

logger = logging.getLogger(__name__)

FIRST_ASK_AGAIN = 2.0  # seconds before an unreachable platform is asked again (doubling)
MAX_ASK_AGAIN = 60.0


class Action(str, enum.Enum):
    """What becomes of one RUNNING task after a restart."""

    ADOPT = "adopt"  # its runner still runs (or ended just now): watch it again
    SETTLE = "settle"  # its run ended while we were down and recorded how
    FENCE_LOCAL = "fence_local"  # stray local processes may run it: stop them, then requeue
    REQUEUE = "requeue"  # its runner is gone without a trace: back to READY, no attempt spent
    UNKNOWN = "unknown"  # a platform it may run on cannot be asked: keep it RUNNING


@dataclass(frozen=True)
class PlatformView:
    """What a pool's launcher found on its platform, or why it could not be asked."""

    pool: AgentPool
    runners: tuple[Runner, ...] | None  # None: the platform could not be asked
    error: str = ""

    @property
    def known(self) -> bool:
        return self.runners is not None


@dataclass(frozen=True)
class Step:
    """One decision of the plan."""

    action: Action
    task: Task
    runner: Runner | None = None
    pool: AgentPool | None = None
    status: Mapping[str, Any] | None = None  # the recorded exit status (SETTLE)
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    """The plan for every RUNNING task, and the runners nobody claims."""

    steps: tuple[Step, ...]
    orphans: tuple[tuple[Runner, AgentPool], ...] = ()

    def by_action(self, action: Action) -> list[Step]:
        return [s for s in self.steps if s.action is action]


def plan_reconcile(running: list[Task], views: Mapping[str, PlatformView],
                   candidates: Callable[[Task], list[str]],
                   exit_status: Callable[[Task], Mapping[str, Any] | None]) -> Plan:
    """Decide for each RUNNING task (pure: no I/O beyond the given callables).

    ``views`` maps pool names to what their platform shows; ``candidates`` names the pools a
    task may run on (its skill's mapping); ``exit_status`` reads what a run recorded.
    """
    alive: dict[str, tuple[Runner, AgentPool]] = {}
    for view in views.values():
        for runner in view.runners or ():
            owner = views[runner.pool_name].pool if runner.pool_name in views else view.pool
            alive.setdefault(runner.runner_id, (runner, owner))
    steps: list[Step] = []
    for task in running:
        match = alive.pop(task.runner_id, None) if task.runner_id else None
        if match is not None:
            steps.append(Step(Action.ADOPT, task, match[0], match[1]))
            continue
        status = exit_status(task)
        if status is not None:
            steps.append(Step(Action.SETTLE, task, status=status))
            continue
        blind = [views[name] for name in candidates(task)
                 if name in views and not views[name].known]
        if blind:
            first = blind[0]
            steps.append(Step(Action.UNKNOWN, task, pool=first.pool, reason=(
                f"pool {first.pool.name} could not be asked whether its runner still runs: "
                f"{first.error}")))
            continue
        local = any(name in views and views[name].pool.type is PoolType.LOCAL_PROCESS
                    for name in candidates(task))
        steps.append(Step(Action.FENCE_LOCAL if local and task.runner_id else Action.REQUEUE,
                          task))
    return Plan(tuple(steps), tuple(alive.values()))


def read_exit_status(runs_dir: Path, task: Task) -> dict[str, Any] | None:
    """The exit status the task's current run recorded (None when missing, unreadable, or
    written by another run: a status must name this run's runner)."""
    if not task.runner_id:
        return None
    return read_exit_record(attempt_dir(runs_dir, task, run_number_of(task)), task.runner_id)


@dataclass
class UnknownRun:
    """A RUNNING task whose platform could not be asked."""

    task: Task
    pool: AgentPool
    reason: str
    since: float
    tries: int = 1
    next_ask: float = 0.0
    holds_capacity: bool = False

    @property
    def display(self) -> str:
        at = time.strftime("%H:%M:%S", time.localtime(self.next_ask))
        return f"unknown since restart: {self.reason} (asking again at {at})"


@dataclass
class Reconciler:
    """The tasks left unknown by the plan, and when to ask their platforms again."""

    unknown: dict[str, UnknownRun] = field(default_factory=dict)
    asking: set[str] = field(default_factory=set)  # pools being asked in a worker now
    blind: dict[str, str] = field(default_factory=dict)  # pools not answering -> why

    def hold(self, step: Step, now: float) -> UnknownRun:
        """Keep ``step``'s task unknown (a first verdict, or another failed ask)."""
        assert step.pool is not None
        run = self.unknown.get(step.task.key)
        if run is None:
            run = UnknownRun(step.task, step.pool, step.reason, now)
            self.unknown[step.task.key] = run
        else:
            run.tries += 1
            run.reason = step.reason
        run.next_ask = now + min(MAX_ASK_AGAIN, FIRST_ASK_AGAIN * 2 ** min(run.tries - 1, 8))
        return run

    def resolve(self, key: str) -> UnknownRun | None:
        """The task is settled by a real answer."""
        return self.unknown.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self.unknown

    def __len__(self) -> int:
        return len(self.unknown)

    def due(self, now: float) -> list[AgentPool]:
        """Pools to ask again now (each once, not while an ask is in flight)."""
        pools: dict[str, AgentPool] = {}
        for run in self.unknown.values():
            if run.next_ask <= now and run.pool.name not in self.asking:
                pools[run.pool.name] = run.pool
        return list(pools.values())

    def next_ask(self) -> float | None:
        times = [r.next_ask for r in self.unknown.values() if r.pool.name not in self.asking]
        return min(times, default=None)

    def tasks_of(self, pool_name: str) -> list[Task]:
        return [r.task for r in self.unknown.values() if r.pool.name == pool_name]
