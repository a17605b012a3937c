"""Keys you can trust: verbs act on the focused view only, every +/- counts, quit keys,
footer and header wording, toasts clear of the filter, the split at 120x40."""

from __future__ import annotations

import threading

from necrocode.dispatcher.models import Task, TaskState
from necroui_fakes import T0, FakeEngine, demo_tasks
from textual import events
from textual.widgets import Button, Footer
from tui_helpers import make_app, screen_lines, select, settle

from necroui.screens.modals import FilterInput, QuitChoice, QuitModal
from necroui.widgets import PoolsTable, QueueTable
from necroui.widgets.header import header_text


async def test_e_outside_the_pools_panel_toggles_no_pool(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        pools = app.main.query_one(PoolsTable)
        pools.move_cursor(row=1)  # a pool row selected, but the queue has the focus
        await select(pilot, "queue-table", "chat/3.1")
        await pilot.press("e")
        await settle(pilot)
        assert engine.pool_enabled == {"local": True, "docker": True}
        assert not [c for c in engine.calls if c[0] == "set_pool_enabled"]
        assert any("tab to it" in str(n.message) for n in app._notifications)  # noqa: SLF001


async def test_task_verbs_need_a_focused_task_table(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        await select(pilot, "finished-table", "chat/1.3")
        app.main.query_one(PoolsTable).focus()  # the last task table keeps its cursor
        await pilot.pause()
        await pilot.press("r", "plus", "space")
        await settle(pilot)
        assert not [c for c in engine.calls if c[0] in ("retry", "set_priority")]


class SlowEngine(FakeEngine):
    """set_priority blocks until released: presses pile up while one request is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def set_priority(self, task_key: str, priority: int) -> str:
        self.gate.wait(10)
        return super().set_priority(task_key, priority)


async def test_five_quick_plus_presses_move_the_priority_by_five() -> None:
    engine = SlowEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        before = engine.registry.tasks["chat/3.1"].priority
        await select(pilot, "queue-table", "chat/3.1")
        await pilot.press("plus", "plus", "plus", "plus", "plus", "minus", "plus")
        engine.gate.set()
        await pilot.pause()
        for _ in range(100):
            if engine.registry.tasks["chat/3.1"].priority == before + 5:
                break
            await pilot.pause(0.02)
        assert engine.registry.tasks["chat/3.1"].priority == before + 5
        assert len([c for c in engine.calls if c[0] == "set_priority"]) <= 2  # folded


async def test_a_second_ctrl_c_stops_the_runners_now(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)
        labels = [str(b.label) for b in app.screen.query(Button)]
        assert labels == ["Back (esc)", "Wait (w)", "Leave (l)", "Stop (s)"]  # no colour needed
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_value is QuitChoice.STOP


async def test_the_quit_dialog_closes_when_the_last_runner_ends(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitModal)
        for task in engine.registry.tasks.values():
            if task.state is TaskState.RUNNING:
                task.state, task.finished_at = TaskState.DONE, T0
        engine.bump()
        await settle(pilot)
    assert app.return_value is QuitChoice.WAIT


async def test_footer_says_resume_while_paused(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        footer = "\n".join(screen_lines(app)[-1:])
        assert "p Pause" in footer and "Resume" not in footer
        await pilot.press("p")
        await settle(pilot)
        await pilot.pause()
        footer = "\n".join(screen_lines(app)[-1:])
        assert "p Resume" in footer and "Pause" not in footer
        await pilot.press("p")
        await settle(pilot)
        assert engine.state == "running"
        assert app.main.query_one(Footer) is not None


async def test_toasts_stay_clear_of_the_filter_line(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        for i in range(4):
            app.notify(f"message {i}", timeout=30)
        await pilot.pause()
        await pilot.pause()
        box = app.main.query_one("#filter").region
        toasts = [w.region for w in app.screen.walk_children() if type(w).__name__ == "Toast"]
        assert toasts
        assert all(not t.overlaps(box) for t in toasts)


async def test_the_split_layout_fits_120x40(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.main.wide
        text = "\n".join(screen_lines(app))
        for title in ("Running 3", "Queue 5", "Finished 4", "Events"):
            assert title in text
        queue = app.main.query_one(QueueTable)
        assert queue.column_widths(queue.size.width)["pending"] >= 20


async def test_o_again_reverses_and_t_sorts_ids_naturally() -> None:
    tasks = [Task(id=f"fe.{i}", taskset="ts", state=TaskState.READY, created_at=T0,
                  ready_at=T0, priority=i % 3) for i in (10, 9, 1, 2)]
    app = make_app(FakeEngine([*demo_tasks(), *tasks]))
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        queue = await select(pilot, "queue-table", "ts/fe.9")
        order = queue.shown_keys
        await pilot.press("T")
        ours = [k for k in queue.shown_keys if k.startswith("ts/")]
        assert ours == ["ts/fe.1", "ts/fe.2", "ts/fe.9", "ts/fe.10"]
        assert queue.selected_key == "ts/fe.9"  # the cursor keeps its task
        await pilot.press("O")
        assert queue.shown_keys == order
        await pilot.press("O")
        assert queue.shown_keys == order[::-1]
        assert queue.sort_reverse


def test_header_shows_capacity_totals_and_retries(engine: FakeEngine) -> None:
    snap = engine.snapshot()
    text = header_text(snap).plain
    assert "run 3/6" in text and "failed 1" in text and "of 12 tasks" in text
    assert "retries" not in text
    engine.pool_enabled["docker"] = False
    engine.bump()
    import dataclasses

    snap = engine.snapshot()
    snap = dataclasses.replace(snap, counters=dataclasses.replace(snap.counters, retried=4))
    text = header_text(snap).plain
    assert "run 3/4" in text  # the disabled pool's 2 slots are not capacity
    assert "retries 4" in text


async def test_slash_and_letters_read_in_one_go_go_to_the_filter(engine: FakeEngine) -> None:
    """A terminal read of `/chat/3` (tmux send-keys, a paste, a fast typist): the app takes
    every key before the table would have acted on the first one; none may reach the table
    as a verb (`c` cancel, `e` pool), and the `/` inside the box is a character."""
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        await select(pilot, "queue-table", "chat/3.1")
        for key, char in [("slash", "/"), *[(c, c) for c in "chate"], ("slash", "/"),
                          ("3", "3")]:
            app.post_message(events.Key(key, char))  # back to back, as the driver posts them
        await pilot.pause()
        await pilot.pause()
        box = app.main.query_one(FilterInput)
        assert box.value == "chate/3"
        assert app.focused is box
        await pilot.press("backspace", "backspace", "backspace", "slash", "3", "enter")
        await settle(pilot)
        assert app.main.query_one(QueueTable).filter_text == "chat/3"
        assert not [c for c in engine.calls if c[0] in ("cancel", "set_pool_enabled")]
