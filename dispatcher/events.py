"""EventRecorder: writes the Dispatcher's events to the Task Registry, never losing one.

Events that belong to a state change are written *with* the transition (one registry
transaction, see :meth:`EventRecorder.transition`). Events written on their own
(:meth:`EventRecorder.record`) go to the registry when it takes them, else to a local JSON-lines
fallback file (``<state_dir>/events-fallback.jsonl``) which :meth:`EventRecorder.replay` writes to
the registry later. Each fallback line carries a ``fallback_id`` so that a replay interrupted
half-way never writes an event twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidTransitionError, TaskNotFoundError
from .logging_setup import log_extra
from .models import EventType, Task, TaskEvent, TaskState
from .registry._common import TransitionRequest, TransitionResult
from .registry.base import TaskRegistry

logger = logging.getLogger(__name__)

FALLBACK_NAME = "events-fallback.jsonl"
_FALLBACK_ID = "fallback_id"


class EventRecorder:
    """Records events in the registry, with a JSONL fallback when the registry refuses.

    ``registry`` is the Task Registry; ``state_dir`` is where the fallback file lives (None: no
    fallback, failures are logged). ``recent`` keeps the last ``keep`` events recorded through
    this object (newest last); ``listeners`` are called with every event recorded.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        keep: int = 200,
    ) -> None:
        self.registry = registry
        self.fallback_path: Path | None = (
            Path(state_dir) / FALLBACK_NAME if state_dir is not None else None
        )
        self.recent: deque[TaskEvent] = deque(maxlen=keep)
        self.listeners: list[Callable[[TaskEvent], None]] = []
        self._last_problem = ""
        self.repeated_problems = 0  # registry failures not logged again (same problem)
        self._lock = threading.RLock()
        self._pending_fallback = bool(
            self.fallback_path is not None and self.fallback_path.exists()
            and self.fallback_path.stat().st_size > 0
        )
        self.fallback_writes = 0  # events that went to the fallback file (for tests and metrics)

    # --- writing ----------------------------------------------------------------------------
    def record(self, event: TaskEvent) -> TaskEvent:
        """Store ``event``; on a registry failure append it to the fallback file instead."""
        with self._lock:
            if self._pending_fallback:
                self.replay()
            try:
                stored = self.registry.record_event(event)
            except Exception as exc:  # the registry refused: keep the event locally
                self._to_fallback(event, exc)
                stored = event
            self._remember(stored)
            return stored

    def record_many(self, events: Iterable[TaskEvent]) -> None:
        """Store several events in one registry transaction (fallback on failure)."""
        batch = list(events)
        if not batch:
            return
        with self._lock:
            try:
                self.registry.record_events(batch)
            except Exception as exc:
                for event in batch:
                    self._to_fallback(event, exc)
            for event in batch:
                self._remember(event)

    def emit(self, event_type: EventType, task_key: str | None = None, **fields: Any) -> TaskEvent:
        """Build a :class:`TaskEvent` from keyword fields and :meth:`record` it."""
        return self.record(TaskEvent(event_type=event_type, task_key=task_key, **fields))

    def transition(
        self,
        key: str,
        to_state: TaskState,
        *,
        expected: TaskState | Sequence[TaskState] | None = None,
        event: TaskEvent | None = None,
        **updates: Any,
    ) -> Task:
        """State change plus its event in one registry transaction.

        Invalid transitions and unknown tasks raise as the registry raises them. Any other
        registry failure is retried once without the event (the event then goes to the
        fallback), so a flaky event table never blocks a state change.
        """
        try:
            task = self.registry.transition(
                key, to_state, expected=expected, event=event, **updates
            )
        except (InvalidTransitionError, TaskNotFoundError):
            raise
        except Exception as exc:
            if event is None:
                raise
            self._warn_once(f"transition with its event failed ({exc}); retrying without", key)
            task = self.registry.transition(key, to_state, expected=expected, **updates)
            with self._lock:
                self._to_fallback(event, exc)
        if event is not None:
            with self._lock:
                self._remember(event)
        return task

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Several compare-and-sets with their events in ONE registry transaction; refusals are
        answered in place. A failure of the whole batch raises (nothing written): callers try
        each request again on its own."""
        results = self.registry.transition_many(requests)
        with self._lock:
            for req, result in zip(requests, results, strict=True):
                if req.event is not None and isinstance(result, Task):
                    self._remember(req.event)
        return results

    def update(self, key: str, *, event: TaskEvent | None = None, **updates: Any) -> Task:
        """Field update plus its event (same fallback rules as :meth:`transition`)."""
        try:
            task = self.registry.update_task(key, event=event, **updates)
        except (InvalidTransitionError, TaskNotFoundError):
            raise
        except Exception as exc:
            if event is None:
                raise
            task = self.registry.update_task(key, **updates)
            with self._lock:
                self._to_fallback(event, exc)
        if event is not None:
            with self._lock:
                self._remember(event)
        return task

    # --- fallback ---------------------------------------------------------------------------
    @property
    def has_fallback(self) -> bool:
        """True while events wait in the fallback file."""
        return self._pending_fallback

    def replay(self) -> int:
        """Write the fallback file's events to the registry; returns how many were written.

        Events already in the registry (a replay that stopped after its commit) are skipped by
        their ``fallback_id``. The file is removed only after the registry took every event.
        """
        with self._lock:
            path = self.fallback_path
            if path is None or not path.exists():
                self._pending_fallback = False
                return 0
            events = _read_fallback(path)
            if not events:
                path.unlink(missing_ok=True)
                self._pending_fallback = False
                return 0
            try:
                done = self._already_stored(events)
                todo = [e for e in events if e.details.get(_FALLBACK_ID) not in done]
                if todo:
                    self.registry.record_events(todo)
            except Exception as exc:  # tried again a second later; said once per problem
                self._warn_once(f"replay of {len(events)} kept event(s) deferred ({exc})", None)
                return 0
            path.unlink(missing_ok=True)
            self._pending_fallback = False
            if todo:
                logger.info("replayed %d event(s) from %s", len(todo), path)
            return len(todo)

    def _already_stored(self, events: list[TaskEvent]) -> set[str]:
        low = min(e.timestamp for e in events)
        high = max(e.timestamp for e in events)
        stored = self.registry.get_events(since=low, until=high + 1e-3)
        return {
            str(e.details[_FALLBACK_ID]) for e in stored if e.details.get(_FALLBACK_ID) is not None
        }

    def _to_fallback(self, event: TaskEvent, exc: BaseException) -> None:
        self.fallback_writes += 1
        if self.fallback_path is None:
            logger.error("event %s for %s lost: registry refused it (%s) and no fallback is set",
                         event.event_type.value, event.task_key, exc,
                         extra=log_extra(task=event.task_key, runner=event.runner_id,
                                         pool=event.pool))
            return
        data = event.to_dict()
        data["details"] = {**data["details"], _FALLBACK_ID: uuid.uuid4().hex}
        data["seq"] = None
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.fallback_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(data) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._pending_fallback = True
        logger.warning("registry refused event %s (%s); kept in %s", event.event_type.value, exc,
                       self.fallback_path, extra=log_extra(task=event.task_key,
                                                           runner=event.runner_id,
                                                           pool=event.pool))

    def _warn_once(self, problem: str, key: str | None) -> None:
        """A warning per distinct problem (a registry that keeps failing the same way, e.g. a
        full disk, is reported once, not once per try)."""
        with self._lock:
            text = " ".join(problem.split())
            if text == self._last_problem:
                self.repeated_problems += 1
                return
            self._last_problem = text
        logger.warning("%s: %s", key or "events", problem, extra=log_extra(task=key))

    def _remember(self, event: TaskEvent) -> None:
        self.recent.append(event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a listener never breaks recording
                logger.exception("event listener failed")


def _read_fallback(path: Path) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                events.append(TaskEvent.from_dict(json.loads(line)))
            except (ValueError, KeyError) as exc:  # a torn last line after a crash
                logger.warning("%s:%d: unreadable fallback event skipped (%s)", path, lineno, exc)
    return events
