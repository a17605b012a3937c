"""A live tail of the engine's recent events."""

from __future__ import annotations

from collections.abc import Sequence

from necrocode.dispatcher.models import TaskEvent
from rich.text import Text
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


def _identity(event: TaskEvent) -> tuple[object, ...]:
    if event.seq is not None:
        return ("seq", event.seq)
    return (event.timestamp, event.event_type, event.task_key, event.message)


class EventTail(RichLog):
    """Appends only the events it has not shown yet."""

    def __init__(self, *, id: str | None = None, max_lines: int = 500) -> None:
        super().__init__(id=id, max_lines=max_lines, wrap=True, markup=False, auto_scroll=True)
        self._last: tuple[object, ...] | None = None

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
        for event in events[start:]:
            self.write(event_line(event))
        self._last = _identity(events[-1])
