"""Benchmark: key -> visible change in the dashboard at 10,000 tasks while dispatching.

Keys go to the 160x50 dashboard as a terminal's key events, at a person's pace; each figure
is the time from the key event until the first frame written that shows its effect (the
screen, focus, cursor, sort, filter or filter box changed), p50 and p95 over the presses.
Every frame is rendered to the bytes a terminal would get (headless Textual skips that).

By default a scripted engine publishes a new snapshot every 0.5 s with ~1% of the queue
changed (re-prioritised, leaving, arriving): the UI side alone. ``--engine``: a real
DispatcherCore in the same process dispatching ``true`` through 4 runners, its threads
competing for the interpreter as they do under ``necroui``.

    python tests/bench/bench_keys.py [10000] [--engine] [--switch-interval 0.001]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import os
import random
import statistics
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_tui import ScriptedEngine, make_snapshot, mutate, queued  # noqa: E402
from textual import events  # noqa: E402
from textual._compositor import CompositorUpdate  # noqa: E402
from textual.keys import _get_unicode_name_from_key  # noqa: E402
from textual.widgets import Input  # noqa: E402

from necroui.app import NecroApp  # noqa: E402
from necroui.widgets import DiffTable  # noqa: E402

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


class GcPauses:
    """Milliseconds of each full (generation 2) collection while the benchmark runs."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._started) * 1000)


class Frames:
    """Timestamps the frames the app writes, each rendered to terminal bytes as a terminal
    would get them (headless Textual skips that step), and answers "when was the first frame
    that shows this?"."""

    def __init__(self, app: NecroApp) -> None:
        self.app = app
        self.waiting: tuple[Callable[[], bool], asyncio.Future[float]] | None = None
        self.frames = 0
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            original(screen, renderable)
            if renderable is None or app._batch_count:
                return
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)
            self.frames += 1
            if self.waiting is not None:
                shows, future = self.waiting
                if not future.done() and shows():
                    future.set_result(time.perf_counter())

        app._display = display  # type: ignore[method-assign]

    async def until(self, shows: Callable[[], bool], started: float,
                    timeout: float = 10.0) -> float:
        """Milliseconds from ``started`` to the first frame written while ``shows()``."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting = (shows, future)
        try:
            done = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            done = time.perf_counter()  # never shown: the timeout stands in
        finally:
            self.waiting = None
        return (done - started) * 1000


def key_event(key: str) -> events.Key:
    """The event a terminal's key press becomes (as Pilot builds it)."""
    char: str | None
    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(key))
    except KeyError:
        char = key if len(key) == 1 else None
    return events.Key(key, char)


def state(app: NecroApp) -> tuple[Any, ...]:
    """What a key can change on screen: the screen, the focus, the queue's cursor, sort and
    filter, the filter box."""
    table = app.main.query_one("#queue-table", DiffTable)
    box = app.main.query_one("#filter", Input)
    return (id(app.screen), id(app.focused), table.selected_key, table.sort_id,
            table.sort_reverse, table.filter_text, box.display, box.value)


async def bench(n: int, engine_mode: bool, root: Path) -> dict[str, list[float]]:
    engine: Any
    # as the necroui command runs it (paced full collections), where the console has that
    like_necroui: dict[str, Any] = (
        {"pace_collector": True}
        if "pace_collector" in inspect.signature(NecroApp).parameters else {})
    if engine_mode:
        engine = real_engine(root, n)
        app = NecroApp(engine, refresh_interval=0.5, **like_necroui)
    else:
        engine = Dispatching(n)
        app = NecroApp(engine, clock=lambda: T0, refresh_interval=0.5,  # type: ignore[arg-type]
                       **like_necroui)
    out: dict[str, list[float]] = {}
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            frames = Frames(app)
            queue = app.main.query_one("#queue-table", DiffTable)
            while queue.row_count < n // 2:  # the first snapshot with the queue applied
                await asyncio.sleep(0.1)
            await pilot.pause(1.0)
            queue.focus()
            await pilot.pause()

            async def press(name: str, key: str, gap: float = 0.15) -> None:
                before = state(app)
                started = time.perf_counter()
                app.post_message(key_event(key))
                ms = await frames.until(lambda: state(app) != before, started)
                out.setdefault(name, []).append(ms)
                await asyncio.sleep(gap)  # a person's pace between keys

            for _ in range(40):
                await press("j / k (cursor)", "j", 0.05)
            for _ in range(5):
                await press("G / Home", "G")
                await press("G / Home", "home")
                await press("T (sort)", "T")
                await press("O (order)", "O")
                await press("tab (panel)", "tab")
                queue.focus()
                await pilot.pause()
                await press("? / esc (help)", "question_mark")
                await press("? / esc (help)", "escape")
                await press("/ (filter box)", "slash")
                for ch in "t0001":
                    await press("typing a filter", ch, 0.1)
                await press("enter (apply filter)", "enter")
                await press("esc (clear filter)", "escape", 0.3)
            out["snapshot applied (tick)"] = []
            for _ in range(10):
                version = app.snapshot.version if app.snapshot else 0
                if not engine_mode:
                    engine.last = 0.0  # the next read publishes a new snapshot
                started = time.perf_counter()
                app.refresh_snapshot()
                ms = await frames.until(
                    lambda v=version: app.snapshot is not None and app.snapshot.version != v,
                    started)
                out["snapshot applied (tick)"].append(ms)
                await asyncio.sleep(0.3)
            if engine_mode and app.snapshot is not None:
                c = app.snapshot.counters
                print(f"engine: {len(app.snapshot.queued):,} queued at the end, "
                      f"{c.done:,} done", file=sys.stderr)
    finally:
        if engine_mode:
            engine.stop(timeout=10)
    return out


def real_engine(root: Path, n: int) -> Any:
    """A DispatcherCore in this process dispatching ``n`` tasks running ``true``."""
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.core import DispatcherCore
    from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset

    config = DispatcherConfig(
        registry_path=str(root / "registry.db"), state_dir=str(root / "state"),
        max_global_concurrency=4, poll_interval=5.0, heartbeat_timeout=60.0,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=4)],
        skill_mapping={"default": ["local"]},
    )
    core = DispatcherCore(config)
    tasks = [Task(id=f"t{i:05d}", title=f"task {i}", taskset="bench", command=["true"],
                  priority=i % 10)
             for i in range(n)]
    core.registry.submit_taskset(Taskset(name="bench", tasks=tasks))
    core.start()
    core.wait_for_snapshot(0, timeout=30.0)
    return core


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="?", type=int, default=10_000)
    parser.add_argument("--engine", action="store_true",
                        help="a real DispatcherCore in this process dispatching `true` "
                        "(4 runners) instead of the scripted snapshots")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval for this process (seconds)")
    args = parser.parse_args()
    n = args.tasks
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    pauses = GcPauses()
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        result = asyncio.run(bench(n, args.engine, Path(tmp)))
    result["full collection (gc)"] = pauses.pauses
    load = os.getloadavg()[0]
    source = ("a real engine in this process dispatching `true`" if args.engine
              else "a new snapshot every 0.5 s (~1% of rows changed)")
    print(f"necroui key -> first frame showing it, {n:,} tasks, {source}, 160x50, "
          f"switch interval {sys.getswitchinterval() * 1000:g} ms, load average {load:.1f}")
    print(f"{'what':<26} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    every: list[float] = []
    for name, values in result.items():
        if not values:
            continue
        if name not in ("snapshot applied (tick)", "full collection (gc)"):
            every += values
        print(f"{name:<26} {len(values):>4} {statistics.median(values):>6.1f}ms "
              f"{pct(values, 0.95):>6.1f}ms {max(values):>6.1f}ms")
    print(f"{'all keys':<26} {len(every):>4} {statistics.median(every):>6.1f}ms "
          f"{pct(every, 0.95):>6.1f}ms {max(every):>6.1f}ms")


if __name__ == "__main__":
    main()
