"""Benchmark: one dashboard update with 1k / 10k tasks where ~1% of the rows changed.

Prints a table: tasks, first load (all rows added), one diff update (apply inside
batch_update), the same update plus the repaint that follows, a clock tick without a new
snapshot, typing a filter word (about a tenth of the rows stay) and clearing it, each until
the app is idle, and the process memory (tracemalloc peak of Python objects and RSS).

    /work/venv/bin/python tests/bench/bench_tui.py [1000 10000 ...]
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import PoolStatus, PoolType, RunnerState, TaskState
from necrocode.dispatcher.snapshot import (
    Counters,
    FinishedTaskView,
    Pending,
    PendingReason,
    QueuedTaskView,
    RunningTaskView,
    Snapshot,
)

from necroui.app import NecroApp

T0 = 1_700_000_000.0
SKILLS = ("backend", "frontend", "database", "qa")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ScriptedEngine:
    """Returns whatever snapshot the benchmark put there."""

    def __init__(self, snap: Snapshot | None) -> None:
        self.snap = snap
        self.registry: Any = None
        self.config = DispatcherConfig(registry_path="/tmp/bench.db")

    def snapshot(self) -> Snapshot | None:
        return self.snap


def queued(i: int, rev: int = 1, priority: int | None = None) -> QueuedTaskView:
    return QueuedTaskView(
        key=f"bench/t{i:06d}", taskset="bench", task_id=f"t{i:06d}", title=f"task {i}",
        state=TaskState.READY if i % 5 else TaskState.BLOCKED, skill=SKILLS[i % 4],
        tenant=f"tenant{i % 3}", priority=i % 10 if priority is None else priority,
        ready_at=T0 - 10_000 + i, created_at=T0 - 20_000 + i, attempts=0,
        in_queue=bool(i % 5),
        pending=Pending(PendingReason.POOL_FULL, f"pool '{SKILLS[i % 4]}' full (4/4)"), rev=rev)


def make_snapshot(n: int, version: int, queue: list[QueuedTaskView]) -> Snapshot:
    running = tuple(
        RunningTaskView(f"bench/r{i}", "bench", f"r{i}", f"running {i}", SKILLS[i % 4], "t",
                        0, f"r-bench-{i}", SKILLS[i % 4], f"slot-{i}", 1, T0 - 100 - i,
                        T0 - i, RunnerState.RUNNING)
        for i in range(16))
    finished = tuple(
        FinishedTaskView(f"bench/d{i}", "bench", f"d{i}", f"done {i}", TaskState.DONE, 1,
                         T0 - 500, T0 - 400 + i, None, "backend")
        for i in range(200))
    pools = tuple(PoolStatus(s, PoolType.LOCAL_PROCESS, 4, 4, 1.0, 4.0, None, 2048, None)
                  for s in SKILLS)
    return Snapshot(version=version, taken_at=T0, state="running", policy="priority",
                    max_global_concurrency=16, registry_path="/tmp/bench.db", api_url=None,
                    pools=pools, queued=tuple(queue), running=running, finished=finished,
                    counters=Counters(total=n + 216, ready=n, running=16, done=200),
                    throughput=(1, 2, 3))


def mutate(queue: list[QueuedTaskView], rng: random.Random, next_id: int,
           version: int) -> tuple[list[QueuedTaskView], int]:
    """~1% of rows change: half re-prioritised, a quarter leave, a quarter arrive."""
    n = len(queue)
    k = max(1, n // 100)
    out = list(queue)
    for idx in rng.sample(range(n), k // 2 or 1):
        v = out[idx]
        out[idx] = dataclasses.replace(v, priority=v.priority + 1, rev=version)
    gone = set(rng.sample(range(n), k // 4 or 1))
    out = [v for j, v in enumerate(out) if j not in gone]
    for _ in range(k // 4 or 1):
        out.append(queued(next_id, rev=version))
        next_id += 1
    return out, next_id


async def bench(n: int, rounds: int = 5) -> dict[str, float]:
    rng = random.Random(n)
    queue = [queued(i) for i in range(n)]
    engine = ScriptedEngine(None)
    app = NecroApp(engine, clock=lambda: T0, refresh_interval=3600)  # type: ignore[arg-type]
    tracemalloc.start()
    result: dict[str, float] = {}
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        engine.snap = make_snapshot(n, 1, queue)
        t = time.perf_counter()
        app.refresh_snapshot()
        await pilot.pause()
        result["load_s"] = time.perf_counter() - t
        apply_ms: list[float] = []
        total_ms: list[float] = []
        next_id = n
        for r in range(rounds):
            queue, next_id = mutate(queue, rng, next_id, r + 2)
            engine.snap = make_snapshot(n, r + 2, queue)
            t = time.perf_counter()
            app.refresh_snapshot()
            apply_ms.append((time.perf_counter() - t) * 1000)
            await pilot.pause()
            total_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        app.refresh_snapshot()  # same version: clock tick only
        tick_ms = (time.perf_counter() - t) * 1000
        shown = len(app.main.query_one("#queue-table").shown_keys)  # type: ignore[attr-defined]
        assert shown == len(queue), (shown, len(queue))
        t = time.perf_counter()
        app.main.set_filter("t0001")
        await pilot.pause()
        result["filter_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        app.main.set_filter("")
        await pilot.pause()
        result["unfilter_ms"] = (time.perf_counter() - t) * 1000
        _, peak = tracemalloc.get_traced_memory()
        result.update(apply_ms=statistics.median(apply_ms), total_ms=statistics.median(total_ms),
                      tick_ms=tick_ms, peak_mb=peak / 2**20, rss_mb=rss_mb())
    tracemalloc.stop()
    return result


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    print("necroui dashboard update, ~1% of rows changed (median of 5), 160x50 headless")
    print("update = apply the snapshot (diff + batch_update); update+paint = until the app is idle")
    print(f"{'tasks':>7} {'first load':>11} {'update':>9} {'update+paint':>13} "
          f"{'tick':>8} {'filter':>8} {'unfilter':>9} {'py peak':>9} {'RSS':>8}")
    for n in sizes:
        r = asyncio.run(bench(n))
        print(f"{n:>7} {r['load_s']:>10.2f}s {r['apply_ms']:>7.1f}ms {r['total_ms']:>11.1f}ms "
              f"{r['tick_ms']:>6.1f}ms {r['filter_ms']:>6.0f}ms {r['unfilter_ms']:>7.0f}ms "
              f"{r['peak_mb']:>7.1f}MB {r['rss_mb']:>6.0f}MB")


if __name__ == "__main__":
    main()
