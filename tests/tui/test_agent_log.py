"""The agent view (L): an attempt's log full screen, followed, searched, wrapped, earlier
attempts, the prompt, saving, and the verbs from there."""

from __future__ import annotations

from pathlib import Path

import pytest
from necroui_fakes import FakeEngine
from tui_helpers import make_app, select, settle

from necroui.screens.agentlog import AgentLogScreen
from necroui.widgets.logview import LogLines, LogView


async def _until(pilot: object, cond: object, what: str) -> None:
    for _ in range(100):
        if cond():  # type: ignore[operator]
            return
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    raise AssertionError(f"timed out waiting for {what}")


def test_find_wraps_around_both_ways() -> None:
    text = LogLines(max_lines=4)
    text.extend(["a", "needle 1", "b", "Needle 2", "c"])
    assert text.lines == ["needle 1", "b", "Needle 2", "c"] and text.dropped == 1
    assert text.find("needle", 1) == 2
    assert text.find("needle", 3) == 0  # around the end
    assert text.find("needle", 1, step=-1) == 0
    assert text.find("absent", 0) is None


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "state" / "runs" / "chat" / "1.3"
    for n in (1, 2):
        attempt = base / f"attempt-{n}"
        attempt.mkdir(parents=True)
        lines = [f"attempt {n} line {i}" for i in range(200)]
        lines[150] = f"error: needle in attempt {n}"
        lines[30] = "needle early " + "x" * 300
        (attempt / "output.log").write_text("\n".join(lines) + "\n")
    (base / "attempt-2" / "prompt.md").write_text("# Task 1.3\nMake the tests pass.\n")
    return base


async def test_the_agent_view_follows_searches_wraps_and_goes_back_in_time(
        runs: Path, tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.config.state_dir = str(tmp_path / "state")
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.3")
        await pilot.press("L")
        screen = app.screen
        assert isinstance(screen, AgentLogScreen)
        view = screen.query_one(LogView)
        await _until(pilot, lambda: len(view.text.lines) == 200, "the newest attempt's log")
        assert view.text.lines[0] == "attempt 2 line 0" and view.follow
        assert int(view.scroll_y) == view.max_scroll_y  # following: at the end
        with (runs / "attempt-2" / "output.log").open("a") as fh:
            fh.write("a new line\n")
        await _until(pilot, lambda: view.text.lines[-1] == "a new line", "the new line")
        await pilot.press("slash", *"needle", "enter")
        await pilot.pause()
        assert view.term == "needle" and view.current == 30 and not view.follow
        await pilot.press("n")
        assert view.current == 150
        await pilot.press("N")
        assert view.current == 30
        await pilot.press("w")
        await pilot.pause()
        assert view.wrap and view.virtual_size.height > 201  # the long line takes 3+ rows
        await pilot.press("left_square_bracket")
        await _until(pilot, lambda: view.text.lines[:1] == ["attempt 1 line 0"], "attempt 1")
        assert "attempt 1 of 2" in str(screen.query_one("#log-title").render())
        await pilot.press("P")  # attempt 1 has no prompt.md
        await _until(pilot, lambda: "no prompt.md" in view.text.lines[0], "no prompt")
        await pilot.press("right_square_bracket")
        await _until(pilot, lambda: view.text.lines[:1] == ["# Task 1.3"], "the prompt")
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        saved = list(tmp_path.glob("necroui-chat_1.3-prompt-attempt-2.txt"))
        assert saved and "Make the tests pass." in saved[0].read_text()
        await pilot.press("r")  # the verbs work here too
        await settle(pilot)
        assert ("retry", ("chat/1.3",)) in engine.calls
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main


async def test_read_only_hides_the_verbs_of_the_agent_view(runs: Path, tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.config.state_dir = str(tmp_path / "state")
    app = make_app(engine, read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.3")
        await pilot.press("L")
        await pilot.press("r", "c", "plus", "p")
        await settle(pilot)
        assert engine.calls == []


async def test_verbs_work_from_the_detail_screen(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/3.1")
        before = engine.registry.tasks["chat/3.1"].priority
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("plus", "plus")
        await settle(pilot)
        assert engine.registry.tasks["chat/3.1"].priority == before + 2
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert ("cancel", ("chat/3.1",)) in engine.calls
        await pilot.press("L")
        await pilot.pause()
        assert isinstance(app.screen, AgentLogScreen) and app.screen.key == "chat/3.1"
