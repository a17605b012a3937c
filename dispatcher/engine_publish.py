"""Publishing the engine's state: snapshots, throughput buckets, the periodic deadlock check.

After each iteration that changed something, at most ``snapshot_max_rate`` times a second, the
engine thread builds a frozen :class:`~.snapshot.Snapshot` (see :mod:`.engine_snapshot`) and
swaps it in; readers take the newest one without ever blocking the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from .engine_runners import RunnerMixin
from .engine_snapshot import SnapshotBuilder
from .models import EventType, TaskEvent, TaskState
from .snapshot import Counters, DeadlockView, Snapshot

logger = logging.getLogger(__name__)


class PublishMixin(RunnerMixin):
    """Snapshots and the deadlock check (mixed into DispatcherCore)."""

    _builder: SnapshotBuilder
    _snap_cond: threading.Condition
    _reported_cycles: set[frozenset[str]]
    _next_snapshot_at: float

    def _check_deadlocks(self) -> None:
        if not len(self._book) or not self._deadlock_dirty:
            return  # nothing it reports on changed since the last check (O(n) graph build)
        self._deadlock_dirty = False
        try:
            report = self.deadlock_detector.detect(list(self._book))
        except Exception:
            logger.debug("deadlock detection failed", exc_info=True)
            return
        views: list[DeadlockView] = []
        cycle_keys: set[str] = set()
        for cyc in getattr(report, "cycles", []) or []:
            tasks = tuple(getattr(cyc, "tasks", cyc))
            cycle_keys.update(tasks)
            views.append(DeadlockView("cycle", tasks, getattr(cyc, "root", None),
                                      getattr(cyc, "suggestion", "")))
            ident = frozenset(tasks)
            if ident not in self._reported_cycles:
                self._reported_cycles.add(ident)
                self._event_log.record(TaskEvent(
                    event_type=EventType.DEADLOCK_DETECTED, task_key=tasks[0] if tasks else None,
                    message="dependency cycle: " + " -> ".join([*tasks, tasks[0]] if tasks
                                                                else []),
                    details={"tasks": list(tasks)}))
        for blk in getattr(report, "blocked_by_failure", []) or []:
            views.append(DeadlockView("failed_dependency", tuple(getattr(blk, "tasks", ())),
                                      getattr(blk, "root", None),
                                      getattr(blk, "suggestion", "")))
        new = tuple(views)
        if new != self._deadlocks:
            self._views.touch_all(self._deadlocked_keys | cycle_keys)
            # tasks that became (or stopped being) blocked by a failure: their pending reason
            # changes although they did not (big queues refresh only changed views)
            for view in (*new, *self._deadlocks):
                if view.kind == "failed_dependency":
                    self._views.touch_all(view.tasks)
            self._deadlocks = new
            self._deadlocked_keys = cycle_keys
            self._views.mark()

    def _publish(self, now: float, *, force: bool = False) -> None:
        if not force and (not self._views.dirty or now < self._next_snapshot_at):
            return
        self._next_snapshot_at = now + 1.0 / max(0.1, float(self.config.snapshot_max_rate))
        state = self._state
        if state == "running" and self._admission.paused:
            state = "paused"
        snap = self._builder.build(now, state)
        with self._snap_cond:
            self._snapshot = snap
            self._snap_cond.notify_all()
        self.metrics.update_from_snapshot(snap)

    def _initial_snapshot(self) -> Snapshot:
        try:
            counts = self.registry.count_tasks()
        except Exception:
            counts = {}

        c = Counters(total=sum(counts.values()), blocked=counts.get(TaskState.BLOCKED, 0),
                     ready=counts.get(TaskState.READY, 0),
                     running=counts.get(TaskState.RUNNING, 0), done=counts.get(TaskState.DONE, 0),
                     failed=counts.get(TaskState.FAILED, 0),
                     cancelled=counts.get(TaskState.CANCELLED, 0))
        return Snapshot(version=0, taken_at=time.time(), state="stopped",
                        policy=str(getattr(self.config.scheduling_policy, "value",
                                           self.config.scheduling_policy)),
                        max_global_concurrency=self.config.max_global_concurrency,
                        registry_path=self.registry_label, api_url=None,
                        pools=tuple(self.pool_manager.get_all_pool_status()), counters=c,
                        heartbeat_timeout=self.config.heartbeat_timeout)

    def snapshot(self) -> Snapshot:
        """The newest published snapshot (never blocks)."""
        return self._snapshot  # type: ignore[return-value]

    def wait_for_snapshot(self, after_version: int, timeout: float | None = None) -> Snapshot:
        """Wait until a snapshot newer than ``after_version`` is published (or the timeout)."""
        with self._snap_cond:
            self._snap_cond.wait_for(lambda: self._snapshot is not None
                                     and self._snapshot.version > after_version, timeout)
            return self._snapshot  # type: ignore[return-value]

    def get_status(self, *, queued: int | None = None, finished: int | None = None,
                   events: int | None = None) -> dict[str, Any]:
        """The newest snapshot as a JSON-ready dict (seed API).

        ``queued``/``finished``/``events`` keep only the first N queued tasks (dispatch order),
        the N newest finished ones and the N newest events (None: all), so the status of a
        10,000-task Dispatcher stays small; ``totals`` then gives each list's full length.
        """
        snap = self.snapshot()
        limits = {"queued": queued, "finished": finished, "events": events}
        if all(n is None for n in limits.values()):
            return snap.to_dict()
        cut: dict[str, Any] = {}
        totals: dict[str, int] = {}
        for name, n in limits.items():
            items = getattr(snap, name)
            totals[name] = len(items)
            if n is not None and len(items) > n:
                # events are oldest first: keep the newest; the others are newest/first first
                cut[name] = (items[len(items) - n:] if n else ()) if name == "events" \
                    else items[:n]
        data = replace(snap, **cut).to_dict()
        data["totals"] = totals
        return data
