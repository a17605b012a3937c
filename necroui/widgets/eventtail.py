"""A live tail of the engine's recent events."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from necrocode.dispatcher.models import TaskEvent
from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

from .format import fmt_clock

_EVENT_STYLES: dict[str, str] = {
    "TaskCompleted": "green",
    "TaskFailed": "bold red",
    "RunnerFailed": "red",
    "RunnerLost": "bold red",
    "RunnerTimedOut": "bold red",
    "RunnerLaunchFailed": "red",
    "TaskCancelled": "magenta",
    "TaskRetried": "yellow",
    "DeadlockDetected": "bold red",
    "DispatcherPaused": "bold yellow",
    "DispatcherResumed": "bold green",
    "TaskAssigned": "cyan",
    "RunnerStarted": "cyan",
}


def event_line(event: TaskEvent) -> Text:
    """``12:00:03 TaskAssigned chat/1.2 → local (r-…)``."""
    kind = str(getattr(event.event_type, "value", event.event_type))
    text = Text(fmt_clock(event.timestamp) + " ", style="grey62")
    text.append(kind, style=_EVENT_STYLES.get(kind, "bold"))
    if event.task_key:
        text.append(" " + event.task_key, style="bold")
    if event.pool:
        text.append(f" [{event.pool}]", style="grey62")
    if event.message:
        text.append(" " + " ".join(event.message.split()))
    return text


#: At most this many events are written per snapshot (a busy dispatcher's snapshot carries up
#: to 200, and wrapping each costs the console's thread ~0.1 ms at 10k tasks); the panel shows
#: fewer lines than that, and a line says how many earlier ones were left out.
WRITE_MAX = 40


def _identity(event: TaskEvent) -> tuple[object, ...]:
    if event.seq is not None:
        return ("seq", event.seq)
    return (event.timestamp, event.event_type, event.task_key, event.message)


class EventTail(RichLog):
    """Appends only the events it has not shown yet, wrapped at the panel's content width.

    RichLog wraps at ``min_width`` (78) when that is wider than the panel, which cut the end of
    each first line away; lines are wrapped at the real width and re-wrapped on resize.
    """

    def __init__(self, *, id: str | None = None, max_lines: int = 500) -> None:
        super().__init__(id=id, max_lines=max_lines, wrap=True, markup=False, auto_scroll=True,
                         min_width=1)
        self._last: tuple[object, ...] | None = None
        self._recent: deque[TaskEvent] = deque(maxlen=max_lines)
        self._wrap_width = 0

    def _content_width(self) -> int:
        """Width to wrap at: the content region less a vertical scrollbar (shown or not yet)."""
        return max(8, self.content_region.width - self.styles.scrollbar_size_vertical)

    def on_resize(self, event: Resize) -> None:
        """Re-wrap every event kept when the width changes (RichLog's own handler runs too)."""
        if not event.size.width:
            return
        width = self._content_width()
        if width == self._wrap_width:
            return
        self._wrap_width = width
        self.clear()
        self._write(list(self._recent))

    def _write(self, events: Sequence[TaskEvent]) -> None:
        """One write of many events: one text of one line each (RichLog's cost is per write,
        ~1 ms at 10k tasks, and a busy dispatcher has dozens of events per snapshot)."""
        if events and self._wrap_width:
            self.write(Text("\n").join(event_line(e) for e in events), width=self._wrap_width)

    def apply(self, events: Sequence[TaskEvent]) -> None:
        """Write the events newer than the last one written (events are oldest first)."""
        if not events:
            return
        start = 0
        if self._last is not None:
            for i in range(len(events) - 1, -1, -1):
                if _identity(events[i]) == self._last:
                    start = i + 1
                    break
        fresh = events[start:]
        skipped = max(0, len(fresh) - WRITE_MAX)
        if skipped and self._wrap_width:
            note = Text(f"… {skipped} more events", style="grey62 italic")
            self.write(note, width=self._wrap_width)
        fresh = fresh[skipped:]
        self._recent.extend(fresh)
        self._write(fresh)
        self._last = _identity(events[-1])
