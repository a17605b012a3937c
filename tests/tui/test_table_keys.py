"""The task tables' own keys: j/k/G as in k9s, Home/End, page keys, enter and a click."""

from __future__ import annotations

from necroui_fakes import FakeEngine, demo_tasks
from tui_helpers import make_app, settle

from necroui.screens.detail import TaskDetailScreen
from necroui.widgets import QueueTable


async def test_j_k_G_and_home_move_the_cursor() -> None:
    app = make_app(FakeEngine(demo_tasks(extra=200)))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        queue = app.main.query_one(QueueTable)
        queue.focus()
        await pilot.pause()
        keys = queue.shown_keys
        await pilot.press("j", "j", "j", "k")
        assert queue.selected_key == keys[2]
        await pilot.press("G")
        await pilot.pause()
        assert queue.selected_key == keys[-1]
        assert int(queue.scroll_y) > 0  # the last row is in view
        line = queue.render_line(queue.cursor_row - int(queue.scroll_y) + 1).text
        assert keys[-1][-4:] in line
        await pilot.press("home")
        await pilot.pause()
        assert queue.selected_key == keys[0] and int(queue.scroll_y) == 0
        await pilot.press("pagedown")
        assert queue.cursor_row > 10


async def test_enter_and_a_click_on_the_highlighted_row_open_the_detail() -> None:
    app = make_app(FakeEngine(demo_tasks(extra=20)))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        queue = app.main.query_one(QueueTable)
        queue.focus()
        await pilot.press("j")
        key = queue.selected_key
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TaskDetailScreen) and app.screen.key == key
        await pilot.press("escape")
        await pilot.pause()
        await pilot.click(QueueTable, offset=(5, 4))  # row 3 under the header
        await pilot.pause()
        assert queue.cursor_row == 3 and app.screen is app.main
        await pilot.click(QueueTable, offset=(5, 4))
        await pilot.pause()
        assert isinstance(app.screen, TaskDetailScreen)
        assert app.screen.key == queue.shown_keys[3]
