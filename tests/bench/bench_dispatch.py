"""Dispatch overhead of the whole engine, beside ``xargs -P``.

    python tests/bench/bench_dispatch.py [--tasks 1000] [--concurrency 16] [--latency-runs 200]

1. ``--tasks`` tasks running ``true`` through a local-process pool of ``--concurrency`` runners
   (SQLite registry, real processes, HTTP API on), wall time from start to the last DONE,
   beside ``xargs -P<concurrency>`` running the same commands: the ratio is the figure.
2. The same through the agent runner wrapper (``python -m necrocode.dispatcher.agent_runner --
   true``): its cost per task.
3. Submit -> launch latency of single tasks submitted through the running Dispatcher
   (``DispatcherCore.submit`` until the runner's process was started), p50 / p99.

Prints a table with wall time and CPU time (the Dispatcher process itself, and its children:
the agents and their trampolines); nothing is asserted. ``--repeat N`` runs each batch N times
and keeps the fastest (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import AgentPool, EventType, PoolType, Task, Taskset, TaskState

TRUE = "/bin/true"
WRAPPER = [sys.executable, "-m", "necrocode.dispatcher.agent_runner", "--"]


def make_core(root: Path, concurrency: int, name: str) -> DispatcherCore:
    config = DispatcherConfig(
        registry_path=str(root / name / "registry.db"), state_dir=str(root / name / "state"),
        max_global_concurrency=concurrency, poll_interval=5.0, heartbeat_timeout=60.0,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS,
                               max_concurrency=concurrency)],
        skill_mapping={"default": ["local"]}, snapshot_max_rate=10.0,
    )
    return DispatcherCore(config)


@dataclass
class Timing:
    """Wall seconds and CPU seconds (this process; its reaped children) of one run."""

    wall: float
    cpu_self: float = 0.0
    cpu_children: float = 0.0


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], float]) -> Timing:
    self0, kids0 = _cpu()
    wall = fn()
    self1, kids1 = _cpu()
    return Timing(wall, self1 - self0, kids1 - kids0)


def best(runs: list[Timing]) -> Timing:
    return min(runs, key=lambda t: t.wall)


def run_batch(root: Path, n: int, concurrency: int, command: list[str], name: str) -> float:
    """Seconds from start() until every one of ``n`` tasks is DONE."""
    core = make_core(root, concurrency, name)
    tasks = [Task(id=f"t{i}", title=f"t{i}", taskset=name, command=list(command))
             for i in range(n)]
    core.registry.submit_taskset(Taskset(name=name, tasks=tasks))
    started = time.perf_counter()
    core.start()
    try:
        version = 0
        while True:
            snap = core.wait_for_snapshot(version, timeout=1.0)
            version = snap.version
            c = snap.counters
            if c.done + c.failed + c.cancelled >= n:
                break
        elapsed = time.perf_counter() - started
        if snap.counters.done != n:
            print(f"  warning: {snap.counters.failed} task(s) failed", file=sys.stderr)
    finally:
        core.stop(timeout=10)
    return elapsed


def run_xargs(n: int, concurrency: int) -> float:
    data = ("x\n" * n).encode()
    started = time.perf_counter()
    subprocess.run(["xargs", f"-P{concurrency}", "-I{}", TRUE], input=data, check=True)
    return time.perf_counter() - started


def run_latency(root: Path, runs: int) -> list[float]:
    """Milliseconds from submit() to the runner's process start, one task at a time."""
    core = make_core(root, 4, "latency")
    core.start()
    out: list[float] = []
    try:
        for i in range(runs):
            key = f"lat{i}/t"
            t0 = time.time()
            core.submit(Taskset(name=f"lat{i}", tasks=[
                Task(id="t", title="t", taskset=f"lat{i}", command=[TRUE])]))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                events = core.registry.get_events(task_key=key,
                                                  event_types=[EventType.RUNNER_STARTED])
                if events:
                    out.append((events[0].timestamp - t0) * 1000.0)
                    break
                time.sleep(0.002)
            while core.registry.get_task(key).state is TaskState.RUNNING:
                time.sleep(0.002)
    finally:
        core.stop(timeout=10)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    idx = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--skip-wrapper", action="store_true")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each batch N times and keep the fastest")
    parser.add_argument("--dir", default=None,
                        help="folder for the registry and state dir (default: the system temp "
                             "folder); on a busy ext4 /tmp each file or folder created costs "
                             "0.3-0.6 ms, against ~10 us on tmpfs (/dev/shm)")
    args = parser.parse_args()
    n, c = args.tasks, args.concurrency
    reps = max(1, args.repeat)
    with tempfile.TemporaryDirectory(prefix="necrocode-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        xargs = best([timed(lambda: run_xargs(n, c)) for _ in range(reps)])
        direct = best([timed(lambda i=i: run_batch(root, n, c, [TRUE], f"direct{i}"))
                       for i in range(reps)])
        wrapped = None if args.skip_wrapper else best([
            timed(lambda i=i: run_batch(root, n, c, [*WRAPPER, TRUE], f"wrapped{i}"))
            for i in range(reps)])
        lat = run_latency(root, args.latency_runs)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cpu(s), "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, state in "
          f"{args.dir or tempfile.gettempdir()}")
    print(f"{n} tasks of `true`, concurrency {c}" + (f", best of {reps}" if reps > 1 else "")
          + "\n")
    print(f"{'run':<34} {'wall s':>8} {'tasks/s':>9} {'ms/task':>8} {'vs xargs':>9} "
          f"{'cpu self s':>11} {'cpu children s':>15}")
    rows = [(f"xargs -P{c}", xargs), ("dispatcher, direct supervision", direct)]
    if wrapped is not None:
        rows.append(("dispatcher, agent runner wrapper", wrapped))
    for label, t in rows:
        secs = t.wall
        print(f"{label:<34} {secs:>8.2f} {n / secs:>9.1f} {secs * 1000 / n:>8.2f} "
              f"{secs / xargs.wall:>8.2f}x {t.cpu_self:>11.2f} {t.cpu_children:>15.2f}")
    if wrapped is not None:
        extra = wrapped.wall - direct.wall
        print(f"\nwrapper cost per task: {extra * 1000 / n * c:.1f} ms of runner "
              f"time ({extra * 1000 / n:.2f} ms wall per task at concurrency {c})")
    print(f"\nsubmit -> launch latency over {len(lat)} single-task submits: "
          f"p50 {pct(lat, 50):.1f} ms, p90 {pct(lat, 90):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
          f"max {max(lat) if lat else float('nan'):.1f} ms, mean "
          f"{statistics.fmean(lat) if lat else float('nan'):.1f} ms")


if __name__ == "__main__":
    main()
