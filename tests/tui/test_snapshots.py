"""Screenshots (pytest-textual-snapshot) of the main screen, graph, task detail and help.

Deterministic: FakeEngine data derived from a fixed T0, a frozen clock, times printed in UTC.
Update after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from typing import Any

import pytest
from necroui_fakes import FakeEngine
from textual.pilot import Pilot
from tui_helpers import make_app

from necroui.widgets import DiffTable

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 50), id="160x50")]


async def _settle(pilot: Pilot[Any]) -> None:
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _selecting(table_id: str, key: str, *keys: str) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _settle(pilot)
        table = pilot.app.main.query_one(f"#{table_id}", DiffTable)
        table.focus()
        await pilot.pause()
        table.move_cursor(row=table.get_row_index(key))
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await _settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    app = make_app(FakeEngine())
    assert snap_compare(app, terminal_size=size, run_before=_selecting("queue-table", "chat/3.2"))


@pytest.mark.parametrize("size", SIZES)
def test_graph_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    app = make_app(FakeEngine())
    assert snap_compare(app, terminal_size=size,
                        run_before=_selecting("queue-table", "chat/4.1", "g"))


@pytest.mark.parametrize("size", SIZES)
def test_task_detail_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    app = make_app(FakeEngine())
    assert snap_compare(app, terminal_size=size,
                        run_before=_selecting("running-table", "chat/2.1", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    app = make_app(FakeEngine())
    assert snap_compare(app, terminal_size=size,
                        run_before=_selecting("running-table", "chat/2.1", "question_mark"))
