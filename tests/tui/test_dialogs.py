"""Cancel dialog arrows, palette Quit, read-only help, plural toasts, marks cleared after bulk."""

from __future__ import annotations

from necroui_fakes import FakeEngine
from textual.widgets import Button, Static
from tui_helpers import make_app, plain, select, settle

from necroui.app import fix_plurals
from necroui.screens.help import HelpScreen
from necroui.screens.modals import ConfirmModal, QuitModal
from necroui.widgets import FinishedTable, QueueTable


async def test_left_right_move_between_no_and_cancel_task(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/3.1")
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert isinstance(app.focused, Button) and app.focused.id == "no"
        await pilot.press("right")
        assert isinstance(app.focused, Button) and app.focused.id == "yes"
        await pilot.press("left")
        assert isinstance(app.focused, Button) and app.focused.id == "no"
        await pilot.press("right", "enter")
        await settle(pilot)
        assert ("cancel", ("chat/3.1",)) in engine.calls


async def test_palette_quit_takes_the_quit_flow(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        quits = [c for c in app.get_system_commands(app.screen) if c.title == "Quit"]
        assert len(quits) == 1
        quits[0].callback()
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)  # runners run: asks Wait/Leave/Stop
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running


async def test_read_only_help_does_not_mention_bulk_marks(engine: FakeEngine) -> None:
    for read_only in (True, False):
        app = make_app(engine, read_only=read_only)
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(pilot)
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            text = " ".join(plain(s, 200) for s in app.screen.query(Static))
            assert ("Marked rows" in text) is not read_only


def test_retry_toast_plurals() -> None:
    assert fix_plurals("a was blocked by 1 failed dependenc(ies): b") == (
        "a was blocked by 1 failed dependency: b")
    assert fix_plurals("a was blocked by 2 failed dependenc(ies): b") == (
        "a was blocked by 2 failed dependencies: b")
    assert fix_plurals("pool (b) f(x)") == "pool (b) f(x)"


async def test_bulk_action_clears_every_mark(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        finished = await select(pilot, "finished-table", "chat/1.3")
        await pilot.press("space")
        queue = await select(pilot, "queue-table", "chat/3.3")
        await pilot.press("space")
        assert finished.marked and queue.marked
        await pilot.press("r")
        await settle(pilot)
        assert ("retry", ("chat/3.3",)) in engine.calls
        assert not app.main.query_one(QueueTable).marked
        assert not app.main.query_one(FinishedTable).marked
        await select(pilot, "queue-table", "chat/3.1")
        await pilot.press("space")
        await pilot.press("plus")
        await settle(pilot)
        assert not queue.marked
