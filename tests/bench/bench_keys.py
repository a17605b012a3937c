"""Benchmark: key -> visible change in the dashboard at 10,000 tasks while dispatching.

A scripted engine publishes a new snapshot every refresh (0.5 s) with ~1% of the queue
changed (re-prioritised, leaving, arriving), as a busy dispatcher does, while Pilot presses
keys at the 160x50 dashboard. Each figure is the time from the key press until the app has
applied it and is idle again (every refresh it caused painted), p50 and p95 over the presses.
Only the UI side is measured: the snapshots are ready-made (their cost is the engine's).

    python tests/bench/bench_keys.py [10000]
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_tui import ScriptedEngine, make_snapshot, mutate, queued  # noqa: E402

from necroui.app import NecroApp  # noqa: E402

T0 = 1_700_000_000.0


class Dispatching(ScriptedEngine):
    """A new snapshot with ~1% of the rows changed each time the console asks for one after
    ``interval`` seconds."""

    def __init__(self, n: int, interval: float = 0.5) -> None:
        self.rng = random.Random(n)
        self.queue = [queued(i) for i in range(n)]
        self.n, self.version, self.next_id = n, 1, n
        self.interval, self.last = interval, time.monotonic()
        super().__init__(make_snapshot(n, 1, self.queue))

    def snapshot(self) -> Any:
        if time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            self.version += 1
            self.queue, self.next_id = mutate(self.queue, self.rng, self.next_id, self.version)
            self.snap = make_snapshot(self.n, self.version, self.queue)
        return self.snap


async def timed(pilot: Any, press: Callable[[], Awaitable[None]]) -> float:
    t = time.perf_counter()
    await press()
    await pilot.pause()  # until the app is idle: the change applied and painted
    return (time.perf_counter() - t) * 1000


async def bench(n: int) -> dict[str, list[float]]:
    engine = Dispatching(n)
    app = NecroApp(engine, clock=lambda: T0, refresh_interval=0.5)  # type: ignore[arg-type]
    out: dict[str, list[float]] = {}
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(1.0)
        queue = app.main.query_one("#queue-table")
        queue.focus()
        await pilot.pause()

        def rec(name: str, ms: float) -> None:
            out.setdefault(name, []).append(ms)

        for _ in range(40):
            rec("j / k (cursor)", await timed(pilot, lambda: pilot.press("j")))
            await pilot.pause(0.05)
        for _ in range(5):
            rec("G / Home", await timed(pilot, lambda: pilot.press("G")))
            rec("G / Home", await timed(pilot, lambda: pilot.press("home")))
            rec("T (sort)", await timed(pilot, lambda: pilot.press("T")))
            rec("O (order)", await timed(pilot, lambda: pilot.press("O")))
            rec("tab (panel)", await timed(pilot, lambda: pilot.press("tab")))
            queue.focus()
            await pilot.pause()
            rec("? / esc (help)", await timed(pilot, lambda: pilot.press("question_mark")))
            rec("? / esc (help)", await timed(pilot, lambda: pilot.press("escape")))
            rec("/ (filter box)", await timed(pilot, lambda: pilot.press("slash")))
            for ch in "t0001":
                rec("typing a filter", await timed(pilot, lambda c=ch: pilot.press(c)))
            rec("enter (apply filter)", await timed(pilot, lambda: pilot.press("enter")))
            rec("esc (clear filter)", await timed(pilot, lambda: pilot.press("escape")))
            await pilot.pause(0.3)
        out["snapshot applied (tick)"] = []
        for _ in range(10):
            t = time.perf_counter()
            engine.last = 0.0  # the next read publishes a new snapshot
            app.refresh_snapshot()
            await pilot.pause()
            out["snapshot applied (tick)"].append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    result = asyncio.run(bench(n))
    print(f"necroui key -> applied and painted, {n:,} tasks, a new snapshot every 0.5 s "
          "(~1% of rows changed), 160x50 headless (Pilot)")
    print(f"{'what':<26} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    every: list[float] = []
    for name, values in result.items():
        if not values:
            continue
        if name != "snapshot applied (tick)":
            every += values
        print(f"{name:<26} {len(values):>4} {statistics.median(values):>6.1f}ms "
              f"{pct(values, 0.95):>6.1f}ms {max(values):>6.1f}ms")
    print(f"{'all keys':<26} {len(every):>4} {statistics.median(every):>6.1f}ms "
          f"{pct(every, 0.95):>6.1f}ms {max(every):>6.1f}ms")


if __name__ == "__main__":
    main()
