"""Publisher: frozen snapshots of the engine for every other thread.

After each iteration that changed something, at most ``snapshot_max_rate`` times a second, the
engine thread builds a :class:`~..snapshot.Snapshot` from the components' public views (see
:mod:`.snapshot_builder`) and swaps it in; readers take the newest one without ever blocking the
engine, or wait for a newer one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from ..config import DispatcherConfig
from ..metrics import MetricsCollector
from ..models import TaskState
from ..pool_manager import AgentPoolManager
from ..registry.base import TaskRegistry
from ..snapshot import Counters, Snapshot
from .snapshot_builder import SnapshotBuilder, SnapshotSources


def _policy_name(config: DispatcherConfig) -> str:
    return str(getattr(config.scheduling_policy, "value", config.scheduling_policy))


def initial_snapshot(config: DispatcherConfig, registry: TaskRegistry, registry_label: str,
                     pools: AgentPoolManager) -> Snapshot:
    """What a Dispatcher that has not started shows: the registry's counts and the pools."""
    try:
        counts = registry.count_tasks()
    except Exception:  # a registry that cannot be read yet: the first publish tells
        counts = {}
    c = Counters(total=sum(counts.values()), blocked=counts.get(TaskState.BLOCKED, 0),
                 ready=counts.get(TaskState.READY, 0), running=counts.get(TaskState.RUNNING, 0),
                 done=counts.get(TaskState.DONE, 0), failed=counts.get(TaskState.FAILED, 0),
                 cancelled=counts.get(TaskState.CANCELLED, 0))
    return Snapshot(version=0, taken_at=time.time(), state="stopped", policy=_policy_name(config),
                    max_global_concurrency=config.max_global_concurrency,
                    registry_path=registry_label, api_url=None,
                    pools=tuple(pools.get_all_pool_status()), counters=c,
                    heartbeat_timeout=config.heartbeat_timeout)


class Publisher:
    """Builds snapshots on the engine thread and hands them to any thread."""

    def __init__(self, src: SnapshotSources, metrics: MetricsCollector, first: Snapshot) -> None:
        self._src = src
        self._metrics = metrics
        self.builder = SnapshotBuilder(src)
        self._cond = threading.Condition()
        self._snapshot = first
        self._next_at = 0.0

    def due(self) -> float | None:
        """When the next snapshot may be built (None: nothing changed)."""
        return self._next_at if self._src.views.dirty else None

    def publish(self, now: float, state: str, api_url: str | None, *,
                force: bool = False) -> None:
        if not force and (not self._src.views.dirty or now < self._next_at):
            return
        rate = max(0.1, float(self._src.config.snapshot_max_rate))
        self._next_at = now + 1.0 / rate
        snap = self.builder.build(now, state, api_url)
        with self._cond:
            self._snapshot = snap
            self._cond.notify_all()
        self._metrics.update_from_snapshot(snap)

    def snapshot(self) -> Snapshot:
        """The newest published snapshot (never blocks)."""
        return self._snapshot

    def wait_for(self, after_version: int, timeout: float | None = None) -> Snapshot:
        """Wait until a snapshot newer than ``after_version`` is published (or the timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._snapshot.version > after_version, timeout)
            return self._snapshot

    def status(self, *, queued: int | None = None, finished: int | None = None,
               events: int | None = None) -> dict[str, Any]:
        """The newest snapshot as a JSON-ready dict; ``queued``/``finished``/``events`` keep
        only the first N queued tasks (dispatch order), the N newest finished ones and the N
        newest events (None: all), and ``totals`` then gives each list's full length."""
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
