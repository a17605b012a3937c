"""Scheduler benchmark: decisions per second and peak memory per policy and queue size.

Run: ``python tests/bench/bench_scheduler.py [--sizes 1000,10000,100000] [--quick] [--repeat 3]``

Workload: 4 skills, 3 pools, one of them full. ``alpha`` and ``beta`` have room for every task;
``gamma`` is full from the start (4/4), so skill ``s2`` (mapped to gamma only) can never be
placed and ``s0``/``s1`` (alpha or beta, then gamma) must go around it. Priorities 0..9, three
tenants, three resource shapes.

Times are CPU time of this process (``time.process_time``), so other load on the machine
inflates them less than wall-clock time would. Columns:
- ``build ms``: the first round's index build over the whole queue (once per queue);
- ``decisions/s``: rounds of 256 decisions (after the build) until 20,000 decisions or no
  placeable task is left;
- ``tasks MB``: the Task objects themselves (tracemalloc), for scale;
- ``sched MB``: tracemalloc peak above that while filling the queue, building the index and
  running those rounds (a separate run, since tracemalloc slows Python down);
- ``full round us``: one schedule() call when every pool is full (must not grow with the queue);
- ``blocked round us``: one schedule() call when only tasks of the full pool's skill are queued
  and other pools have room (touches one group head per task shape, not the queue);
- ``heapq us`` and ``x heapq``: the floor: a bare ``heapq.heappop`` + ``heappush`` of
  (priority, ready_at, seq, task) tuples on a heap of the same size built from the same tasks
  (the heap stays full), CPU per pair, measured right before each decision measurement;
  ``x heapq`` is the scheduler's CPU per decision over that floor, the median of the rounds
  with their range.

Rounds alternate: each of ``--repeat`` rounds measures every policy once (floor, then
decisions), starting with a different policy each round, so that load from other work falls
alike on every policy and on its floor.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, SchedulingPolicy, Task
from necrocode.dispatcher.pool_manager import AgentPoolManager
from necrocode.dispatcher.scheduler import Scheduler
from necrocode.dispatcher.task_queue import TaskQueue

SKILLS = ["s0", "s1", "s2", "s3"]
SHAPES = [(0.5, 256), (1.0, 512), (2.0, 2048)]
TENANTS = ["team-a", "team-b", "team-c"]


def make_config(n: int) -> DispatcherConfig:
    return DispatcherConfig(
        max_global_concurrency=4 * n + 10,
        agent_pools=[
            AgentPool("alpha", PoolType.LOCAL_PROCESS, max_concurrency=2 * n),
            AgentPool("beta", PoolType.DOCKER, max_concurrency=2 * n, cpu_quota=4.0 * n,
                      memory_quota=4096 * n),
            AgentPool("gamma", PoolType.KUBERNETES, max_concurrency=4),
        ],
        skill_mapping={
            "s0": ["alpha", "gamma"],
            "s1": ["beta", "gamma"],
            "s2": ["gamma"],
            "s3": ["alpha", "beta"],
        },
        fair_share_weights={"team-a": 1, "team-b": 1, "team-c": 2},
    )


def make_tasks(n: int, seed: int = 7, skills: list[str] = SKILLS) -> list[Task]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cpu, mem = rng.choice(SHAPES)
        out.append(
            Task(
                id=str(i),
                taskset=f"ts{i % 5}",
                required_skill=rng.choice(skills),
                priority=rng.randrange(10),
                tenant=rng.choice(TENANTS),
                resources=Resources(cpu, mem),
                ready_at=1_000_000.0 + i * 0.001,
                created_at=1_000_000.0,
            )
        )
    return out


def fill_gamma(pm: AgentPoolManager) -> None:
    for i in range(4):
        pm.acquire("gamma", Task(id=f"busy{i}", taskset="bench", resources=Resources(1, 512)))


def setup(policy: str, n: int) -> tuple[Scheduler, TaskQueue, AgentPoolManager]:
    cfg = make_config(n)
    pm = AgentPoolManager(cfg)
    fill_gamma(pm)
    q = TaskQueue()
    for t in make_tasks(n):
        q.enqueue(t)
    return Scheduler(policy, cfg), q, pm


def run_rounds(s: Scheduler, q: TaskQueue, pm: AgentPoolManager, target: int) -> tuple[int, float]:
    done = 0
    start = time.process_time()
    while done < target:
        got = s.schedule(q, pm, now=2_000_000.0, limit=256)
        if not got:
            break
        done += len(got)
    return done, time.process_time() - start


def decisions_once(policy: str, n: int, target: int) -> tuple[float, int, float]:
    """One measurement: (first round's build seconds, decisions, CPU seconds of the rounds)."""
    s, q, pm = setup(policy, n)
    gc.collect()
    t0 = time.process_time()
    first = s.schedule(q, pm, now=2_000_000.0, limit=1)
    build = time.process_time() - t0
    assert first
    done, secs = run_rounds(s, q, pm, target)
    return build, done, secs


def memory(policy: str, n: int, target: int) -> tuple[float, float]:
    """(Task objects MB, scheduler peak MB above them), under tracemalloc."""
    gc.collect()
    tracemalloc.start()
    tasks = make_tasks(n)
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    cfg = make_config(n)
    pm2 = AgentPoolManager(cfg)
    fill_gamma(pm2)
    q2 = TaskQueue()
    for task in tasks:
        q2.enqueue(task)
    s2 = Scheduler(policy, cfg)
    run_rounds(s2, q2, pm2, target)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del s2, q2, pm2, tasks
    return base / 1e6, (peak - base) / 1e6


def heapq_pair_us(tasks: list[Task], target: int) -> float:
    """CPU microseconds of one heappop + heappush on a heap of ``len(tasks)`` task entries."""
    n = len(tasks)
    heap = [(-t.priority, t.ready_at or 0.0, i, t) for i, t in enumerate(tasks)]
    heapq.heapify(heap)
    seq = n
    start = time.process_time()
    for _ in range(target):
        _, ready, _, task = heapq.heappop(heap)
        heapq.heappush(heap, (-task.priority, ready + 1000.0, seq, task))
        seq += 1
    return (time.process_time() - start) / target * 1e6


def _time_calls(fn: Callable[[], object], calls: int = 2000) -> float:
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def full_round(policy: str, n: int) -> float:
    """Every pool full: one schedule() call."""
    cfg = make_config(n)
    cfg.agent_pools[0].max_concurrency = 1
    cfg.agent_pools[1].max_concurrency = 1
    pm = AgentPoolManager(cfg)
    fill_gamma(pm)
    pm.acquire("alpha", Task(id="a", taskset="bench"))
    pm.acquire("beta", Task(id="b", taskset="bench"))
    q = TaskQueue()
    for t in make_tasks(n):
        q.enqueue(t)
    s = Scheduler(policy, cfg)
    return _time_calls(lambda: s.schedule(q, pm, now=2_000_000.0))


def blocked_round(policy: str, n: int) -> float:
    """Only tasks of the full pool's skill queued; other pools idle."""
    cfg = make_config(n)
    pm = AgentPoolManager(cfg)
    fill_gamma(pm)
    q = TaskQueue()
    for t in make_tasks(n, skills=["s2"]):
        q.enqueue(t)
    s = Scheduler(policy, cfg)
    return _time_calls(lambda: s.schedule(q, pm, now=2_000_000.0), calls=500)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--policies", default=",".join(p.value for p in SchedulingPolicy))
    ap.add_argument("--target", type=int, default=20_000, help="decisions per measurement")
    ap.add_argument("--quick", action="store_true", help="sizes 1000,10000 only")
    ap.add_argument("--repeat", type=int, default=3,
                    help="alternating rounds (each: every policy once, floor then decisions)")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 10_000]
    print(f"machine: {machine()}")
    print("workload: 4 skills, 3 pools (gamma full), priorities 0-9, 3 tenants, 3 shapes")
    header = (f"{'policy':<12} {'queued':>8} {'build ms':>9} {'decisions':>9} "
              f"{'decisions/s':>12} {'tasks MB':>8} {'sched MB':>8} {'full round us':>14} "
              f"{'blocked round us':>17} {'heapq us':>9} {'x heapq':>8} {'range':>9}")
    print(header)
    print("-" * len(header))
    policies = args.policies.split(",")
    for n in sizes:
        floor_tasks = make_tasks(n)
        builds: dict[str, list[float]] = {p: [] for p in policies}
        per_us: dict[str, list[float]] = {p: [] for p in policies}
        ratios: dict[str, list[float]] = {p: [] for p in policies}
        floors: list[float] = []
        done: dict[str, int] = {}
        for r in range(max(1, args.repeat)):
            for policy in policies[r % len(policies):] + policies[:r % len(policies)]:
                floor = heapq_pair_us(floor_tasks, args.target)
                build, done[policy], secs = decisions_once(policy, n, args.target)
                us = secs / done[policy] * 1e6
                floors.append(floor)
                builds[policy].append(build)
                per_us[policy].append(us)
                ratios[policy].append(us / floor)
        for policy in policies:
            tasks_mb, sched_mb = memory(policy, n, args.target)
            us = statistics.median(per_us[policy])
            spread = f"{min(ratios[policy]):.1f}-{max(ratios[policy]):.1f}"
            print(f"{policy:<12} {n:>8} {statistics.median(builds[policy]) * 1000:>9.1f} "
                  f"{done[policy]:>9} {1e6 / us:>12,.0f} {tasks_mb:>8.1f} {sched_mb:>8.1f} "
                  f"{full_round(policy, n):>14.1f} {blocked_round(policy, n):>17.1f} "
                  f"{statistics.median(floors):>9.2f} "
                  f"{statistics.median(ratios[policy]):>7.1f}x {spread:>9}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
