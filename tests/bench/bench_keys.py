"""Benchmark: key -> visible change in the dashboard at 10,000 tasks while dispatching.

Keys go to the 160x50 dashboard as a terminal's key events, posted from a thread of their own
as Textual's driver posts what it reads, after a random gap (a person's pace), so they land at
every phase of the console's work, during a snapshot's apply too; each figure is the time from
the key's sending until the first frame written that shows its effect (the screen, focus,
cursor, sort, filter or filter box changed), p50 and p95 over the presses. Every frame is
rendered to the bytes a terminal would get (headless Textual skips that). The keys sent while
a snapshot was being applied (from the refresh that took it to the end of the frame drawing
it) are counted apart too.

By default a scripted engine publishes a new snapshot every 0.5 s with ~1% of the queue
changed (re-prioritised, leaving, arriving): the UI side alone. ``--engine``: a real
DispatcherCore in the same process dispatching ``true`` through 4 runners, its threads
competing for the interpreter as they do under ``necroui``.

    python tests/bench/bench_keys.py [10000] [--engine] [--rounds 20] [--switch-interval 0.001]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
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


class Applies:
    """When the console applied a snapshot: from the refresh that took it until the end of the
    first frame written after it (the frame that draws it is part of its cost). A console that
    applies in steps (``app.stepper``): until the frame after its last step, the gaps between
    the steps included (a key sent then is counted as sent during the apply)."""

    def __init__(self, app: NecroApp) -> None:
        self.app = app
        self.spans: list[tuple[float, float]] = []
        self._open: float | None = None
        original = app.refresh_snapshot

        def refresh_snapshot(*args: Any, **kwargs: Any) -> None:
            shown = app.main.shown
            started = time.perf_counter()
            original(*args, **kwargs)
            if app.main.shown is not shown:
                self._close(started)
                self._open = started
                self.spans.append((started, time.perf_counter()))

        app.refresh_snapshot = refresh_snapshot  # type: ignore[method-assign]

    def _applying(self) -> bool:
        stepper = getattr(self.app, "stepper", None)
        return bool(stepper is not None and stepper.busy)

    def frame_written(self) -> None:
        """A frame written: the one drawing the last apply, if it is complete."""
        if self._open is not None and not self._applying():
            self._close(time.perf_counter())

    def _close(self, now: float) -> None:
        if self._open is not None:
            if now - self._open < 3.0:
                self.spans[-1] = (self._open, now)
            self._open = None

    def during(self, at: float) -> bool:
        """Did ``at`` fall inside an apply (or the frame drawing it)?"""
        if self._open is not None and self._open <= at < self._open + 3.0:
            return True
        return any(start <= at <= end for start, end in self.spans[-8:])


class Frames:
    """Timestamps the frames the app writes, each rendered to terminal bytes as a terminal
    would get them (headless Textual skips that step), and answers "when was the first frame
    that shows this?"."""

    def __init__(self, app: NecroApp, applies: Applies) -> None:
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
            now = time.perf_counter()
            applies.frame_written()
            if self.waiting is not None:
                shows, future = self.waiting
                if not future.done() and shows():
                    future.set_result(now)

        app._display = display  # type: ignore[method-assign]

    def watch(self, shows: Callable[[], bool]) -> asyncio.Future[float]:
        """A future set to the time of the first frame written while ``shows()``."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting = (shows, future)
        return future

    async def until(self, shows: Callable[[], bool], started: float,
                    timeout: float = 10.0) -> float:
        """Milliseconds from ``started`` to the first frame written while ``shows()``."""
        future = self.watch(shows)
        try:
            done = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            done = time.perf_counter()  # never shown: the timeout stands in
        finally:
            self.waiting = None
        return (done - started) * 1000


class Terminal:
    """Sends keys from a thread of its own, as a terminal's input thread does (Textual's driver
    posts each key it reads from a thread to the app's loop): a key can arrive at any moment,
    while the console applies a snapshot too, and then waits for it as a real one does. (A
    key posted from the loop itself, as Pilot does, only ever arrives between two callbacks.)"""

    def __init__(self, app: NecroApp) -> None:
        self.app = app
        self.jobs: queue.Queue[tuple[float, list[events.Key], Callable[[float], None]] | None]
        self.jobs = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="terminal", daemon=True)
        self.thread.start()

    def send(self, keys: list[events.Key], at: float, sent: Callable[[float], None]) -> None:
        """Post ``keys`` back to back at ``at`` (perf_counter); ``sent(t)`` tells when."""
        self.jobs.put((at, keys, sent))

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(5)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            at, keys, sent = job
            time.sleep(max(0.0, at - time.perf_counter()))
            started = time.perf_counter()
            sent(started)
            for key in keys:
                self.app.post_message(key)


def key_event(key: str) -> events.Key:
    """The event a terminal's key press becomes (as Pilot builds it)."""
    char: str | None
    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(key))
    except KeyError:
        char = key if len(key) == 1 else None
    return events.Key(key, char)


def shown(app: NecroApp, what: str) -> tuple[Any, ...]:
    """What a key of class ``what`` changes on screen (only that: the cursor's task also moves
    when its row is dispatched, which must not pass for another key's effect)."""
    table = app.main.query_one("#queue-table", DiffTable)
    box = app.main.query_one("#filter", Input)
    return {
        "cursor": (table.selected_key,),
        "sort": (table.sort_id, table.sort_reverse),
        "focus": (id(app.focused),),
        "screen": (id(app.screen),),
        "box": (box.display, id(app.focused)),
        "text": (box.value,),
        # enter after the debounced filter applied: the focus back on the table shows it
        "filter": (table.filter_text, box.display, id(app.focused)),
    }[what]


#: (row label, key, what it changes, the gap before it: a person's pace, drawn at random so
#: keys land at every phase of the console's snapshot refreshes)
ROUND: tuple[tuple[str, str, str, tuple[float, float]], ...] = (
    ("G / Home", "G", "cursor", (0.05, 0.5)),
    ("G / Home", "home", "cursor", (0.05, 0.5)),
    ("T (sort)", "T", "sort", (0.05, 0.5)),
    ("O (order)", "O", "sort", (0.05, 0.5)),
    ("tab (panel)", "tab", "focus", (0.05, 0.5)),
    ("? / esc (help)", "question_mark", "screen", (0.05, 0.5)),
    ("? / esc (help)", "escape", "screen", (0.05, 0.5)),
    ("/ (filter box)", "slash", "box", (0.05, 0.5)),
    ("typing a filter", "t", "text", (0.05, 0.3)),
    ("typing a filter", "0", "text", (0.05, 0.3)),
    ("typing a filter", "1", "text", (0.05, 0.3)),
    ("enter (apply filter)", "enter", "filter", (0.05, 0.5)),
    ("esc (clear filter)", "escape", "filter", (0.05, 0.5)),
)
CURSOR = ("j / k (cursor)", "cursor", (0.03, 0.45))


class Results:
    """Milliseconds per key class, and the keys sent while a snapshot was being applied."""

    def __init__(self) -> None:
        self.keys: dict[str, list[float]] = {}
        self.during_apply: list[float] = []
        self.waited: list[float] = []  # sent -> the app's loop took the key
        self.timeouts = 0


async def bench(n: int, engine_mode: bool, root: Path, rounds: int, seed: int,
                extra: int) -> tuple[Results, list[float]]:
    engine: Any
    # as the necroui command runs it (paced full collections), where the console has that
    like_necroui: dict[str, Any] = (
        {"pace_collector": True}
        if "pace_collector" in inspect.signature(NecroApp).parameters else {})
    if engine_mode:
        engine = real_engine(root, n + extra)
        app = NecroApp(engine, refresh_interval=0.5, **like_necroui)
    else:
        engine = Dispatching(n)
        app = NecroApp(engine, clock=lambda: T0, refresh_interval=0.5,  # type: ignore[arg-type]
                       **like_necroui)
    res = Results()
    rng = random.Random(seed)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            applies = Applies(app)
            frames = Frames(app, applies)
            terminal = Terminal(app)
            queue_table = app.main.query_one("#queue-table", DiffTable)
            while queue_table.row_count < n // 2:  # the first snapshot with the queue applied
                await asyncio.sleep(0.1)
            await pilot.pause(1.0)
            app.set_focus(queue_table)
            await pilot.pause()
            if engine_mode:
                print(f"engine: {queue_table.row_count:,} queued at the start")
            loop = asyncio.get_running_loop()
            armed: dict[str, Any] = {}
            original_on_event = app.on_event

            async def on_event(event: events.Event) -> None:
                # the key reaches the app's loop: what it changes, as it is before the key
                if isinstance(event, events.Key) and not event.is_forwarded and armed:
                    what, delivered = armed.pop("what"), armed.pop("delivered")
                    before = shown(app, what)
                    future = frames.watch(lambda: shown(app, what) != before)
                    delivered.set_result((time.perf_counter(), future))
                await original_on_event(event)

            app.on_event = on_event  # type: ignore[method-assign]

            async def press(name: str, key: str, what: str, gap: tuple[float, float]) -> None:
                sent: list[float] = []
                delivered: asyncio.Future[tuple[float, asyncio.Future[float]]] = (
                    loop.create_future())
                armed.update(what=what, delivered=delivered)
                terminal.send([key_event(key)], time.perf_counter() + rng.uniform(*gap),
                              sent.append)
                try:
                    took, future = await asyncio.wait_for(delivered, 10.0)
                    done = await asyncio.wait_for(future, 5.0)
                except TimeoutError:
                    res.timeouts += 1
                    done = took = time.perf_counter()  # never shown: the timeout stands in
                finally:
                    frames.waiting = None
                    armed.clear()
                ms = (done - sent[0]) * 1000
                res.keys.setdefault(name, []).append(ms)
                res.waited.append((took - sent[0]) * 1000)
                if applies.during(sent[0]):
                    res.during_apply.append(ms)

            # the cursor in the middle of the queue, whose rows are not dispatched meanwhile
            queue_table.move_cursor(row=queue_table.row_count // 2)
            await pilot.pause()
            label, what, gap = CURSOR
            for _ in range(2 * rounds):
                await press(label, rng.choice("jk"), what, gap)
            for _ in range(rounds):
                for label, key, what, gap in ROUND:
                    await press(label, key, what, gap)
                    if key == "tab":
                        app.set_focus(queue_table)
                        await pilot.pause()
            terminal.close()
            spans = [(end - start) * 1000 for start, end in applies.spans]
            if engine_mode and app.snapshot is not None:
                c = app.snapshot.counters
                print(f"engine: {len(app.snapshot.queued):,} queued at the end, "
                      f"{c.done:,} done, {c.failed:,} failed")
    finally:
        if engine_mode:
            engine.stop(timeout=10)
    return res, spans


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


def row(name: str, values: list[float]) -> str:
    return (f"{name:<30} {len(values):>4} {statistics.median(values):>6.1f}ms "
            f"{pct(values, 0.95):>6.1f}ms {max(values):>6.1f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="?", type=int, default=10_000)
    parser.add_argument("--engine", action="store_true",
                        help="a real DispatcherCore in this process dispatching `true` "
                        "(4 runners) instead of the scripted snapshots")
    parser.add_argument("--rounds", type=int, default=20,
                        help="presses of each key (j / k: twice as many; default 20)")
    parser.add_argument("--extra", type=int, default=7000,
                        help="--engine: tasks submitted beyond TASKS, dispatched while the "
                        "keys come (~50 a second), so the queue stays above TASKS")
    parser.add_argument("--seed", type=int, default=1, help="of the random gaps between keys")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval for this process (seconds)")
    args = parser.parse_args()
    n = args.tasks
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    pauses = GcPauses()
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        res, spans = asyncio.run(bench(n, args.engine, Path(tmp), args.rounds, args.seed,
                                      args.extra))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    load = os.getloadavg()[0]
    source = ("a real engine in this process dispatching `true`" if args.engine
              else "a new snapshot every 0.5 s (~1% of rows changed)")
    print(f"necroui key -> first frame showing it, {n:,} tasks, {source}, 160x50, "
          f"switch interval {sys.getswitchinterval() * 1000:g} ms, load average "
          f"{load_before:.1f} -> {load:.1f}, {wall:.0f} s wall, {cpu:.0f} s CPU")
    print(f"{'what':<30} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    every: list[float] = []
    for name, values in res.keys.items():
        every += values
        print(row(name, values))
    print(row("all keys", every))
    if res.during_apply:
        print(row("keys sent during an apply", res.during_apply))
    else:
        print(f"{'keys sent during an apply':<30} {0:>4}")
    print(row("  sent -> taken by the loop", res.waited))
    if spans:
        print(row("snapshot applied, until drawn", spans))
    if pauses.pauses:
        print(row("full collection (gc)", pauses.pauses))
    if res.timeouts:
        print(f"{res.timeouts} keys never showed within 5 s (counted as the time waited)")


if __name__ == "__main__":
    main()
