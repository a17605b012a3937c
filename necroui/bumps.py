"""Priority bumps that all count: ``+`` pressed five times quickly moves a priority by five.

Each press adds its delta to a per-task sum on the UI thread; one sender thread drains the sums
and sends them to the engine, so presses that arrive while a request is in flight are folded
into the next one instead of reading a stale priority. With an engine that has an atomic
``bump_priority(key, delta)`` verb the sums go to it; otherwise the sender reads the task's
current priority right before writing ``current + delta`` (exact while this console is the only
writer of that task's priority).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from necrocode.dispatcher.errors import DispatcherError

log = logging.getLogger(__name__)

Report = Callable[[list[str], list[str]], None]  # (answers, errors), called on the sender


class PriorityBumper:
    """Folds priority deltas per task and sends them from one background thread."""

    def __init__(self, engine: Any, report: Report) -> None:
        self.engine = engine
        self.report = report
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._sending = False

    @property
    def atomic(self) -> bool:
        """Whether the engine applies deltas itself (no read-then-write)."""
        return callable(getattr(self.engine, "bump_priority", None))

    def bump(self, keys: list[str], delta: int) -> None:
        """Add ``delta`` to each task's priority (sent now or folded into the next send)."""
        with self._lock:
            for key in keys:
                self._pending[key] = self._pending.get(key, 0) + delta
            if self._sending:
                return
            self._sending = True
        threading.Thread(target=self._drain, name="necroui-priority", daemon=True).start()

    def pending(self) -> dict[str, int]:
        """Deltas not sent yet (shown as +n next to the priority until they land)."""
        with self._lock:
            return dict(self._pending)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, {}
                if not batch:
                    self._sending = False
                    return
            answers: list[str] = []
            errors: list[str] = []
            for key, delta in batch.items():
                if delta == 0:
                    continue
                try:
                    answers.append(self._send(key, delta))
                except DispatcherError as exc:
                    errors.append(str(exc))
                except Exception as exc:  # noqa: BLE001 - shown to the operator, logged
                    log.exception("priority of %s failed", key)
                    errors.append(f"priority of {key} failed: {type(exc).__name__}: {exc}")
            self.report(answers, errors)

    def _send(self, key: str, delta: int) -> str:
        if self.atomic:
            return str(self.engine.bump_priority(key, delta))
        current = int(self.engine.registry.get_task(key).priority)
        return str(self.engine.set_priority(key, current + delta))
