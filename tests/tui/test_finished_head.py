"""The Finished panel keeps its newest entries on top and in view."""

from __future__ import annotations

from necrocode.dispatcher.models import TaskState
from necroui_fakes import T0, FakeEngine, demo_tasks
from test_cursor import highlighted
from tui_helpers import make_app, settle

from necroui.widgets import FinishedTable


def finish(engine: FakeEngine, keys: list[str], at: float) -> None:
    for i, key in enumerate(keys):
        task = engine.registry.tasks[key]
        task.state = TaskState.DONE
        task.started_at = at - 10
        task.finished_at = at + i
    engine.bump()


async def test_new_finished_entries_stay_on_top_and_visible() -> None:
    engine = FakeEngine(demo_tasks(extra=120))
    bulk = sorted(k for k in engine.registry.tasks if k.startswith("bulk/"))
    finish(engine, bulk[:60], T0 - 200)
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        table = app.main.query_one(FinishedTable)
        assert table.cursor_row == 0
        for round_no in range(3):
            new = bulk[60 + 10 * round_no: 70 + 10 * round_no]
            finish(engine, new, T0 - 100 + 20 * round_no)
            await settle(pilot)
            await pilot.pause()
            newest = table.shown_keys[0]
            assert newest == new[-1], round_no
            assert highlighted(table) == newest
            assert table.cursor_row == 0 and int(table.scroll_y) == 0
        # a cursor the user moved down keeps its task
        table.focus()
        await pilot.pause()
        await pilot.press("down", "down")
        await pilot.pause()
        keep = table.selected_key
        finish(engine, bulk[100:105], T0)
        await settle(pilot)
        assert highlighted(table) == keep
        assert table.cursor_row == 7
        await pilot.press("home")  # back on top: follows again
        finish(engine, bulk[105:108], T0 + 50)
        await settle(pilot)
        assert highlighted(table) == bulk[107] and table.cursor_row == 0
