"""Pilot tests: each key drives the engine's control methods (FakeEngine)."""

from __future__ import annotations

from necrocode.dispatcher.models import TaskState
from necroui_fakes import FakeEngine
from textual.widgets import DataTable
from tui_helpers import make_app, select, settle

from necroui.screens.modals import ConfirmModal, PriorityModal, QuitChoice, QuitModal


async def test_p_pauses_and_resumes(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert engine.state == "paused"
        assert app.snapshot is not None and app.snapshot.state == "paused"
        await pilot.press("p")
        await settle(pilot)
        assert engine.state == "running"
        assert [c[0] for c in engine.calls] == ["pause", "resume"]


async def test_plus_minus_and_typed_priority(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/3.1")
        await pilot.press("plus")
        await settle(pilot)
        assert engine.registry.tasks["chat/3.1"].priority == 3
        await pilot.press("minus", "minus")
        await settle(pilot)
        assert engine.registry.tasks["chat/3.1"].priority == 1
        await pilot.press("equals_sign")
        await pilot.pause()
        assert isinstance(app.screen, PriorityModal)
        await pilot.press("end", "backspace", "backspace", "4", "2", "enter")
        await settle(pilot)
        assert engine.registry.tasks["chat/3.1"].priority == 42


async def test_r_retries_selected_failed_task(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.3")
        await pilot.press("r")
        await settle(pilot)
        assert ("retry", ("chat/1.3",)) in engine.calls
        assert engine.registry.tasks["chat/1.3"].state is TaskState.READY


async def test_retry_refused_shows_error(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.1")  # DONE: refused
        await pilot.press("r")
        await settle(pilot)
        assert engine.registry.tasks["chat/1.1"].state is TaskState.DONE
        assert any("cannot go from done" in n.message for n in app._notifications)


async def test_c_cancel_defaults_to_no(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/3.2")
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("enter")  # the focused button is No
        await settle(pilot)
        assert not any(c[0] == "cancel" for c in engine.calls)
        assert engine.registry.tasks["chat/3.2"].state is TaskState.READY
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert engine.registry.tasks["chat/3.2"].state is TaskState.CANCELLED


async def test_e_toggles_the_selected_pool(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pools = app.main.query_one("#pools", DataTable)
        pools.focus()
        pools.move_cursor(row=1)
        await pilot.press("e")
        await settle(pilot)
        assert engine.pool_enabled["docker"] is False
        await pilot.press("e")
        await settle(pilot)
        assert engine.pool_enabled["docker"] is True


async def test_space_marks_rows_for_bulk_retry(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = await select(pilot, "queue-table", "chat/3.3")
        await pilot.press("space")
        await select(pilot, "queue-table", "chat/4.1")
        await pilot.press("space")
        assert table.marked == {"chat/3.3", "chat/4.1"}
        await pilot.press("r")
        await settle(pilot)
        assert ("retry", ("chat/3.3",)) in engine.calls
        assert ("retry", ("chat/4.1",)) in engine.calls
        assert not table.marked


async def test_keymap_rebinds_by_binding_id(engine: FakeEngine) -> None:
    app = make_app(engine, keymap={"pause": "z"})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert engine.state == "running"
        await pilot.press("z")
        await settle(pilot)
        assert engine.state == "paused"


async def test_quit_with_runners_asks_and_leaves(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, QuitModal)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
    assert app.return_value is QuitChoice.LEAVE


async def test_quit_without_runners_exits_at_once() -> None:
    engine = FakeEngine([])
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value is QuitChoice.WAIT
