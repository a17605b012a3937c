"""DeadlockWatch: dependency cycles and tasks blocked for good behind a failed root.

The DeadlockDetector builds a graph of every task (O(n)); the watch runs it only after a change
it reports on (a new task or edge, a task entering or leaving FAILED/CANCELLED), at most every
``deadlock_check_interval`` seconds, and soon (one second) after a failure. A check that fails is
tried again at the next interval and shown as degraded meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..deadlock import DeadlockDetector
from ..models import EventType, Task, TaskEvent
from ..snapshot import DeadlockView
from .event_log import EventLog
from .health import EngineHealth
from .taskbook import TaskChange, ViewChanges

FEATURE = "deadlock check"


class DeadlockWatch:
    """What the last deadlock check found, and when to check again (engine thread)."""

    def __init__(self, detector: DeadlockDetector, interval: float, events: EventLog,
                 views: ViewChanges, health: EngineHealth) -> None:
        self._detector = detector
        self._interval = max(0.5, float(interval))
        self._events = events
        self._views = views
        self._health = health
        self._dirty = True
        self._next_check = 0.0
        self._found: tuple[DeadlockView, ...] = ()
        self._cycle_keys: frozenset[str] = frozenset()
        self._reported: set[frozenset[str]] = set()

    def note(self, change: TaskChange) -> None:
        """A task changed: check again if it may change what the check reports."""
        if change.graph_changed:
            self._dirty = True
        if change.finished_now and change.new.state.value != "done":
            self._next_check = min(self._next_check, time.time() + 1.0)

    def next_check(self) -> float:
        return self._next_check

    def in_cycle(self, key: str) -> bool:
        return key in self._cycle_keys

    def views(self) -> tuple[DeadlockView, ...]:
        return self._found

    def check(self, now: float, tasks: Iterable[Task]) -> None:
        """Run the check when it is due and something it reports on changed."""
        if now < self._next_check:
            return
        self._next_check = now + self._interval
        if not self._dirty:
            return
        task_list = list(tasks)
        if not task_list:
            return
        try:
            report = self._detector.detect(task_list)
        except Exception as exc:  # kept dirty: tried again at the next interval
            self._health.failed(FEATURE, exc)
            return
        self._dirty = False
        self._health.ok(FEATURE)
        views: list[DeadlockView] = []
        cycle_keys: set[str] = set()
        for cyc in report.cycles:
            keys = tuple(cyc.tasks)
            cycle_keys.update(keys)
            views.append(DeadlockView("cycle", keys, cyc.root, cyc.suggestion))
            ident = frozenset(keys)
            if ident not in self._reported:
                self._reported.add(ident)
                self._events.record(TaskEvent(
                    event_type=EventType.DEADLOCK_DETECTED, task_key=keys[0] if keys else None,
                    message="dependency cycle: " + " -> ".join([*keys, keys[0]] if keys else []),
                    details={"tasks": list(keys)}))
        for blk in report.blocked_by_failure:
            views.append(DeadlockView("failed_dependency", tuple(blk.tasks), blk.root,
                                      blk.suggestion))
        found = tuple(views)
        if found != self._found:
            self._views.touch_all(self._cycle_keys | cycle_keys)
            # tasks that became (or stopped being) blocked by a failure: their pending reason
            # changes although they did not
            for view in (*found, *self._found):
                if view.kind == "failed_dependency":
                    self._views.touch_all(view.tasks)
            self._found = found
            self._cycle_keys = frozenset(cycle_keys)
