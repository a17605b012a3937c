"""EngineDiagnostics: one consistent look at the engine's components (for tests and support).

Built on the engine thread (:meth:`DispatcherCore.diagnose`), so every figure belongs to the same
moment: what is in flight (launches, fences, slot releases, deferred writes, unknown runs) and
what is held (runners per pool, queue, slot waits, counters).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import TaskState
from .launch_plane import LaunchPlane
from .parts import EngineParts


@dataclass(frozen=True)
class EngineDiagnostics:
    """What the engine holds and what it still has to finish."""

    launching: tuple[str, ...]  # task keys being launched
    stopping: tuple[str, ...]  # runner ids being fenced
    slot_releases: dict[str, int]  # task key -> slot releases in flight
    deferred_writes: tuple[str, ...]  # settlement writes waiting for another try
    unsure: dict[str, str]  # task key -> runner id of an assignment not known to commit
    unknown: tuple[str, ...]  # RUNNING tasks whose platform could not be asked
    committing: tuple[str, ...]  # task keys whose run's work is being committed
    exits_to_poll: bool  # runners flagged by watchers, polled next iteration
    registry_dirty: bool  # the registry is to be polled next iteration
    pending_events: int  # batched events not written yet
    monitor_seq: int  # the registry change sequence seen so far
    runner_ids: tuple[str, ...]  # live runners, sorted
    runners_by_pool: dict[str, int]
    queue_length: int
    waiting_for_slot: tuple[str, ...]
    waiting_for_paths: tuple[str, ...]  # READY tasks waiting for a running task's paths
    held_by_conflict: tuple[str, ...]  # READY tasks whose dependencies' work does not merge
    claimed_paths: dict[str, tuple[str, ...]]  # task -> declared paths it holds
    assigned: int
    launch_errors: int
    retried: int
    heartbeat_timeouts: int
    state_counts: dict[TaskState, int]
    problems: tuple[str, ...]

    @property
    def busy(self) -> dict[str, object]:
        """What is still in flight (empty when the engine is idle)."""
        return {k: v for k, v in {
            "launching": self.launching, "stopping": self.stopping,
            "slot_releases": self.slot_releases, "deferred": self.deferred_writes,
            "unsure": self.unsure, "committing": self.committing,
            "flagged": self.exits_to_poll,
            "registry_dirty": self.registry_dirty, "pending_events": self.pending_events,
        }.items() if v}


def diagnose(parts: EngineParts, launches: LaunchPlane, monitor_seq: int,
             registry_dirty: bool) -> EngineDiagnostics:
    by_pool: dict[str, int] = {}
    for rec in parts.runners:
        by_pool[rec.pool.name] = by_pool.get(rec.pool.name, 0) + 1
    return EngineDiagnostics(
        launching=tuple(launches.launching_keys()), stopping=tuple(parts.fencer.stopping()),
        slot_releases=parts.workspaces.in_flight(), deferred_writes=tuple(parts.settler.deferred()),
        unsure=launches.unsure(), unknown=tuple(parts.reconciler.unknown),
        committing=tuple(parts.work.keys()),
        exits_to_poll=parts.runners.has_flagged, registry_dirty=registry_dirty,
        pending_events=parts.events.pending, monitor_seq=monitor_seq,
        runner_ids=tuple(sorted(parts.runners.ids())), runners_by_pool=by_pool,
        queue_length=len(parts.admission.queue),
        waiting_for_slot=tuple(parts.admission.slot_waiting()),
        waiting_for_paths=tuple(parts.admission.path_waiting()),
        held_by_conflict=tuple(parts.admission.conflict_held()),
        claimed_paths=parts.admission.claimed_paths(),
        assigned=launches.assigned, launch_errors=launches.launch_errors,
        retried=parts.settler.retried, heartbeat_timeouts=parts.runners.heartbeat_timeouts,
        state_counts={s: n for s, n in parts.book.counts().items() if n},
        problems=parts.health.problems())
