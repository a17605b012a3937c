"""EventLog: the engine thread's door to the EventRecorder, keeping events in order.

RunnerStarted events of the launches registered in one iteration are batched (one registry write
for many); any later event or transition of this engine goes through here and writes the batch
first, so a runner that exits at once never shows its RunnerCompleted before its RunnerStarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..events import EventRecorder
from ..models import Task, TaskEvent, TaskState
from ..registry._common import TransitionRequest, TransitionResult


class EventLog:
    """Ordered event writes of the engine thread."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder
        self._batch: list[TaskEvent] = []

    def defer(self, event: TaskEvent) -> None:
        """Write ``event`` with the next flush (at the end of the iteration at the latest)."""
        self._batch.append(event)

    @property
    def pending(self) -> int:
        """Events waiting in the batch."""
        return len(self._batch)

    def flush(self) -> None:
        """Write the batched events now."""
        if self._batch:
            batch, self._batch = self._batch, []
            self.recorder.record_many(batch)

    def record(self, event: TaskEvent) -> None:
        self.flush()
        self.recorder.record(event)

    def transition(self, key: str, state: TaskState, *, expected: TaskState | None = None,
                   event: TaskEvent | None = None, **updates: Any) -> Task:
        """A compare-and-set transition with its event (after the batched events)."""
        self.flush()
        return self.recorder.transition(key, state, expected=expected, event=event, **updates)

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Several transitions with their events in one transaction (after the batched
        events); see :meth:`EventRecorder.transition_many`."""
        self.flush()
        return self.recorder.transition_many(requests)

    def update(self, key: str, *, event: TaskEvent | None = None, **updates: Any) -> Task:
        self.flush()
        return self.recorder.update(key, event=event, **updates)
