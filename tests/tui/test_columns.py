"""Column widths follow the panel: the last column (pending reason / last error) takes the
width left, keys keep room (cut in the middle when too long), minor columns go when narrow."""

from __future__ import annotations

import pytest
from necrocode.dispatcher.models import Task, TaskState
from necroui_fakes import T0, FakeEngine, demo_tasks
from tui_helpers import make_app, screen_lines, settle

from necroui.widgets import DiffTable, FinishedTable, PoolsTable, QueueTable
from necroui.widgets.format import middle_ellipsis

LONG_WAIT = [f"part{i}" for i in range(1, 6)]  # "waiting on part1, …, part5": 44 characters


def engine_with_long_texts() -> FakeEngine:
    tasks = demo_tasks()
    tasks.append(Task(id="2.1", taskset="chat-app-tasks", title="long key", state=TaskState.READY,
                      required_skill="backend", created_at=T0 - 10, ready_at=T0 - 5))
    tasks += [Task(id=p, taskset="chat-app-tasks", title=p, state=TaskState.BLOCKED,
                   created_at=T0 - 10) for p in LONG_WAIT]
    tasks.append(Task(id="9.9", taskset="chat-app-tasks", title="waits", dependencies=LONG_WAIT,
                      state=TaskState.BLOCKED, created_at=T0 - 10))
    return FakeEngine(tasks)


def test_middle_ellipsis_keeps_the_task_id() -> None:
    assert middle_ellipsis("chat-app-tasks/2.1", 24) == "chat-app-tasks/2.1"
    assert middle_ellipsis("chat-app-tasks/2.1", 15) == "chat-app-t…/2.1"
    assert len(middle_ellipsis("a-very-long-taskset-name/with-a-long-id-too", 12)) == 12


def _fills_its_panel(table: DiffTable[object]) -> None:
    widths = sum(table.render_widths().values())
    assert table.virtual_size.width <= table.size.width  # no horizontal scrollbar
    assert table.size.width - widths <= table.styles.scrollbar_size_vertical  # nothing left


@pytest.mark.parametrize("size", [(200, 60), (160, 50), (80, 24)])
async def test_last_column_takes_the_remaining_width(size: tuple[int, int]) -> None:
    app = make_app(engine_with_long_texts())
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        queue = app.main.query_one(QueueTable)
        queue.focus()
        await settle(pilot)
        _fills_its_panel(queue)
        text = "\n".join(screen_lines(app))
        widths = queue.column_widths(queue.size.width)
        assert widths["pending"] >= 28
        assert "? Help" in text and "q Quit" in text
        if size[0] >= 200:
            assert "chat-app-tasks/2.1" in text  # the whole key
            assert "waiting on " + ", ".join(LONG_WAIT) in text  # the whole reason
            assert widths["tenant"] > 0
        elif size[0] >= 160:
            assert "chat-app-tasks/2.1" in text
            assert "waiting on part1, part2, part3" in text
        else:  # 80x24: tenant and state go, key and reason stay
            assert widths["tenant"] == 0 and widths["state"] == 0
            assert "chat-app-tasks/2.1" in text
            assert "waiting on part1, part2" in text
            assert "? Help" in text and "q Quit" in text
        pools = app.main.query_one(PoolsTable)
        assert pools.virtual_size.width <= pools.size.width
        finished = app.main.query_one(FinishedTable)
        if size[0] >= 160:
            _fills_its_panel(finished)
            assert finished.column_widths(finished.size.width)["at"] > 0  # "finished" shown
            assert "22:08:40" in text


async def test_a_long_key_is_cut_in_the_middle_when_space_is_short() -> None:
    tasks = demo_tasks()
    tasks.append(Task(id="2.1", taskset="a-rather-long-taskset-name", state=TaskState.READY,
                      created_at=T0, ready_at=T0))
    app = make_app(FakeEngine(tasks))
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        queue = app.main.query_one(QueueTable)
        assert queue.column_widths(queue.size.width)["task"] == 24
        text = "\n".join(screen_lines(app))
        assert "a-rather-long-taskse…/2.1" in text
