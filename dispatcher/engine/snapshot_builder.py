"""Builds the engine's frozen :class:`~.snapshot.Snapshot` after changes.

Per-task views are cached and rebuilt only for tasks that changed since the last snapshot
(``rev`` grows when a view's content changes). A queued view carries no queue position (the
snapshot derives positions from its order on demand, :meth:`Snapshot.position_of`), so a
dispatch that moves every task up one place changes no view and a console redraws no row for
it. The dispatch order of the whole queue (and every pending reason) is recomputed on every
snapshot for small queues and, for big ones, at most once a second and at most 2% of a core;
in between, the :class:`~.queued_layout.QueuedLayout` keeps every task's place and is told
only the views that changed, and capacity reasons are updated when the pools changed (per
task shape), so a snapshot's cost follows the changes, not the 10,000 tasks queued.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, replace

from ..config import DispatcherConfig
from ..models import AgentPool, RunnerState, Task, TaskEvent, TaskState
from ..pending import no_slot, pending_for_blocked, pending_paused, pending_retry
from ..registry.base import TaskRegistry
from ..snapshot import (
    Counters,
    FinishedTaskView,
    Pending,
    PendingReason,
    QueuedTaskView,
    RunningTaskView,
    Snapshot,
    work_fields,
)
from .admission import Admission
from .capacity_reasons import CapacityReasons
from .deadlocks import DeadlockWatch
from .health import EngineHealth
from .landings import Landings
from .launch_plane import LaunchPlane
from .ownership import Ownership
from .queued_layout import QueuedLayout
from .queued_views import queued_view, shows, view_with
from .reconciler import Reconciler
from .runner_table import RunnerTable
from .runs import run_number_of
from .settler import Settler
from .taskbook import TaskBook, ViewChanges
from .usage import UsageLedger
from .work_step import COMMITTING, WorkStep

logger = logging.getLogger(__name__)

FULL_REFRESH_SMALL = 200  # queues up to this size get positions recomputed every snapshot
FULL_REFRESH_SHARE = 50.0  # bigger ones: at most every 50 times what the last one cost
FINISHED_KEEP = 200
_QUEUED_STATES = (TaskState.READY, TaskState.BLOCKED)
EVENTS_KEEP = 200


@dataclass(frozen=True)
class SnapshotSources:
    """The components whose public views a snapshot is built from."""

    config: DispatcherConfig
    registry: TaskRegistry
    registry_label: str
    book: TaskBook
    views: ViewChanges
    admission: Admission
    runners: RunnerTable
    launches: LaunchPlane
    reconciler: Reconciler
    settler: Settler
    deadlocks: DeadlockWatch
    health: EngineHealth
    ownership: Ownership
    usage: UsageLedger
    work: WorkStep
    landings: Landings

    def has_runner(self, key: str) -> bool:
        return self.runners.has_task(key) or key in self.launches or key in self.reconciler \
            or key in self.work


def _agent_of(task: Task, pool: AgentPool) -> str | None:
    """The coding-agent preset a task runs with (None: a plain command)."""
    name = task.agent or pool.agent
    return None if name in (None, "command") else name


class SnapshotBuilder:
    """Keeps cached views and assembles snapshots (engine thread only)."""

    def __init__(self, src: SnapshotSources) -> None:
        self.src = src
        self.version = 0
        self._queued: dict[str, QueuedTaskView] = {}  # every queued task's, after a build
        self._finished: dict[str, FinishedTaskView] = {}
        self._layout = QueuedLayout()  # the views in the order a snapshot shows them
        self._resetting = False  # a full refresh: the layout is rebuilt after the views
        self._reason_stamp: object = None
        # READY views whose reason is the scheduler's capacity answer for their shape: when the
        # pools change, only the views whose shape's answer changed are updated
        self._capacity = CapacityReasons()
        self._was_paused = False
        self._last_full = 0.0
        self._full_interval = 1.0
        self._roots_memo: dict[str, tuple[str, ...]] = {}
        self._events: deque[TaskEvent] = deque(maxlen=EVENTS_KEEP)
        self._event_seq = 0

    # --- inputs ----------------------------------------------------------------------------
    def note_changed(self, keys: set[str]) -> set[str]:
        """Of the changed ``keys``, keep the queued ones (READY/BLOCKED, not running) and
        return the others, whose views are dropped. :meth:`build` then builds the queued ones'
        views anew (the views' keys are the queued tasks': no set of them is kept besides;
        ``keys`` is narrowed in place: no second set of 100,000 keys at a big queue's start)."""
        src = self.src
        get = src.book.get
        gone: set[str] = set()
        for key in keys:
            task = get(key)
            if task is None or task.state not in _QUEUED_STATES or src.has_runner(key):
                gone.add(key)
                self._queued.pop(key, None)
                self._layout.drop(key)
                self._capacity.forget(key)
        keys -= gone
        return gone

    def poll_events(self) -> None:
        """Fetch registry events newer than the last seen (outside writers included): the
        newest :data:`EVENTS_KEEP` of them, which is all a snapshot shows (a backlog — a
        100,000-task submit's events — is skipped, not decoded)."""
        try:
            new = self.src.registry.get_events(after_seq=self._event_seq, limit=EVENTS_KEEP,
                                               newest_first=True)
        except Exception as exc:
            self.src.health.failed("event feed", exc)
            return
        self.src.health.ok("event feed")
        for ev in reversed(new):
            self._events.append(ev)
            if ev.seq is not None:
                self._event_seq = max(self._event_seq, ev.seq)

    def start_events_at(self, seq: int) -> None:
        self._event_seq = seq

    # --- pending reasons -------------------------------------------------------------------
    def _pending_for(self, key: str, task: Task, now: float) -> Pending:
        src = self.src
        self._capacity.forget(key)  # (it is placed again below if it still waits for capacity)
        try:
            if src.deadlocks.in_cycle(key):
                return Pending(PendingReason.DEADLOCK, "part of a dependency cycle; see deadlocks")
            if task.state is TaskState.BLOCKED:
                # the whole task map: failures further up are found too; one memo per build:
                # each chain is walked once (O(n) for n blocked tasks, not O(n * chain length))
                return pending_for_blocked(task, src.book.as_mapping(), memo=self._roots_memo)
            if task.next_attempt_at and task.next_attempt_at > now:
                return pending_retry(task)
            conflict = src.admission.conflict_of(key)
            if conflict is not None:
                return Pending(PendingReason.START_CONFLICT, conflict)
            if src.admission.paused:
                return pending_paused()
            if src.admission.waits_for_slot(key):
                return no_slot(task, task.repo)
            over = src.admission.budget_wait_of(key) or src.usage.hold_reason(task)
            if over:
                return Pending(PendingReason.OVER_BUDGET, over)
            paths = src.admission.path_wait_of(key)
            if paths is not None:
                return Pending(PendingReason.PATHS, paths.reason)
            found: Pending = src.admission.explain(task)
        except Exception as exc:  # one task's reason must not stop the snapshot
            src.health.failed("pending reasons", exc, what=key)
            return Pending(PendingReason.QUEUED, "queued (its pending reason failed: see the "
                                                 "dispatcher log)")
        self._capacity.shown(key, task, found)
        return found

    # --- views -----------------------------------------------------------------------------
    def _queued_view(self, task: Task, now: float) -> QueuedTaskView:
        """The view of a queued task (the cached one when nothing it shows changed)."""
        key = task.key
        old = self._queued.get(key)
        pending = self._pending_for(key, task, now)
        in_queue = task.state is TaskState.READY and key in self.src.admission.queue
        if old is not None and shows(old, task, pending, in_queue):
            return old
        view = queued_view(key, task, pending, in_queue, 0 if old is None else old.rev + 1)
        self._set_view(key, view)
        return view

    def _set_view(self, key: str, view: QueuedTaskView) -> None:
        self._queued[key] = view
        if not self._resetting:
            self._layout.put(key, view)

    def _finished_view(self, task: Task) -> FinishedTaskView:
        pool = self.src.launches.last_pool(task.key)
        view = FinishedTaskView(
            key=task.key, taskset=task.taskset, task_id=task.id, title=task.title,
            state=task.state, attempts=task.attempts, started_at=task.started_at,
            finished_at=task.finished_at, last_error=task.last_error, pool=pool,
            usage=task.usage, **work_fields(task),
        )
        old = self._finished.get(task.key)
        if old is not None:
            view = replace(view, rev=old.rev) if replace(old, rev=0) == replace(view, rev=0) \
                else replace(view, rev=old.rev + 1)
        self._finished[task.key] = view
        return view

    def _running_views(self) -> tuple[RunningTaskView, ...]:
        out = []
        for rec in self.src.runners:
            task = self.src.book.get(rec.key, rec.task)
            out.append(RunningTaskView(
                key=rec.key, taskset=task.taskset, task_id=task.id, title=task.title,
                skill=task.required_skill, tenant=task.tenant, priority=task.priority,
                runner_id=rec.runner_id, pool=rec.pool.name,
                slot_id=rec.slot.slot_id if rec.slot else None, attempt=rec.attempt,
                started_at=rec.started_at, last_sign_of_life=rec.last_sign,
                runner_state=rec.state, handle=rec.runner.handle, progress=rec.progress,
                log_path=rec.runner.log_path, rev=rec.rev, usage=rec.usage,
                agent=_agent_of(task, rec.pool),
                **work_fields(task, rec.slot.branch if rec.slot else None),
            ))
        for pending in self.src.launches.pending():
            task = pending.task
            key = task.key
            out.append(RunningTaskView(
                key=key, taskset=task.taskset, task_id=task.id, title=task.title,
                skill=task.required_skill, tenant=task.tenant, priority=task.priority,
                runner_id=pending.runner_id, pool=pending.pool.name,
                slot_id=None, attempt=pending.attempt,
                started_at=pending.assigned_at, last_sign_of_life=pending.assigned_at,
                runner_state=RunnerState.LAUNCHING, **work_fields(task),
            ))
        for run in self.src.reconciler.unknown.values():
            task = self.src.book.get(run.task.key, run.task)
            out.append(RunningTaskView(
                key=task.key, taskset=task.taskset, task_id=task.id, title=task.title,
                skill=task.required_skill, tenant=task.tenant, priority=task.priority,
                runner_id=task.runner_id or "", pool=run.pool.name, slot_id=task.assigned_slot,
                attempt=run_number_of(task), started_at=task.started_at or run.since,
                last_sign_of_life=run.since, runner_state=RunnerState.UNKNOWN,
                progress=run.display, rev=run.tries, **work_fields(task),
            ))
        for job in self.src.work.jobs():
            task = self.src.book.get(job.key, job.task)
            facts = job.run
            out.append(RunningTaskView(
                key=task.key, taskset=task.taskset, task_id=task.id, title=task.title,
                skill=task.required_skill, tenant=task.tenant, priority=task.priority,
                runner_id=facts.runner_id, pool=facts.pool.name, slot_id=facts.slot_id,
                attempt=facts.attempt, started_at=facts.started_at,
                last_sign_of_life=job.exit.finished_at or job.began_at,
                runner_state=RunnerState.COMMITTING, progress=COMMITTING,
                **work_fields(task, job.slot.branch),
            ))
        out.sort(key=lambda v: v.started_at)
        return tuple(out)

    def _refresh_capacity_reasons(self) -> None:
        """The pools changed: explain each task shape again and update the views whose shown
        answer is no longer their shape's (only those)."""
        src = self.src

        def failed(exc: Exception, task: Task) -> None:
            src.health.failed("pending reasons", exc, what=task.key)

        views = self._queued
        for key, answer in self._capacity.refresh(src.admission.explain, failed):
            view = views.get(key)
            if view is not None and view.pending != answer:
                self._set_view(key, view_with(view, pending=answer))

    # --- assembly --------------------------------------------------------------------------
    def _small(self, changed: set[str]) -> bool:
        """Whether the queue (its views and the ``changed`` queued keys) is small enough to
        have its order and reasons recomputed at every snapshot."""
        views = self._queued
        if len(views) > FULL_REFRESH_SMALL:
            return False
        if len(views) + len(changed) <= FULL_REFRESH_SMALL:
            return True
        return len(views) + sum(1 for k in changed if k not in views) <= FULL_REFRESH_SMALL

    def build(self, now: float, state: str, api_url: str | None) -> Snapshot:
        """Assemble the next snapshot from the cached views and the engine's state."""
        src = self.src
        changed = src.views.take()
        self._roots_memo = {}  # failure roots, valid while the task map does not change
        gone = self.note_changed(changed)  # ``changed`` keeps the queued keys
        self.poll_events()
        views = self._queued
        full = self._small(changed) or now - self._last_full >= self._full_interval
        # pending reasons of READY tasks depend on the pools (capacity), pause and slots: when
        # those changed, explain them again (cheap: the scheduler caches per task shape), so a
        # reason never says "8/8" while the same snapshot shows fewer running
        stamp = src.admission.pools_version
        reasons_stale = stamp != self._reason_stamp and not full
        self._reason_stamp = stamp
        paused = src.admission.paused
        pause_changed = paused != self._was_paused
        self._was_paused = paused
        if reasons_stale:
            self._refresh_capacity_reasons()
        order: list[str] = []
        if full:
            began = time.thread_time()
            self._last_full = now
            self._resetting = True  # the layout is rebuilt from every view below
            try:
                order = src.admission.order_keys(now)
                src.health.ok("queue order")
            except Exception as exc:  # positions then follow the queue, not the policy
                src.health.failed("queue order", exc)
                order = [t.key for t in src.admission.queue.tasks()]
        known = src.book
        try:
            for key in changed:
                task = known.get(key)
                if task is not None:
                    self._queued_view(task, now)
            if full:  # every view, each once (no set of all the keys to rebuild)
                for key in list(views):
                    task = known.get(key)
                    if task is not None and key not in changed:
                        self._queued_view(task, now)
            elif pause_changed:
                for key in [k for k in views if k not in changed]:
                    task = known.get(key)
                    if task is not None and task.state is TaskState.READY:
                        self._queued_view(task, now)
        finally:
            if self._resetting:
                self._resetting = False
                self._layout.reset(order, views)
        queued = self._layout.queued()
        if full and len(views) > FULL_REFRESH_SMALL:
            # big queues: a full refresh may cost at most ~2% of a core (its CPU time, so a
            # busy machine does not stretch it)
            self._full_interval = max(1.0, FULL_REFRESH_SHARE * (time.thread_time() - began))

        finished: list[FinishedTaskView] = []
        seen: set[str] = set()
        for key in src.book.finished_keys():
            if key in seen:
                continue
            seen.add(key)
            task = src.book.get(key)
            if task is None or not task.state.terminal:
                continue
            view = self._finished.get(key)
            if view is None or key in gone:
                view = self._finished_view(task)
            finished.append(view)
            if len(finished) >= FINISHED_KEEP:
                break
        if len(self._finished) > 4 * FINISHED_KEEP:
            self._finished = {v.key: v for v in finished}

        counts = src.book.counts()
        counters = Counters(
            total=sum(counts.values()),
            blocked=counts.get(TaskState.BLOCKED, 0), ready=counts.get(TaskState.READY, 0),
            running=counts.get(TaskState.RUNNING, 0), done=counts.get(TaskState.DONE, 0),
            failed=counts.get(TaskState.FAILED, 0), cancelled=counts.get(TaskState.CANCELLED, 0),
            assigned=src.launches.assigned, retried=src.settler.retried,
            launch_errors=src.launches.launch_errors,
            heartbeat_timeouts=src.runners.heartbeat_timeouts, usage=src.usage.total,
        )
        pools = tuple(src.admission.pool_status())
        self.version += 1
        return Snapshot(
            version=self.version, taken_at=now, state=state,
            policy=str(getattr(src.config.scheduling_policy, "value",
                               src.config.scheduling_policy)),
            max_global_concurrency=src.config.max_global_concurrency,
            registry_path=src.registry_label, api_url=api_url, pools=pools,
            capacity=min(src.config.max_global_concurrency,
                         sum(p.max_concurrency for p in pools if p.enabled and p.healthy)),
            queued=queued, running=self._running_views(), finished=tuple(finished),
            events=tuple(self._events), counters=counters,
            throughput=src.book.throughput.values(),
            throughput_interval=src.book.throughput.interval,
            deadlocks=src.deadlocks.views(), heartbeat_timeout=src.config.heartbeat_timeout,
            problems=src.health.problems(), leader=src.ownership.holder(),
            replica=src.ownership.identity(), landings=src.landings.views(),
        )
