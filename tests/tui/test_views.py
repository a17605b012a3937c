"""Read-only mode, filter and sort across refreshes, detail, graph and help screens."""

from __future__ import annotations

from necrocode.dispatcher.models import Task, TaskState
from necroui_fakes import FakeEngine, demo_tasks
from textual.widgets import Static
from tui_helpers import make_app, plain, select, settle

from necroui.screens.detail import TaskDetailScreen
from necroui.screens.graph import GraphScreen
from necroui.screens.help import HelpScreen, bindings_table
from necroui.screens.main import MUTATING_ACTIONS
from necroui.widgets import QueueTable


async def test_read_only_hides_every_mutating_key(engine: FakeEngine) -> None:
    app = make_app(engine, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/3.1")
        await pilot.press("p", "r", "c", "e", "plus", "minus", "equals_sign", "space")
        await settle(pilot)
        assert engine.calls == []
        shown = {b.binding.action.split("(")[0] for b in app.screen.active_bindings.values()}
        assert not shown & MUTATING_ACTIONS
        assert "filter" in shown and "graph" in shown, shown
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Filter tasks" in titles
        assert not {"Pause / resume dispatching", "Retry task", "Cancel task…"} & set(titles)
        help_rows = str(list(bindings_table(app).columns[1].cells))
        assert "Retry" not in help_rows and "Filter" in help_rows


async def test_filter_and_sort_hold_across_refreshes() -> None:
    engine = FakeEngine(demo_tasks(extra=40))
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.main.query_one(QueueTable)
        await select(pilot, "queue-table", "bulk/f00001")
        await pilot.press("slash", *"frontend", "enter")
        await pilot.pause()
        keys = table.shown_keys
        assert keys and all(table.view(k).skill == "frontend" for k in keys)  # type: ignore[union-attr]
        await pilot.press("T")  # sort by task key
        await pilot.pause()
        assert table.shown_keys == sorted(keys)
        # the engine moves on: a new frontend task, a priority change
        engine.registry.tasks["bulk/f99999"] = Task(
            id="f99999", taskset="bulk", required_skill="frontend", title="late")
        engine.registry.tasks["bulk/f00004"].priority = 99
        engine.bump()
        await settle(pilot)
        now_keys = table.shown_keys
        assert "bulk/f99999" in now_keys
        assert all(table.view(k).skill == "frontend" for k in now_keys)  # type: ignore[union-attr]
        assert now_keys == sorted(now_keys)
        assert table.filter_text == "frontend" and table.sort_id == "task"
        await pilot.press("P")  # by priority: the raised task comes first
        await pilot.pause()
        assert table.shown_keys[0] == "bulk/f00004"
        await pilot.press("escape")  # clear the filter
        await pilot.pause()
        assert len(table.shown_keys) == table.total


async def test_cursor_stays_on_its_row_when_rows_move() -> None:
    engine = FakeEngine(demo_tasks(extra=10))
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = await select(pilot, "queue-table", "bulk/f00003")
        engine.registry.tasks["bulk/f00003"].priority = 50  # jumps to the top of the queue
        engine.registry.tasks["bulk/f00000"].state = TaskState.RUNNING
        engine.bump()
        await settle(pilot)
        assert table.selected_key == "bulk/f00003"
        assert table.shown_keys[0] == "bulk/f00003"


async def test_enter_opens_detail_with_events_and_fields(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.3")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TaskDetailScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        fields = plain(screen.query_one("#detail-fields", Static))
        assert "chat/1.3" in fields and "pytest failed" in fields
        events = plain(screen.query_one("#detail-events", Static))
        assert "TaskFailed" in events
        assert "3.3" in plain(screen.query_one("#detail-deps", Static))  # dependent
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main


async def test_g_opens_graph_and_arrows_follow_edges(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/4.1")
        await pilot.press("g")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GraphScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.model is not None and len(screen.model.levels) >= 4
        assert screen.selected == "chat/4.1"
        await pilot.press("up")
        assert screen.selected in {"chat/2.1", "chat/2.2", "chat/3.1"}
        await pilot.press("down")
        assert screen.selected == "chat/4.1"
        await pilot.press("down")
        assert screen.selected == "chat/4.2"
        body = plain(screen.query_one("#graph-body", Static))
        assert "★" in body and "L1" in body
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TaskDetailScreen) and app.screen.key == "chat/4.2"


async def test_help_lists_every_binding(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        ids = str(list(bindings_table(app).columns[2].cells))
        for binding_id in ("pause", "priority_up", "priority_down", "priority_set", "retry",
                           "cancel", "pool_toggle", "filter", "mark", "detail", "graph",
                           "sort_skill", "sort_priority", "sort_wait", "sort_task", "help",
                           "quit", "command_palette", "next_panel"):
            assert binding_id in ids, binding_id
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main
