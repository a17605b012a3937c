"""Helpers for Pilot tests: select rows, wait for control workers."""

from __future__ import annotations

from necroui_fakes import FakeEngine, frozen_clock
from textual.pilot import Pilot

from necroui.app import NecroApp
from necroui.widgets import DiffTable


async def settle(pilot: Pilot[object]) -> None:
    """Let control workers finish and the next snapshot apply."""
    app = pilot.app
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(app, NecroApp)
    app.refresh_snapshot()
    await pilot.pause()


async def select(pilot: Pilot[object], table_id: str, key: str) -> DiffTable[object]:
    """Focus a task table and put its cursor on ``key``."""
    app = pilot.app
    assert isinstance(app, NecroApp)
    table = app.main.query_one(f"#{table_id}", DiffTable)
    table.focus()
    await pilot.pause()
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()
    assert table.selected_key == key
    return table


def make_app(engine: FakeEngine, **kwargs: object) -> NecroApp:
    """An app on the fake engine, frozen clock, fast refresh."""
    kwargs.setdefault("clock", frozen_clock)
    kwargs.setdefault("refresh_interval", 0.05)
    return NecroApp(engine, **kwargs)  # type: ignore[arg-type]


def plain(static: object, width: int = 140) -> str:
    """The text a Static shows (its content rendered by rich, without styles)."""
    import io

    from rich.console import Console
    from textual.widgets import Static

    assert isinstance(static, Static)
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(static.content)
    return console.export_text()


def screen_lines(app: object) -> list[str]:
    """The lines the app's screen shows now, as plain text."""
    from textual.app import App

    assert isinstance(app, App)
    return ["".join(seg.text for seg in strip)
            for strip in app.screen._compositor.render_strips()]  # noqa: SLF001
