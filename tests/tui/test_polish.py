"""Small things a new user noticed: graph arrow after the last level, esc listed twice in
help, the palette describing "Filter tasks" as "/", stray scrollbars in the pools area."""

from __future__ import annotations

from necroui_fakes import FakeEngine
from textual.widgets import Static
from tui_helpers import make_app, plain, select, settle

from necroui.screens.graph import GraphScreen
from necroui.screens.help import bindings_table
from necroui.widgets import PoolsTable


async def test_graph_has_no_arrow_after_its_last_level(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/4.1")
        await pilot.press("g")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, GraphScreen) and app.screen.model is not None
        lines = [ln for ln in plain(app.screen.query_one("#graph-body", Static)).splitlines()
                 if ln.strip()]
        assert lines[-1].strip() != "▼"
        arrows = sum(1 for ln in lines if ln.strip() == "▼")
        assert arrows == len(app.screen.model.levels) - 1


async def test_help_lists_each_key_once_and_palette_describes_verbs(
        engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        keys = [str(k) for k in bindings_table(app).columns[0].cells]
        names = [k.strip() for cell in keys for k in cell.split(",")]
        assert names.count("esc") == 1, keys
        assert len(names) == len(set(names)), keys
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert commands["Filter tasks"] not in ("/", "")
        assert len(commands["Filter tasks"]) > 10
        pools = app.main.query_one(PoolsTable)
        assert pools.virtual_size.width <= pools.size.width  # no horizontal scrollbar
        assert not pools.show_horizontal_scrollbar
