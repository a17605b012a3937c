"""The events panel wraps long events at its own content width: nothing is cut away."""

from __future__ import annotations

from necrocode.dispatcher.models import EventType, TaskEvent
from necroui_fakes import T0, FakeEngine
from tui_helpers import make_app, settle

from necroui.widgets import EventTail
from necroui.widgets.eventtail import WRITE_MAX, event_line


def _squeeze(text: str) -> str:
    return "".join(text.split())


async def _check(size: tuple[int, int]) -> None:
    engine = FakeEngine()
    long = ("assigned to pool b slot scratch/0 (attempt 1) on runner r-0123456789abcdef "
            "with a rather long explanation that goes on past any panel width end-marker")
    for i in range(3):
        engine.registry.record(TaskEvent(EventType.TASK_ASSIGNED, f"chat/long-{i}",
                                         timestamp=T0 + i, message=long, pool="b"))
    engine.bump()
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        tail = app.main.query_one(EventTail)
        width = tail.scrollable_content_region.width
        assert width > 0
        assert all(strip.cell_length <= width for strip in tail.lines)
        shown = _squeeze("".join(strip.text for strip in tail.lines))
        for event in engine.registry.events:
            assert _squeeze(event_line(event).plain) in shown
        await pilot.resize_terminal(200, 60)
        await settle(pilot)
        assert tail.scrollable_content_region.width > width  # re-wrapped at the new width
        width = tail.scrollable_content_region.width
        assert all(strip.cell_length <= width for strip in tail.lines)
        assert max(strip.cell_length for strip in tail.lines) > width - 10
        shown = _squeeze("".join(strip.text for strip in tail.lines))
        assert shown.count("end-marker") == 3


async def test_long_events_wrap_inside_the_panel_at_160x50() -> None:
    await _check((160, 50))


async def test_a_busy_snapshot_writes_its_newest_events_and_counts_the_rest() -> None:
    engine = FakeEngine()
    count = WRITE_MAX + 80
    for i in range(count):
        engine.registry.record(TaskEvent(EventType.TASK_ASSIGNED, f"chat/busy-{i}",
                                         timestamp=T0 + i, message="assigned", pool="b"))
    engine.bump()
    app = make_app(engine, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        shown = "\n".join(strip.text for strip in app.main.query_one(EventTail).lines)
        assert app.snapshot is not None
        carried = len(app.snapshot.events)  # the snapshot's own bound (the fake's: 50)
        assert carried > WRITE_MAX
        assert f"… {carried - WRITE_MAX} more events" in shown
        assert f"chat/busy-{count - 1} " in shown + " "
        assert f"chat/busy-{count - WRITE_MAX} " in shown + " "
        assert f"chat/busy-{count - WRITE_MAX - 1} " not in shown + " "
