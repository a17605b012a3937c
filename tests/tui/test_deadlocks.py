"""The header tells cycles from tasks blocked by failures; `d` lists them, `r` retries a root."""

from __future__ import annotations

import dataclasses

from necrocode.dispatcher.snapshot import DeadlockView, Snapshot
from necroui_fakes import FakeEngine
from tui_helpers import make_app, plain, settle

from necroui.screens.deadlocks import DeadlocksModal
from necroui.widgets import DashboardHeader
from necroui.widgets.header import header_text

BLOCKED = DeadlockView("failed_dependency", ("chat/3.3",), "chat/1.3",
                       "retry chat/1.3 (r) or cancel its dependents")
CYCLE = DeadlockView("cycle", ("loop/a", "loop/b"), "loop/a", "remove one dependency edge")


class StuckEngine(FakeEngine):
    """FakeEngine whose snapshots carry ``deadlocks``."""

    deadlocks: tuple[DeadlockView, ...] = (BLOCKED,)

    def snapshot(self) -> Snapshot:
        return dataclasses.replace(super().snapshot(), deadlocks=self.deadlocks)


def test_header_names_cycles_and_failures_apart() -> None:
    snap = FakeEngine().snapshot()
    blocked = header_text(dataclasses.replace(snap, deadlocks=(BLOCKED,))).plain
    assert "1 blocked by failures" in blocked and "cycle" not in blocked
    assert "deadlock" not in blocked
    both = header_text(dataclasses.replace(snap, deadlocks=(BLOCKED, CYCLE))).plain
    assert "1 cycle(s)!" in both and "1 blocked by failures" in both


async def test_d_lists_the_stuck_tasks_and_r_retries_the_root() -> None:
    engine = StuckEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "1 blocked by failures" in plain(app.main.query_one(DashboardHeader), 200)
        await pilot.press("d")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, DeadlocksModal)
        assert modal.selected() == BLOCKED
        await pilot.press("r")
        await settle(pilot)
        assert ("retry", ("chat/1.3",)) in engine.calls
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert any(t.startswith("Stuck tasks") for t in titles)
