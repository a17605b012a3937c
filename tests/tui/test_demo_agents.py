"""``necroui --demo --agents`` in the dashboard: the real engine runs the demo on the real
claude-code preset (a stand-in CLI): tokens and cost columns and totals show, the budget stop is
told once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import TaskState
from tui_helpers import screen_lines

from necroui.app import NecroApp
from necroui.demo import BUDGET_TASK, demo_config, prepare_demo
from necroui.widgets import FinishedTable


async def test_the_agents_demo_shows_tokens_cost_and_its_budget_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NECROUI_DEMO_SPEED", "0.05")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NECROUI_DEMO_AGENT", "stand-in")
    config = demo_config(DispatcherConfig(
        registry_path=str(tmp_path / "reg.db"), state_dir=str(tmp_path / "st"),
        api_enabled=False, poll_interval=0.2))
    core = DispatcherCore(config)
    assert prepare_demo(core, agents=True).submitted == 30
    core.start()
    stopped = f"demo/{BUDGET_TASK}"
    try:
        app = NecroApp(core, refresh_interval=0.1)
        async with app.run_test(size=(160, 50), notifications=True) as pilot:
            finished = app.main.query_one(FinishedTable)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await pilot.pause(0.2)
                snap = app.snapshot
                done = [v for v in (snap.finished if snap else ()) if v.key == stopped]
                if done and snap is not None and snap.counters.done >= 5:
                    break
            else:
                raise AssertionError("the budget task did not fail in time")
            await pilot.pause(0.3)
            assert done[0].state is TaskState.FAILED
            assert "budget exceeded" in (done[0].last_error or "")
            widths = finished.render_widths()
            assert widths["tokens"] > 0 and widths["cost"] > 0
            assert finished.get_cell(stopped, "tokens").endswith("k")
            ok = next(v.key for v in finished.model.views.values() if v.state is TaskState.DONE)
            assert str(finished.get_cell(ok, "cost")).startswith("$")
            header = " ".join(screen_lines(app)[:2])
            assert "tokens " in header and " cost $" in header
            told = [str(n.message) for n in app._notifications  # noqa: SLF001
                    if stopped in str(n.message)]
            assert len(told) == 1 and "budget exceeded" in told[0], told
            await pilot.press("q")
    finally:
        core.stop(timeout=2.0)
        core.close()
