"""ctrl+c and ctrl+q take the same quit flow as q; the dialog counts the header's runners;
waiting says what it waits for and how it ended."""

from __future__ import annotations

import dataclasses

import pytest
from necrocode.dispatcher.models import TaskState
from necroui_fakes import FakeEngine
from textual.widgets import Label
from tui_helpers import make_app, settle

from necroui.run import _stop_engine
from necroui.screens.modals import QuitChoice, QuitModal


@pytest.mark.parametrize("key", ["ctrl+c", "ctrl+q", "q"])
async def test_every_quit_key_asks_when_runners_run(engine: FakeEngine, key: str) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press(key)
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)
        assert app.screen.running == app.snapshot.running_total == 3  # type: ignore[union-attr]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main and app.is_running


async def test_quit_dialog_follows_the_snapshot(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, QuitModal)
        engine.registry.tasks["chat/2.1"].state = TaskState.DONE  # a runner ends meanwhile
        engine.bump()
        await settle(pilot)
        assert modal.running == 2 == app.snapshot.running_total  # type: ignore[union-attr]
        assert "2 runner(s)" in str(modal.query_one("#quit-question", Label).render())
        await pilot.press("w")
        await pilot.pause()
    assert app.return_value is QuitChoice.WAIT


class _Draining:
    """Stands in for the engine while it drains: runners end one per snapshot read."""

    def __init__(self) -> None:
        self.base = FakeEngine().snapshot()
        self.left = 2
        self.calls: list[tuple[float, bool]] = []

    def snapshot(self) -> object:
        return dataclasses.replace(self.base, running=self.base.running[: self.left])

    def stop(self, timeout: float = 300, *, leave_running: bool = False) -> None:
        self.calls.append((timeout, leave_running))
        self.left = 0


def test_waiting_prints_progress_and_a_closing_line(capsys: pytest.CaptureFixture[str]) -> None:
    engine = _Draining()
    _stop_engine(engine, FakeEngine().config, QuitChoice.WAIT)
    err = capsys.readouterr().err
    assert "waiting for 2 runner(s) to finish" in err and "ctrl+c to stop them now" in err
    assert "every runner finished; stopped" in err
    assert engine.calls == [(300.0, False)]


def test_leave_and_stop_say_what_became_of_the_runners(
        capsys: pytest.CaptureFixture[str]) -> None:
    _stop_engine(_Draining(), FakeEngine().config, QuitChoice.LEAVE)
    assert "left 2 runner(s) running" in capsys.readouterr().err
    _stop_engine(_Draining(), FakeEngine().config, QuitChoice.STOP)
    assert "stopped 2 runner(s)" in capsys.readouterr().err
