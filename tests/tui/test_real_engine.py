"""Pilot tests driving the REAL DispatcherCore (MemoryRegistry + FakeLauncher): each key must
change the engine's state, not only the screen."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset, TaskState
from necrocode.dispatcher.registry.memory import MemoryRegistry
from textual.pilot import Pilot
from textual.widgets import DataTable

from necroui.app import NecroApp
from necroui.widgets import DiffTable


class Live:
    """A started engine over fakes, with the tasks of the scenario."""

    def __init__(self, tmp_path: Path) -> None:
        pools = [AgentPool("local", PoolType.LOCAL_PROCESS, max_concurrency=1),
                 AgentPool("other", PoolType.LOCAL_PROCESS, max_concurrency=1)]
        self.config = DispatcherConfig(
            registry_path=":memory:", state_dir=str(tmp_path / "state"), poll_interval=0.2,
            retry_max_attempts=1, retry_backoff_base=0.05, retry_jitter=0.0, api_enabled=False,
            runner_stop_grace=0.2, agent_pools=pools,
            skill_mapping={"default": ["local"], "x": ["other"]},
        )
        self.registry = MemoryRegistry()
        self.launcher = FakeLauncher()
        self.core = DispatcherCore(self.config, registry=self.registry,
                                   launchers={PoolType.LOCAL_PROCESS: self.launcher})
        tasks = [
            Task(id="a", title="runs first"),
            Task(id="b", title="waits for a slot"),
            Task(id="c", title="after b", dependencies=["b"]),
            Task(id="f", title="fails", required_skill="x"),
        ]
        self.core.submit(Taskset(name="ts", tasks=tasks))

    def task(self, key: str) -> Task:
        return self.registry.get_task(key)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    h = Live(tmp_path)
    h.core.start()
    yield h
    h.core.stop(timeout=0.5)


async def until(pilot: Pilot[Any], cond: Callable[[], Any], what: str,
                timeout: float = 15.0) -> Any:
    """Poll (refreshing the dashboard) until ``cond()`` is truthy."""
    app = pilot.app
    assert isinstance(app, NecroApp)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await app.workers.wait_for_complete()
        app.refresh_snapshot()
        await pilot.pause(0.02)
        value = cond()
        if value:
            return value
    raise AssertionError(f"timed out waiting for {what}")


async def select(pilot: Pilot[Any], table_id: str, key: str) -> None:
    app = pilot.app
    assert isinstance(app, NecroApp)
    table = app.main.query_one(f"#{table_id}", DiffTable)
    await until(pilot, lambda: key in table.shown_keys, f"{key} in {table_id}")
    table.focus()
    await pilot.pause()
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()
    assert table.selected_key == key


async def test_keys_drive_the_real_engine(live: Live) -> None:
    # f fails for good (max 1 attempt), so it can be retried from the dashboard
    runner_f = await _wait_launch(live, "ts/f")
    live.launcher.finish(runner_f, 1)
    app = NecroApp(live.core, refresh_interval=0.05)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: live.task("ts/f").state is TaskState.FAILED, "f failed")

        # p: pause, and the dashboard shows it
        await pilot.press("p")
        await until(pilot, lambda: live.core.paused and app.snapshot
                    and app.snapshot.state == "paused", "paused")
        await pilot.press("p")
        await until(pilot, lambda: not live.core.paused, "resumed")

        # +: priority persisted in the registry
        await select(pilot, "queue-table", "ts/b")
        await pilot.press("plus")
        await until(pilot, lambda: live.task("ts/b").priority == 1, "priority 1 persisted")
        await pilot.press("equals_sign")
        await pilot.pause()
        await pilot.press("backspace", "7", "enter")
        await until(pilot, lambda: live.task("ts/b").priority == 7, "priority 7 persisted")

        # c then y: the blocked task is cancelled
        await select(pilot, "queue-table", "ts/c")
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await until(pilot, lambda: live.task("ts/c").state is TaskState.CANCELLED, "c cancelled")

        # r on the failed task: retried (launched again)
        await select(pilot, "finished-table", "ts/f")
        await pilot.press("r")
        await until(pilot, lambda: len(live.launcher.launch_for("ts/f")) == 2, "f relaunched")

        # e on the pool row: the engine disables the pool
        pools = app.main.query_one("#pools", DataTable)
        pools.focus()
        pools.move_cursor(row=pools.get_row_index("other"))
        await pilot.press("e")
        await until(pilot, lambda: app.snapshot and not next(
            p for p in app.snapshot.pools if p.pool_name == "other").enabled, "pool disabled")


async def _wait_launch(live: Live, key: str) -> str:
    import asyncio

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        launches = live.launcher.launch_for(key)
        if launches:
            return launches[-1].runner.runner_id
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key} never launched")


async def test_tasks_move_from_queue_to_running_to_finished(live: Live) -> None:
    app = NecroApp(live.core, refresh_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        main = app.main
        running = main.query_one("#running-table", DiffTable)
        queue = main.query_one("#queue-table", DiffTable)
        finished = main.query_one("#finished-table", DiffTable)
        await until(pilot, lambda: "ts/a" in running.shown_keys, "a running")
        assert "ts/b" in queue.shown_keys
        live.launcher.finish(live.launcher.launch_for("ts/a")[-1].runner.runner_id, 0)
        await until(pilot, lambda: "ts/a" in finished.shown_keys
                    and "ts/b" in running.shown_keys, "a finished, b running")
        assert "ts/a" not in running.shown_keys and "ts/b" not in queue.shown_keys
