"""Pilot tests of the work keys: B starts a task from the base, M lands its taskset."""

from __future__ import annotations

from necroui_fakes import FakeEngine
from tui_helpers import make_app, select, settle


async def test_b_starts_the_selected_task_from_the_base(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.3")
        await pilot.press("B")
        await settle(pilot)
        assert ("retry", ("chat/1.3", "from_base")) in engine.calls


async def test_m_lands_the_selected_tasks_taskset(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.1")
        await pilot.press("M")
        await settle(pilot)
        assert ("land", ("chat",)) in engine.calls
        assert any("landing chat" in n.message for n in app._notifications)


async def test_read_only_has_neither_key(engine: FakeEngine) -> None:
    app = make_app(engine, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.1")
        await pilot.press("B", "M")
        await settle(pilot)
        assert not [c for c in engine.calls if c[0] in ("retry", "land")]
