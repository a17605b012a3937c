"""Notifications in the console: toast and bell, failures kept until F, 'N of M' finished."""

from __future__ import annotations

import dataclasses

from necrocode.dispatcher.models import EventType, TaskEvent, TaskState
from necrocode.dispatcher.snapshot import Snapshot
from necroui_fakes import T0, FakeEngine
from tui_helpers import make_app, settle

from necroui.widgets import DashboardHeader, FinishedTable
from necroui.widgets.header import header_text


class BoundedEngine(FakeEngine):
    """Keeps only the newest two finished tasks in its snapshots, as the engine bounds them."""

    def _build(self) -> Snapshot:
        snap = super()._build()
        return dataclasses.replace(snap, finished=snap.finished[:2])


async def test_a_failure_rings_stays_counted_until_f_and_f_shows_failed_only() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        await settle(pilot)
        assert bells == []  # what had failed before the console started is no news
        task = engine.registry.tasks["chat/2.1"]
        task.state, task.finished_at, task.last_error = TaskState.FAILED, T0, "exit code 3"
        engine.registry.record(TaskEvent(EventType.TASK_FAILED, "chat/2.1", T0,
                                         "exit code 3", seq=999))
        engine.bump()
        await settle(pilot)
        assert bells == [1]
        messages = [str(n.message) for n in app._notifications]  # noqa: SLF001
        assert any("chat/2.1" in m and "exit code 3" in m for m in messages)
        header = app.main.query_one(DashboardHeader)
        assert header.unacknowledged == 1
        assert "1 new failure (F)" in header_text(app.snapshot, unacknowledged=1).plain
        await pilot.press("F")
        await pilot.pause()
        finished = app.main.query_one(FinishedTable)
        assert header.unacknowledged == 0
        assert set(finished.shown_keys) == {"chat/2.1", "chat/1.3"}  # the failed ones
        assert "Failed 2 of 2" in str(app.main.query_one("#box-finished").border_title)
        await pilot.press("F")
        await pilot.pause()
        assert len(finished.shown_keys) == 5


async def test_the_finished_panel_says_how_many_of_all() -> None:
    app = make_app(BoundedEngine())
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        assert app.main.query_one("#box-finished").border_title == "Finished 2 of 4"


async def test_a_budget_stop_is_told_once_with_bell_toast_and_desktop_notification() -> None:
    import io

    engine = FakeEngine()
    written = io.StringIO()
    app = make_app(engine, notify_osc="9", osc_write=written.write)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        await settle(pilot)
        engine.registry.record(TaskEvent(EventType.BUDGET_EXCEEDED, "chat/2.1", T0,
                                         "budget exceeded: 1.23/1.00 USD"))
        engine.bump()
        await settle(pilot)
        assert bells == [1]
        assert written.getvalue() == ("\x1b]9;necroui: budget stop: chat/2.1: stopped, "
                                      "budget exceeded: 1.23/1.00 USD\x07")
        task = engine.registry.tasks["chat/2.1"]  # the failure that follows the stop
        task.state, task.finished_at = TaskState.FAILED, T0
        task.last_error = "budget exceeded: 1.23/1.00 USD"
        engine.registry.record(TaskEvent(EventType.TASK_FAILED, "chat/2.1", T0,
                                         "budget exceeded: 1.23/1.00 USD",
                                         details={"reason": "budget"}))
        engine.bump()
        await settle(pilot)
        assert bells == [1] and written.getvalue().count("\x1b]9;") == 1  # told once
        messages = [str(n.message) for n in app._notifications]  # noqa: SLF001
        assert sum("chat/2.1" in m for m in messages) == 1
        assert app.main.query_one(DashboardHeader).unacknowledged == 1
