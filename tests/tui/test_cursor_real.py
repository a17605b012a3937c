"""On the REAL engine (FakeLauncher, 8 slots), a cursor near the head of the queue keeps its
task while each dispatch round takes the 8 rows above it (QA saw it drift 8 rows a round)."""

from __future__ import annotations

from pathlib import Path

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset
from necrocode.dispatcher.registry.memory import MemoryRegistry
from test_cursor import highlighted
from test_real_engine import until

from necroui.app import NecroApp
from necroui.widgets import QueueTable


@pytest.mark.parametrize("row", [8, 9, 20])
async def test_cursor_holds_near_the_head_on_the_real_engine(tmp_path: Path, row: int) -> None:
    pools = [AgentPool("local", PoolType.LOCAL_PROCESS, max_concurrency=8)]
    config = DispatcherConfig(registry_path=":memory:", state_dir=str(tmp_path / "s"),
                              poll_interval=0.2, api_enabled=False, runner_stop_grace=0.2,
                              agent_pools=pools, max_global_concurrency=8)
    launcher = FakeLauncher()
    core = DispatcherCore(config, registry=MemoryRegistry(),
                          launchers={PoolType.LOCAL_PROCESS: launcher})
    core.submit(Taskset(name="ts", tasks=[Task(id=f"t{i:05d}", title="x") for i in range(2000)]))
    core.start()
    try:
        app = NecroApp(core, refresh_interval=0.1)
        async with app.run_test(size=(160, 50)) as pilot:
            table = app.main.query_one(QueueTable)
            await until(pilot, lambda: len(app.main.query_one("#running-table").shown_keys) == 8
                        and table.row_count > 100, "8 running")
            table.focus()
            await pilot.pause()
            table.move_cursor(row=row)
            await pilot.pause()
            keep = table.selected_key
            seen = []
            for _ in range(4):
                running = launcher.running()
                for rid in running:
                    launcher.finish(rid, 0)
                await until(pilot, lambda old=set(running): not (old & set(launcher.running()))
                            and len(launcher.running()) == 8, "next round")
                await until(pilot, lambda: len(table.shown_keys) > 0, "x")
                await pilot.pause(0.3)
                queued = {v.key for v in app.snapshot.queued}  # type: ignore[union-attr]
                if keep not in queued:  # dispatched itself: the neighbour rule applies
                    break
                seen.append((highlighted(table), table.cursor_row, table.shown_keys[:3]))
            assert seen, "the scenario must keep the task queued for a round"
            assert all(s[0] == keep for s in seen), (keep, seen)
    finally:
        core.stop(timeout=0.5)
