"""Coding agents' tokens and cost in the console: TOKENS / COST columns, header totals."""

from __future__ import annotations

import dataclasses

import pytest
from necrocode.dispatcher.models import Usage
from necrocode.dispatcher.snapshot import Snapshot
from necroui_fakes import FakeEngine
from textual.widgets import Static
from tui_helpers import make_app, plain, screen_lines, select, settle

from necroui.screens.detail import TaskDetailScreen
from necroui.widgets import FinishedTable, RunningTable
from necroui.widgets.format import budget_text, fmt_cost, fmt_tokens, usage_text
from necroui.widgets.header import header_text


def agent_engine() -> FakeEngine:
    engine = FakeEngine()
    engine.usage = {
        "chat/2.1": Usage(12_000, 345, 3_000, 0.4213, 7),  # running, Claude-like: a cost
        "chat/2.2": Usage(800, 20),  # running, no cost known (no price table)
        "chat/1.1": Usage(1_500_000, 40_000, 0, None, 30),  # finished
    }
    return engine


def test_token_and_cost_texts() -> None:
    assert [fmt_tokens(n) for n in (0, 950, 12_345, 345_678, 1_540_000, 123_000_000)] == [
        "-", "950", "12.3k", "345k", "1.54M", "123M"]
    assert [fmt_cost(c) for c in (None, 0.0042, 0.42, 12.3, 4321.0)] == [
        "-", "$0.004", "$0.42", "$12.30", "$4,321"]


@pytest.mark.parametrize("size", [(200, 60), (160, 50), (120, 40), (80, 24)])
async def test_tokens_and_cost_columns_fit_the_panel(size: tuple[int, int]) -> None:
    app = make_app(agent_engine())
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        running = app.main.query_one(RunningTable)
        finished = app.main.query_one(FinishedTable)
        widths = running.render_widths()
        assert widths["cost"] > 0  # the cost is what an operator watches: kept to the last
        assert running.get_cell("chat/2.1", "tokens") == "12.3k"
        assert running.get_cell("chat/2.1", "cost") == "$0.42"
        assert running.get_cell("chat/2.2", "cost") == "-"
        assert running.get_cell("chat/2.3", "tokens") == "-"  # a plain command
        lines = "\n".join(screen_lines(app))
        assert "$0.42" in lines
        if size[0] >= 160:
            assert widths["tokens"] > 0 and "12.3k" in lines
        else:  # narrow: the runner and slot go before tokens and cost
            assert widths["runner"] == 0 and widths["slot"] == 0
        assert running.virtual_size.width <= running.size.width  # no sideways scrolling
        if not finished.size.width:  # narrow: one panel at a time
            app.main.show_panel("finished")
            await settle(pilot)
        fwidths = finished.render_widths()
        assert fwidths["cost"] == 0  # no finished task reported a cost: no COST column there
        assert finished.get_cell("chat/1.1", "tokens") == "1.54M"
        assert fwidths["error"] >= 20  # the last error first
        if size[0] >= 160 or size[0] < 120:  # 80 columns: the panel has the whole width
            assert fwidths["tokens"] > 0


async def test_without_coding_agents_there_are_no_usage_columns() -> None:
    app = make_app(FakeEngine())
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        for table in (app.main.query_one(RunningTable), app.main.query_one(FinishedTable)):
            widths = table.render_widths()
            assert widths["tokens"] == 0 and widths["cost"] == 0
        assert "tokens" not in "\n".join(screen_lines(app))


async def test_usage_arriving_shows_the_columns_and_the_header_totals() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        running = app.main.query_one(RunningTable)
        assert running.render_widths()["tokens"] == 0
        engine.usage = {"chat/2.1": Usage(2_000, 500, 0, 0.05, 2)}
        engine.bump()
        await settle(pilot)
        assert running.render_widths()["tokens"] > 0 and running.render_widths()["cost"] > 0
        assert running.get_cell("chat/2.1", "cost") == "$0.050"
        engine.usage = {"chat/2.1": Usage(20_000, 900, 0, 0.61, 5)}  # the run goes on
        engine.bump()
        await settle(pilot)
        assert running.get_cell("chat/2.1", "tokens") == "20.9k"
        header = "\n".join(screen_lines(app)[:2])
        assert "tokens 20.9k cost $0.61" in header


def test_header_totals_and_capacity_come_from_the_snapshot() -> None:
    engine = agent_engine()
    snap = engine.snapshot()
    text = header_text(snap).plain
    assert "tokens 1.55M cost $0.42" in text  # counters.usage: every task's usage summed
    no_cost = dataclasses.replace(snap, counters=dataclasses.replace(
        snap.counters, usage=Usage(800, 20)))
    assert "tokens 820" in header_text(no_cost).plain
    assert "cost" not in header_text(no_cost).plain
    plain = dataclasses.replace(snap, counters=dataclasses.replace(snap.counters, usage=Usage()))
    assert "tokens" not in header_text(plain).plain
    # the engine's capacity (enabled, healthy pools under the global cap), not a sum of pools
    assert "run 3/2" in header_text(dataclasses.replace(snap, capacity=2)).plain


def test_usage_and_budget_texts() -> None:
    assert usage_text(Usage(12_000, 345, 3_000, 0.4213, 7)) == (
        "12,000 in (3,000 cached) · 345 out · 7 turns · $0.42")
    assert usage_text(Usage(800, 20, turns=1)) == "800 in · 20 out · 1 turn · cost unknown"
    assert budget_text(None, None, None) == ""
    assert budget_text(1.0, 50_000, 30) == "$1.00 · 50,000 tokens · 30 turns"
    assert budget_text(1.0, None, 30, Usage(100, 20, 0, 0.5, 3)) == "$0.50 of $1.00 · 3 of 30 turns"
    assert budget_text(1.0, None, None, Usage(100, 20)) == "$1.00"  # no cost known: the limit


async def test_detail_shows_the_agent_its_usage_and_budget() -> None:
    engine = agent_engine()
    task = engine.registry.tasks["chat/2.1"]
    task.agent, task.max_cost_usd, task.max_turns = "claude-code", 1.0, 30
    task.usage = Usage(30_000, 900, 0, 1.10, 12)  # every run, the one going on included
    done = engine.registry.tasks["chat/1.1"]
    done.usage = engine.usage["chat/1.1"]
    app = make_app(engine)
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        for table, key in (("running-table", "chat/2.1"), ("finished-table", "chat/1.1")):
            await select(pilot, table, key)
            await pilot.press("enter")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, TaskDetailScreen)
            text = " ".join(plain(screen.query_one("#detail-fields", Static)).split())
            await pilot.press("escape")
            await pilot.pause()
            if key == "chat/2.1":
                assert "agent claude-code" in text
                assert "command (built by the claude-code preset)" in text
                assert ("usage (this run) 12,000 in (3,000 cached) · 345 out · 7 turns · $0.42"
                        in text)
                assert "usage (all runs) 30,000 in · 900 out · 12 turns · $1.10" in text
                assert "budget (per run) $0.42 of $1.00 · 7 of 30 turns" in text
            else:
                assert "usage 1,500,000 in · 40,000 out · 30 turns · cost unknown" in text
                assert "budget" not in text and "agent " not in text


async def test_at_80_columns_the_header_keeps_both_lines_and_the_totals() -> None:
    class Busy(FakeEngine):  # a first line longer than 80 columns
        def _build(self) -> Snapshot:
            snap = super()._build()
            return dataclasses.replace(snap, counters=dataclasses.replace(
                snap.counters, done=1234, failed=56, cancelled=7, total=10_000, retried=321))

    engine = Busy()
    engine.usage = agent_engine().usage
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        first, second, third = screen_lines(app)[:3]
        assert first.startswith(" necroui ") and "run 3/6" in first
        assert second.startswith(" tokens 1.55M cost $0.42  done/10s")  # cut, not wrapped
        assert third.startswith(" pool ")  # the pools panel right below: nothing pushed out
