"""The detail screen's log panel shows exactly the tail of the file it names: follows it by
offset, starts over when the attempt (log path) changes, re-reads after truncation/rotation."""

from __future__ import annotations

import os
import time
from pathlib import Path

from necroui_fakes import FakeEngine
from textual.pilot import Pilot
from textual.widgets import RichLog
from tui_helpers import make_app, select, settle

from necroui.screens.detail import TaskDetailScreen, read_log_chunk


def test_read_log_chunk_follows_by_offset(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    path.write_text("one\ntwo\nthr")
    first = read_log_chunk(path, None, 0)
    assert (first.text, first.reset) == ("one\ntwo\n", True)  # "thr" waits for its newline
    with path.open("a") as fh:
        fh.write("ee\nfour\n")
    second = read_log_chunk(path, first.inode, first.end, first.head)
    assert (second.text, second.reset, second.start) == ("three\nfour\n", False, first.end)
    assert read_log_chunk(path, second.inode, second.end, second.head).text == ""
    path.write_text("new\n")  # truncated
    third = read_log_chunk(path, second.inode, second.end, second.head)
    assert (third.text, third.reset) == ("new\n", True)
    other = tmp_path / "other.log"
    other.write_text("rotated\n")
    os.replace(other, path)  # replaced by a new file (another inode), larger than the offset
    fourth = read_log_chunk(path, third.inode, 1, third.head)
    assert (fourth.text, fourth.reset) == ("rotated\n", True)
    path.write_text("same size\n")  # rewritten in place, as long as before
    fifth = read_log_chunk(path, fourth.inode, fourth.end, fourth.head)
    assert (fifth.text, fifth.reset) == ("same size\n", True)
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    tail = read_log_chunk(path, None, 0, max_read=100)
    assert tail.text.endswith("line 999\n") and tail.text.startswith("line ")
    assert len(tail.text) <= 100


async def _wait(pilot: Pilot[object], cond: object, what: str) -> None:
    app = pilot.app
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        if cond():  # type: ignore[operator]
            return
    raise AssertionError(f"timed out waiting for {what}")


def _lines(widget: RichLog) -> list[str]:
    return [line.text for line in widget.lines]


async def test_log_panel_resets_when_the_attempt_changes(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.config.state_dir = str(tmp_path)
    runs = tmp_path / "runs" / "chat" / "2.1"
    first = runs / "attempt-1" / "output.log"
    first.parent.mkdir(parents=True)
    first.write_text("a1 start\na1 boom\n")
    app = make_app(engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await select(pilot, "running-table", "chat/2.1")
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        widget = screen.query_one("#detail-log", RichLog)
        await _wait(pilot, lambda: _lines(widget) == ["a1 start", "a1 boom"], "attempt 1")
        second = runs / "attempt-2" / "output.log"
        second.parent.mkdir()
        second.write_text("a2 start\n")
        await _wait(pilot, lambda: _lines(widget) == ["a2 start"], "attempt 2 alone")
        assert "attempt-2/output.log" in str(widget.border_title)
        with second.open("a") as fh:
            fh.write("a2 step\n")
        await _wait(pilot, lambda: _lines(widget) == ["a2 start", "a2 step"], "growth")
        for _ in range(3):  # more refreshes: nothing repeated
            screen.reload()
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert _lines(widget) == ["a2 start", "a2 step"]
        second.write_text("after truncation\n")
        await _wait(pilot, lambda: _lines(widget) == ["after truncation"], "truncation")
