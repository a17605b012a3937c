"""Command palette, log tail following, large-graph neighbourhood, quit choices, formatting."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from necrocode.dispatcher.models import Task, TaskState
from necroui_fakes import FakeEngine, demo_tasks
from textual.widgets import RichLog
from tui_helpers import make_app, select, settle

from necroui.run import _stop_engine
from necroui.screens.detail import TaskDetailScreen
from necroui.screens.graph import FULL_LIMIT, GraphScreen
from necroui.screens.modals import QuitChoice
from necroui.widgets.format import fmt_duration, heartbeat_style
from necroui.widgets.header import header_text, sparkline


async def test_command_palette_offers_the_verbs(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"pause dispatching")
        await pilot.pause(0.3)
        await pilot.press("down", "enter")
        await settle(pilot)
        assert engine.state == "paused"


async def test_detail_follows_the_log_while_it_grows(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.config.state_dir = str(tmp_path)
    log = tmp_path / "runs" / "chat" / "2.1" / "attempt-1" / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text("step 1\n")
    app = make_app(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "running-table", "chat/2.1")
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        widget = screen.query_one("#detail-log", RichLog)

        async def wait_for(text: str) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await app.workers.wait_for_complete()
                await pilot.pause(0.1)
                if any(text in line.text for line in widget.lines):
                    return
            raise AssertionError(f"{text!r} never shown")

        await wait_for("step 1")
        with log.open("a") as fh:
            fh.write("step 2\n")
        await wait_for("step 2")
        assert sum("step 1" in line.text for line in widget.lines) == 1  # not re-read


async def test_large_graph_shows_the_neighbourhood_and_moves_along_edges() -> None:
    chain = [Task(id=f"c{i}", taskset="long", title=f"step {i}", state=TaskState.BLOCKED,
                  dependencies=[f"c{i - 1}"] if i else []) for i in range(FULL_LIMIT + 30)]
    engine = FakeEngine([*demo_tasks(), *chain])
    app = make_app(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "long/c50")
        await pilot.press("g")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GraphScreen) and screen.model is not None
        assert screen.model.shown_nodes("long/c50") == {f"long/c{i}" for i in range(48, 53)}
        await pilot.press("down", "down")
        assert screen.selected == "long/c52"
        await pilot.press("up")
        assert screen.selected == "long/c51"


class _StopRecorder:
    def __init__(self, running: int) -> None:
        self.calls: list[tuple[float, bool]] = []
        self._snap = dataclasses.replace(FakeEngine().snapshot(),
                                         running=FakeEngine().snapshot().running[:running])

    def snapshot(self) -> object:
        return self._snap

    def stop(self, timeout: float = 300, *, leave_running: bool = False) -> None:
        self.calls.append((timeout, leave_running))


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (QuitChoice.LEAVE, (0, True)),  # runners left for the next start to adopt
        (QuitChoice.STOP, (0, False)),  # runners stopped now, tasks requeued
        (QuitChoice.WAIT, (300.0, False)),  # graceful: wait up to the shutdown timeout
        (None, (300.0, False)),  # app crashed: still a graceful stop
    ],
)
def test_quit_choice_decides_how_the_engine_stops(
    choice: QuitChoice | None, expected: tuple[float, bool]
) -> None:
    engine = _StopRecorder(running=0)
    _stop_engine(engine, FakeEngine().config, choice)
    assert engine.calls == [expected]


@pytest.mark.parametrize(
    ("age", "style"),
    [
        (5, "green"),  # well under half the timeout
        (29.9, "green"),
        (30, "yellow"),  # half the timeout reached
        (47.9, "yellow"),
        (48, "bold red"),  # near the timeout (80 %)
        (75, "bold red"),  # past it
    ],
)
def test_heartbeat_colour_by_risk(age: float, style: str) -> None:
    assert heartbeat_style(age, 60.0) == style


def test_formatting_helpers() -> None:
    assert [fmt_duration(s) for s in (None, 5, 65, 3725, 90000)] == [
        "-", "5s", "1m05s", "1h02m", "1d01h"]
    assert sparkline([0, 5, 10]) == "▁▅█"
    snap = dataclasses.replace(FakeEngine().snapshot(), state="draining")
    assert "DRAINING" in header_text(snap).plain
    assert "READ-ONLY" in header_text(snap, read_only=True).plain
