"""Dry run of the real scheduler on a virtual clock (``necroui plan FILE``, B2).

The tasks are fed to the same :class:`~.scheduler.Scheduler`, :class:`~.task_queue.TaskQueue`
and :class:`~.pool_manager.AgentPoolManager` the engine uses, with the config's pools, limits and
policy. Each task "runs" for its estimated duration (``estimated_duration``, else
``metadata['estimate']``, else 1 s; see :func:`.graph.estimated_duration`); nothing is launched
and nothing is written. The result is the predicted makespan, each pool's utilisation, the
critical path (the lower bound set by dependencies alone) and the tasks that could never run,
with the reason the scheduler gives.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .config import DispatcherConfig
from .graph import build_graph, critical_path, estimated_duration, find_cycles
from .models import Task, TaskState, task_key
from .pool_manager import AgentPoolManager
from .scheduler import Scheduler
from .task_queue import TaskQueue


@dataclass(frozen=True)
class PlannedRun:
    """When and where one task would run."""

    key: str
    pool: str
    start: float  # seconds from the start of the plan
    end: float


@dataclass
class Plan:
    """What the dry run predicts."""

    makespan: float  # seconds until the last task ends
    runs: list[PlannedRun] = field(default_factory=list)  # in start order
    pool_utilisation: dict[str, float] = field(default_factory=dict)  # busy / capacity, 0..1
    pool_busy: dict[str, float] = field(default_factory=dict)  # runner-seconds per pool
    critical_path: list[str] = field(default_factory=list)
    critical_length: float = 0.0  # seconds: no schedule can be shorter
    never_run: dict[str, str] = field(default_factory=dict)  # key -> why
    already_done: int = 0
    peak_running: int = 0


def plan_tasks(
    tasks: Iterable[Task],
    config: DispatcherConfig,
    *,
    duration: Callable[[Task | None], float] = estimated_duration,
) -> Plan:
    """Simulate dispatching ``tasks`` under ``config``; see the module doc."""
    todo = {t.key: t.copy() for t in tasks}
    graph = build_graph(todo.values())
    cycles = find_cycles(graph)
    path, length = ([], 0.0) if cycles else critical_path(graph, duration)
    result = Plan(makespan=0.0, critical_path=path, critical_length=length)
    in_cycle = {k for c in cycles for k in c}
    for key in in_cycle:
        result.never_run[key] = "part of a dependency cycle"

    finished: set[str] = set()
    waiting: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    queue = TaskQueue()
    clock = [0.0]
    pools = AgentPoolManager(config, clock=lambda: clock[0])
    scheduler = Scheduler(config.scheduling_policy, config)

    def make_ready(task: Task) -> None:
        task.state, task.ready_at, task.next_attempt_at = TaskState.READY, clock[0], None
        queue.enqueue(task)

    for key, task in todo.items():
        if task.state is TaskState.DONE:
            finished.add(key)
            result.already_done += 1
    for key, task in todo.items():
        if key in finished or key in in_cycle:
            continue
        if task.state in (TaskState.FAILED, TaskState.CANCELLED):
            result.never_run[key] = f"already {task.state.value}"
            continue
        deps = [task_key(task.taskset, d) for d in task.dependencies]
        open_deps = [d for d in deps if d in todo and d not in finished]
        waiting[key] = len(open_deps)
        for dep in open_deps:
            dependents.setdefault(dep, []).append(key)
        if not open_deps:
            make_ready(task)

    running: list[tuple[float, int, str, str]] = []  # (end, seq, key, pool)
    seq = itertools.count()
    busy: dict[str, float] = {p.name: 0.0 for p in config.agent_pools}
    while True:
        for task, pool in scheduler.schedule(queue, pools, now=clock[0]):
            took = max(0.0, duration(task))
            end = clock[0] + took
            heapq.heappush(running, (end, next(seq), task.key, pool.name))
            result.runs.append(PlannedRun(task.key, pool.name, clock[0], end))
            busy[pool.name] = busy.get(pool.name, 0.0) + took
        result.peak_running = max(result.peak_running, len(running))
        if not running:
            break
        clock[0] = running[0][0]
        while running and running[0][0] <= clock[0]:
            _, _, key, pool_name = heapq.heappop(running)
            task = todo[key]
            pools.release(pool_name, task)
            scheduler.record_usage(task.tenant, duration(task), now=clock[0])
            finished.add(key)
            for child in dependents.get(key, []):
                waiting[child] -= 1
                if waiting[child] == 0:
                    make_ready(todo[child])
    result.makespan = clock[0]
    for task in queue.tasks():
        result.never_run[task.key] = str(scheduler.explain(task, pools, now=clock[0]))
    for key, count in waiting.items():
        if count and key not in result.never_run:
            result.never_run[key] = "waits on tasks that never run"
    for name, seconds in busy.items():
        defined = config.get_pool(name)
        capacity = (defined.max_concurrency if defined else 1) * result.makespan
        result.pool_busy[name] = seconds
        result.pool_utilisation[name] = seconds / capacity if capacity > 0 else 0.0
    return result
