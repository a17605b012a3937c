"""The timer's snapshots go onto the dashboard panel by panel (necroui/stepper.py): the same
dashboard as a whole apply in the end, a whole refresh finishes what is left first, a dialog
over the dashboard holds the steps until it closes, and each snapshot's notices come once."""

from __future__ import annotations

from necrocode.dispatcher.models import EventType, TaskEvent
from necroui_fakes import T0, FakeEngine
from tui_helpers import make_app, settle

from necroui.app import NecroApp
from necroui.screens.help import HelpScreen
from necroui.widgets import QueueTable


def _reprioritise(engine: FakeEngine, key: str, priority: int) -> None:
    engine.registry.tasks[key].priority = priority
    engine.bump()


def _queue_priority(app: NecroApp, key: str) -> int:
    view = app.main.query_one(QueueTable).view(key)
    assert view is not None
    return view.priority


async def test_a_stepped_apply_ends_as_a_whole_one(engine: FakeEngine) -> None:
    app = make_app(engine, refresh_interval=3600)  # the test drives the refreshes
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        key = app.main.query_one(QueueTable).shown_keys[-1]
        _reprioritise(engine, key, 99)
        app.refresh_snapshot(stepped=True)
        assert app.stepper.busy  # the header's step ran; the queue's waits for the loop
        assert app.main.shown is app.snapshot
        assert _queue_priority(app, key) != 99
        while app.stepper.busy:
            await pilot.pause(0.02)
        assert _queue_priority(app, key) == 99


async def test_a_whole_refresh_finishes_the_steps_first(engine: FakeEngine) -> None:
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        key = app.main.query_one(QueueTable).shown_keys[-1]
        _reprioritise(engine, key, 99)
        app.refresh_snapshot(stepped=True)
        assert app.stepper.busy
        app.refresh_snapshot()  # nothing new since: the steps left run now
        assert not app.stepper.busy
        assert _queue_priority(app, key) == 99


async def test_a_dialog_holds_the_steps_until_it_closes(engine: FakeEngine) -> None:
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        key = app.main.query_one(QueueTable).shown_keys[-1]
        _reprioritise(engine, key, 99)
        app.refresh_snapshot(stepped=True)
        await app.push_screen(HelpScreen())
        await pilot.pause(0.2)
        assert app.stepper.busy and _queue_priority(app, key) != 99
        app.pop_screen()
        await pilot.pause(0.2)
        assert not app.stepper.busy
        assert _queue_priority(app, key) == 99


async def test_each_snapshot_notices_once_stepped_or_whole(engine: FakeEngine) -> None:
    app = make_app(engine, refresh_interval=3600)
    told: list[str] = []
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        app._tell = lambda notices: told.extend(  # type: ignore[method-assign]
            n.message for n in notices)
        engine.registry.record(TaskEvent(EventType.TASK_FAILED, "chat/1.2", timestamp=T0,
                                         message="exit 1"))
        engine.bump()
        app.refresh_snapshot(stepped=True)  # its notices wait for a step of their own…
        engine.bump()
        app.refresh_snapshot()  # …a newer one, whole, tells them first: the older waits no more
        await pilot.pause(0.2)
        await settle(pilot)
        assert told == ["chat/1.2: exit 1"]
