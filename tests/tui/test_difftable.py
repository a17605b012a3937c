"""The queue table applies snapshots as diffs: changed cells only, no rebuild, order kept."""

from __future__ import annotations

import dataclasses
from typing import Any

from necrocode.dispatcher.models import TaskState
from necrocode.dispatcher.snapshot import Pending, PendingReason, QueuedTaskView
from necroui_fakes import T0, frozen_clock
from textual.app import App, ComposeResult

from necroui.widgets import QueueTable
from necroui.widgets.rowmodel import Change


class CountingQueue(QueueTable):
    """Records what each diff did (rows added, removed, updated, reordered)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.changes: list[Change] = []
        model_apply = self.model.apply

        def apply(views: Any, *, force: bool = False) -> Change:
            change = model_apply(views, force=force)
            self.changes.append(change)
            return change

        self.model.apply = apply  # type: ignore[method-assign]


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield CountingQueue(clock=frozen_clock, id="q")


def view(i: int, priority: int = 0) -> QueuedTaskView:
    return QueuedTaskView(
        key=f"ts/t{i:04d}", taskset="ts", task_id=f"t{i:04d}", title=f"t{i}",
        state=TaskState.READY, skill="s", tenant="ts", priority=priority, ready_at=T0 - 100,
        created_at=T0 - 200, attempts=0, in_queue=True,
        pending=Pending(PendingReason.QUEUED, "waiting for its turn"))


async def test_one_changed_row_updates_one_row_only() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(CountingQueue)
        views = [view(i) for i in range(500)]
        table.apply(views)
        await pilot.pause()
        assert len(table.shown_keys) == 500
        formatted = {k: table.model.cells[k].static for k in table.shown_keys[:20]}
        assert all(v is not None for v in formatted.values())  # drawn: formatted
        table.changes.clear()
        changed = list(views)
        changed[10] = dataclasses.replace(views[10], priority=3)  # one cell: prio
        del changed[20]  # one row leaves
        changed.append(view(999))  # one arrives
        table.apply(changed)
        await pilot.pause()
        assert table.changes == [Change(added=1, removed=1, updated=1, reordered=True)]
        assert table.shown_keys == [v.key for v in changed]
        for key, cells in formatted.items():  # only the changed row was formatted again
            assert (table.model.cells[key].static is cells) == (key != "ts/t0010"), key
        assert str(table.get_cell("ts/t0010", "prio")) == "3"
        assert " 3 " in table.render_line(11).text  # header + row 10, drawn with the new value


async def test_rows_are_formatted_only_when_drawn() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(CountingQueue)
        formatted: list[str] = []
        original = table.static_cells

        def counting(view: QueuedTaskView) -> Any:
            formatted.append(view.key)
            return original(view)

        table.static_cells = counting  # type: ignore[method-assign]
        table.apply([view(i) for i in range(5000)])
        await pilot.pause()
        assert 0 < len(formatted) < 100  # the rows on screen, not 5000
        again = [view(i) for i in range(5000)]  # equal views, new objects: nothing to do
        formatted.clear()
        table.apply(again)
        await pilot.pause()
        assert formatted == []


async def test_bulk_removal_keeps_table_consistent() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(CountingQueue)
        views = [view(i) for i in range(300)]
        table.apply(views)
        table.move_cursor(row=250)
        await pilot.pause()
        kept = [v for i, v in enumerate(views) if i % 3 == 0 or i == 250]
        table.apply(kept)  # 199 rows removed in one pass
        await pilot.pause()
        assert table.row_count == len(kept)
        assert table.shown_keys == [v.key for v in kept]
        assert table.selected_key == "ts/t0250"
        assert table.get_row_index("ts/t0003") == 1


async def test_a_row_changed_while_filtered_out_shows_its_new_text() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(CountingQueue)
        views = [view(i) for i in range(100)]
        table.apply(views)
        await pilot.pause()
        table.set_filter("t001")  # ts/t0010…ts/t0019: t0020 is filtered out
        await pilot.pause()
        assert "ts/t0020" not in table.shown_keys and "ts/t0010" in table.shown_keys
        changed = list(views)
        changed[20] = dataclasses.replace(views[20], priority=7, title="t001 now matches")
        table.apply(changed)
        await pilot.pause()
        assert "ts/t0020" in table.shown_keys  # its new title matches the filter
        assert str(table.get_cell("ts/t0020", "prio")) == "7"
        table.set_filter("")
        await pilot.pause()
        assert table.shown_keys == [v.key for v in changed]
        table.scroll_to(y=0, animate=False)
        await pilot.pause()
        row = table.get_row_index("ts/t0020")
        assert " 7 " in table.render_line(row + 1).text  # drawn with the new value
