"""The cursor near the head of a queue dispatched 8 at a time stays on its task (by key)."""

from __future__ import annotations

import pytest
from necrocode.dispatcher.models import TaskState
from necroui_fakes import FakeEngine, demo_tasks
from test_cursor import highlighted
from tui_helpers import make_app, settle

from necroui.widgets import QueueTable


@pytest.mark.parametrize(("start", "per_round"), [(0, 8), (3, 8), (3, 12), (9, 8)])
async def test_cursor_holds_its_task_while_rows_above_are_dispatched(
    start: int, per_round: int,
) -> None:
    engine = FakeEngine(demo_tasks(extra=3000))
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        table = app.main.query_one(QueueTable)
        table.focus()
        await pilot.pause()
        table.move_cursor(row=start)
        await pilot.pause()
        keep = table.selected_key
        assert keep is not None
        for round_no in range(4):
            order = table.shown_keys
            leaving = [k for k in order if k != keep][:per_round]  # one dispatch round
            for key in leaving:
                engine.registry.tasks[key].state = TaskState.RUNNING
            engine.bump()
            await settle(pilot)
            assert highlighted(table) == keep, (round_no, table.cursor_row)
            assert table.selected_key == keep
        # then it leaves too: the cursor goes to its nearest surviving neighbour
        order = table.shown_keys
        index = order.index(keep)
        engine.registry.tasks[keep].state = TaskState.RUNNING
        engine.bump()
        await settle(pilot)
        assert highlighted(table) == order[index + 1]


async def test_end_and_home_move_to_last_and_first_row() -> None:
    engine = FakeEngine(demo_tasks(extra=300))
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        table = app.main.query_one(QueueTable)
        table.focus()
        await pilot.pause()
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_row == table.row_count - 1
        assert highlighted(table) == table.shown_keys[-1]
        await pilot.press("home")
        await pilot.pause()
        assert table.cursor_row == 0
        assert highlighted(table) == table.shown_keys[0]
        footer = " ".join(str(b.description) for _, b, *_ in app.screen.active_bindings.values()
                          if b.show)
        assert "First row" not in footer and "Last row" not in footer
