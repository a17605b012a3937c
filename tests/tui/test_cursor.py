"""The cursor stays on its task (by key) across refreshes, re-sorts, removals and filters, and
every verb acts on the task highlighted when the key is pressed."""

from __future__ import annotations

import random

from necrocode.dispatcher.models import TaskState
from necroui_fakes import FakeEngine, demo_tasks
from tui_helpers import make_app, select, settle

from necroui.screens.detail import TaskDetailScreen
from necroui.screens.graph import GraphScreen
from necroui.screens.modals import ConfirmModal
from necroui.widgets import DiffTable, QueueTable

N = 3000


def highlighted(table: DiffTable[object]) -> str | None:
    """The key of the row the table draws highlighted (not a cached index)."""
    if not table.row_count:
        return None
    row = table.cursor_row - int(table.scroll_y) + 1  # the line under the header
    line = table.render_line(row).text if 1 <= row < table.size.height else ""
    key = table.model.order[table.cursor_row]
    assert not line or key[-3:] in line, (line, key)  # drawn where the cursor says
    return key


def churn(engine: FakeEngine, rng: random.Random, keep: str, round_no: int) -> None:
    """A busy queue: priorities change (rows re-order), rows above leave, reasons change."""
    tasks = engine.registry.tasks
    bulk = [k for k, t in tasks.items() if k.startswith("bulk/") and t.state is TaskState.READY]
    for key in rng.sample(bulk, len(bulk) // 5):
        tasks[key].priority = rng.randint(0, 9)
    leaving = [k for k in bulk[: len(bulk) // 2] if k != keep]
    for key in rng.sample(leaving, 40):
        tasks[key].state = TaskState.DONE
        tasks[key].finished_at = 1.0
    engine.pool_enabled["docker"] = bool(round_no % 2)  # pending reasons change
    engine.bump()


async def test_cursor_keeps_its_task_through_a_churning_queue() -> None:
    engine = FakeEngine(demo_tasks(extra=N))
    app = make_app(engine, refresh_interval=3600)
    rng = random.Random(7)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        table = await select(pilot, "queue-table", "bulk/f01500")
        start_row = table.cursor_row
        moved = False
        for round_no in range(6):
            churn(engine, rng, "bulk/f01500", round_no)
            await settle(pilot)
            assert highlighted(table) == "bulk/f01500", round_no
            assert table.selected_key == "bulk/f01500"
            moved |= table.cursor_row != start_row
        assert moved, "the scenario must move the row"
        await pilot.press("T")  # re-sort
        await pilot.pause()
        assert highlighted(table) == "bulk/f01500"
        await pilot.press("P")
        await pilot.pause()
        assert highlighted(table) == "bulk/f01500"
        await pilot.press("slash", *"filler task 15", "enter")  # a filter that keeps it
        await settle(pilot)
        assert table.total > len(table.shown_keys) > 1
        assert highlighted(table) == "bulk/f01500"
        await pilot.press("escape")  # filter cleared
        await settle(pilot)
        assert highlighted(table) == "bulk/f01500"


async def test_cursor_moves_to_a_neighbour_when_its_task_leaves() -> None:
    engine = FakeEngine(demo_tasks(extra=200))
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        table = await select(pilot, "queue-table", "bulk/f00100")
        order = table.shown_keys
        index = order.index("bulk/f00100")
        below = order[index + 1]
        for key in order[:index + 1]:  # it and every row above leave
            if key.startswith("bulk/"):
                engine.registry.tasks[key].state = TaskState.RUNNING
        engine.bump()
        await settle(pilot)
        assert highlighted(table) == below
        assert not app._notifications  # said nothing
        engine.registry.tasks["bulk/f00150"].priority = 99  # now only rows move: it stays
        engine.bump()
        await settle(pilot)
        assert highlighted(table) == below


async def test_every_verb_acts_on_the_highlighted_task() -> None:
    engine = FakeEngine(demo_tasks(extra=300))
    app = make_app(engine, refresh_interval=3600)
    rng = random.Random(3)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        table = await select(pilot, "queue-table", "bulk/f00200")
        churn(engine, rng, "bulk/f00200", 0)
        await settle(pilot)
        assert highlighted(table) == "bulk/f00200"
        before = engine.registry.tasks["bulk/f00200"].priority
        await pilot.press("plus")
        await settle(pilot)
        assert engine.calls[-1] == ("set_priority", ("bulk/f00200", before + 1))
        assert highlighted(table) == "bulk/f00200"  # its row moved up; the cursor followed
        await pilot.press("minus")
        await settle(pilot)
        assert engine.calls[-1] == ("set_priority", ("bulk/f00200", before))
        churn(engine, rng, "bulk/f00200", 1)
        await settle(pilot)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert "bulk/f00200" in app.screen.question
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TaskDetailScreen) and app.screen.key == "bulk/f00200"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, GraphScreen) and app.screen.selected == "bulk/f00200"
        await app.workers.wait_for_complete()
        await pilot.press("escape")
        await pilot.pause()
        q = app.main.query_one(QueueTable)
        q.move_cursor(row=q.get_row_index("chat/3.3"))
        await pilot.pause()
        await pilot.press("r")
        await settle(pilot)
        assert engine.calls[-1] == ("retry", ("chat/3.3",))
