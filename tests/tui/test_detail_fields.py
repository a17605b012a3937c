"""Task detail shows the pending reason and queue position of a queued task, the runner of a
running one, and "attempt N of M" counting runs; the finished table's `runs` agrees."""

from __future__ import annotations

from necrocode.dispatcher.models import TaskState
from necroui_fakes import FakeEngine, demo_tasks
from textual.widgets import Static
from tui_helpers import make_app, plain, select, settle

from necroui.screens.detail import TaskDetailScreen
from necroui.widgets import FinishedTable
from necroui.widgets.format import runs_of


def test_runs_count_the_successful_run_too() -> None:
    assert runs_of(TaskState.DONE, 0) == 1  # succeeded first time
    assert runs_of(TaskState.DONE, 2) == 3  # two failures, then success
    assert runs_of(TaskState.RUNNING, 1) == 2  # second run going on
    assert runs_of(TaskState.FAILED, 3) == 3  # every run failed
    assert runs_of(TaskState.READY, 0) == 0


async def _fields(pilot: object, table_id: str, key: str) -> str:
    app = pilot.app  # type: ignore[attr-defined]
    await select(pilot, table_id, key)  # type: ignore[arg-type]
    await pilot.press("enter")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    await app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]
    screen = app.screen
    assert isinstance(screen, TaskDetailScreen) and screen.key == key
    text = plain(screen.query_one("#detail-fields", Static))
    await pilot.press("escape")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    return " ".join(text.split())


async def test_detail_fields_by_state() -> None:
    tasks = demo_tasks()
    for t in tasks:
        if t.key == "chat/1.1":
            t.attempts = 0  # done at the first run
    engine = FakeEngine(tasks)
    app = make_app(engine)
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        queued = await _fields(pilot, "queue-table", "chat/3.2")
        assert "pending pool 'docker' full" in queued
        assert "queue position 2" in queued
        assert "attempt 0 of 3 (not run yet)" in queued
        blocked = await _fields(pilot, "queue-table", "chat/3.3")
        assert "pending dependency chat/1.3 failed" in blocked
        assert "queue position - (not placeable yet)" in blocked
        running = await _fields(pilot, "running-table", "chat/2.1")
        assert "runner r-chat-2.1-a1 (running)" in running
        assert "pool local" in running and "slot slot-3" in running
        assert "heartbeat 5s ago" in running
        assert "attempt 2 of 3" in running  # one failed attempt before: this is run 2
        done = await _fields(pilot, "finished-table", "chat/1.1")
        assert "attempt 1 of 3" in done
        finished = app.main.query_one(FinishedTable)
        assert str(finished.get_cell("chat/1.1", "att")) == "1"
        assert str(finished.get_cell("chat/1.3", "att")) == "3"
        assert finished.column_labels[3] == "runs"
