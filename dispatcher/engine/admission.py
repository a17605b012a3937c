"""Admission: which READY tasks may start now, and why the rest wait.

Admission owns the TaskQueue, the scheduling policy (through the Scheduler), the pools' capacity
and health (AgentPoolManager), the tasks waiting out a retry backoff, the tasks waiting for a
workspace slot, and whether dispatching is paused. It does no I/O: a round
(:meth:`Admission.round`) reserves capacity for each decision it returns, and the launch plane
turns decisions into runners (giving capacity back with :meth:`Admission.give_back` when a
launch does not happen). Testable on a virtual clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from ..models import AgentPool, PoolStatus, Task, TaskState
from ..path_claims import PathClaims, PathConflict
from ..pool_manager import AgentPoolManager
from ..scheduler import Scheduler
from ..snapshot import Pending
from ..task_queue import TaskQueue
from .taskbook import TaskBook, ViewChanges


class Admission:
    """Queue, backoff timers, slot waits, pause, capacity (engine thread only)."""

    def __init__(self, queue: TaskQueue, scheduler: Scheduler, pools: AgentPoolManager,
                 book: TaskBook, views: ViewChanges, has_runner: Callable[[str], bool],
                 over_budget: Callable[[Task], str | None] = lambda task: None) -> None:
        self.queue = queue
        self.scheduler = scheduler
        self.pools = pools
        self._book = book
        self._views = views
        self._has_runner = has_runner
        self._delayed: list[tuple[float, str]] = []  # heap of (next_attempt_at, key)
        self._no_slot: dict[str, Task] = {}  # READY tasks waiting for a workspace slot
        # READY tasks whose dependencies' work does not merge: held until an operator acts
        self._conflicts: dict[str, tuple[Task, str]] = {}
        self._conflict_seen: dict[str, str] = {}  # the last conflict reported per task
        # declared paths of tasks holding capacity, and the READY tasks that wait for them
        self._claims = PathClaims()
        self._path_waits: dict[str, tuple[Task, PathConflict]] = {}
        self._waiters: dict[str, set[str]] = {}  # claiming task -> keys waiting for it
        # READY tasks whose tenant or taskset is over its budget (R20.4): they wait
        self._over_budget = over_budget
        self._budget_waits: dict[str, tuple[Task, str]] = {}
        self._invalid: list[tuple[Task, str]] = []  # found by a round, to be failed
        self._paused = False
        self._dirty = True  # something changed that a round could act on

    # --- pause -----------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, on: bool) -> bool:
        """Pause or resume dispatching; False when nothing changed."""
        if self._paused == on:
            return False
        self._paused = on
        self._dirty = True
        self._views.touch_all(self.queue_keys())
        return True

    # --- placement -------------------------------------------------------------------------
    def place(self, task: Task, now: float) -> None:
        """Put a task without a runner where its state says: queued, in backoff, waiting for a
        slot, or nowhere (not READY)."""
        key = task.key
        if self._has_runner(key):
            return
        if task.state is not TaskState.READY:
            if key in self.queue:
                self.queue.remove(key)
                self._dirty = True
                self._views.touch(key)
            self._no_slot.pop(key, None)
            self._conflicts.pop(key, None)
            self._conflict_seen.pop(key, None)
            self._path_waits.pop(key, None)
            self._budget_waits.pop(key, None)
            return
        if key in self._budget_waits:  # its tenant or taskset is over budget: it waits
            self._budget_waits[key] = (task, self._budget_waits[key][1])
            return
        if key in self._path_waits:  # offered again when the task it waits for ends
            self._path_waits[key] = (task, self._path_waits[key][1])
            return
        if key in self._no_slot:
            self._no_slot[key] = task
            return
        if key in self._conflicts:  # held until an operator retries or cancels it
            self._conflicts[key] = (task, self._conflicts[key][1])
            return
        if task.next_attempt_at and task.next_attempt_at > now:
            if key in self.queue:
                self.queue.remove(key)
            heapq.heappush(self._delayed, (float(task.next_attempt_at), key))
            self._views.touch(key)
            return
        self.queue.enqueue(task)  # new, or replaces the queued copy (keeps its FIFO place)
        self._dirty = True
        self._views.touch(key)

    def enqueue(self, task: Task) -> None:
        """Offer a READY task to the next round."""
        if task.key not in self.queue:
            self.queue.enqueue(task)
        self._dirty = True
        self._views.touch(task.key)

    def remove(self, key: str) -> None:
        """The task left the queue for good (cancelled, settled elsewhere)."""
        if key in self.queue:
            self.queue.remove(key)
            self._views.touch(key)
        self._no_slot.pop(key, None)
        self._conflicts.pop(key, None)
        self._conflict_seen.pop(key, None)
        self._path_waits.pop(key, None)
        self._budget_waits.pop(key, None)

    def release_due(self, now: float) -> None:
        """Tasks whose backoff ended go back to the queue."""
        while self._delayed and self._delayed[0][0] <= now:
            _, key = heapq.heappop(self._delayed)
            task = self._book.get(key)
            if task is None or task.state is not TaskState.READY or self._has_runner(key):
                continue
            if task.next_attempt_at and task.next_attempt_at > now:
                heapq.heappush(self._delayed, (float(task.next_attempt_at), key))
                continue
            self.enqueue(task)

    def next_backoff_end(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None

    # --- workspace slots -------------------------------------------------------------------
    def wait_for_slot(self, task: Task) -> None:
        """No workspace slot now: the task waits (with that reason) until one frees."""
        self._no_slot[task.key] = task
        self._views.touch(task.key)

    def waits_for_slot(self, key: str) -> bool:
        return key in self._no_slot

    @property
    def slot_waiters(self) -> int:
        return len(self._no_slot)

    def slot_waiting(self) -> list[str]:
        return list(self._no_slot)

    def slot_may_have_freed(self) -> None:
        """Offer the tasks that waited for a slot again."""
        if not self._no_slot:
            return
        waiting, self._no_slot = self._no_slot, {}
        for key, task in waiting.items():
            current = self._book.get(key, task)
            if current.state is TaskState.READY and not self._has_runner(key):
                self.enqueue(current)

    # --- start conflicts -------------------------------------------------------------------
    def hold_conflict(self, task: Task, reason: str) -> bool:
        """Its dependencies' work does not merge: hold the task out of the queue (a slot that
        frees does not offer it again) until :meth:`release_conflict`. True when ``reason`` is
        new for this task (report it once per distinct reason)."""
        key = task.key
        self._conflicts[key] = (task, reason)
        self._views.touch(key)
        if self._conflict_seen.get(key) == reason:
            return False
        self._conflict_seen[key] = reason
        return True

    def conflict_of(self, key: str) -> str | None:
        """Why a held task cannot start (None: it is not held)."""
        held = self._conflicts.get(key)
        return held[1] if held is not None else None

    def conflict_held(self) -> list[str]:
        return list(self._conflicts)

    def release_conflict(self, key: str) -> bool:
        """An operator acted on a held task: offer it again (as the TaskBook has it now)."""
        held = self._conflicts.pop(key, None)
        if held is None:
            return False
        current = self._book.get(key, held[0])
        if current.state is TaskState.READY and not self._has_runner(key):
            self.enqueue(current)
        return True

    # --- rounds and capacity ---------------------------------------------------------------
    @property
    def wants_round(self) -> bool:
        """A round could start something now."""
        return self._dirty and not self._paused and len(self.queue) > 0

    def mark_changed(self) -> None:
        """Capacity, health or the queue changed: a round may place more."""
        self._dirty = True

    def round(self, now: float) -> list[tuple[Task, AgentPool]]:
        """Decide what starts now; capacity is reserved for every decision returned."""
        self._dirty = False
        if self._paused or not len(self.queue):
            return []
        decisions = self.scheduler.schedule(self.queue, self.pools, now=now,
                                            hold=self._hold)
        if decisions:
            self._dirty = True  # capacity may remain: try again next iteration
        for task, why in self.scheduler.take_invalid(self.queue):
            self._invalid.append((task, why))
        return decisions

    def take_invalid(self) -> list[tuple[Task, str]]:
        """READY tasks that can never be scheduled (a number out of range, written by another
        tool), with the reason: the engine fails each of them alone."""
        found, self._invalid = self._invalid, []
        return found

    def take(self, pool_name: str, task: Task) -> None:
        """Hold capacity (and the declared paths) for a runner found alive after a restart."""
        self.pools.acquire(pool_name, task)
        self._claims.claim(task.key, _repo(task), task.paths)

    def give_back(self, pool_name: str, task: Task) -> None:
        """Release the capacity held for ``task`` (its runner ended, or never started), and
        its paths: the tasks that waited for them are offered again."""
        self.pools.release(pool_name, task)
        self._dirty = True
        self._release_paths(task.key)

    # --- declared paths (R21.5) ------------------------------------------------------------
    def _hold(self, task: Task) -> bool:
        """Asked by the round about each task a pool could take: True when it must wait (its
        tenant or taskset is over budget, or its paths overlap a running task's)."""
        reason = self._over_budget(task)
        if reason:
            self._budget_waits[task.key] = (task, reason)
            self._views.touch(task.key)
            return True
        return self._paths_hold(task)

    def budget_wait_of(self, key: str) -> str | None:
        """Why a READY task waits for budget (None: it does not)."""
        held = self._budget_waits.get(key)
        return held[1] if held is not None else None

    def _paths_hold(self, task: Task) -> bool:
        """Asked by the round about each task a pool could take: False (and its paths are
        claimed) when it may start beside the others, True when it must wait."""
        if not task.paths or not task.repo:
            return False
        found = self._claims.conflict(task.key, _repo(task), task.paths)
        if found is None:
            self._claims.claim(task.key, _repo(task), task.paths)
            return False
        self._path_waits[task.key] = (task, found)
        self._waiters.setdefault(found.other, set()).add(task.key)
        self._views.touch(task.key)
        return True

    def _release_paths(self, key: str) -> None:
        self._claims.release(key)
        for waiter in self._waiters.pop(key, ()):
            held = self._path_waits.pop(waiter, None)
            if held is None:
                continue
            current = self._book.get(waiter, held[0])
            if current.state is TaskState.READY and not self._has_runner(waiter):
                self.enqueue(current)

    def path_wait_of(self, key: str) -> PathConflict | None:
        """Which running task a READY task waits for, and the paths both touch."""
        held = self._path_waits.get(key)
        return held[1] if held is not None else None

    def path_waiting(self) -> list[str]:
        return list(self._path_waits)

    def claimed_paths(self) -> dict[str, tuple[str, ...]]:
        """Task -> the paths it holds (tasks with declared paths holding capacity)."""
        return self._claims.claimed()

    def runner_ended(self, pool_name: str, task: Task, runtime: float) -> None:
        """A runner's capacity comes back and its runtime counts for its tenant."""
        self.give_back(pool_name, task)
        self.scheduler.record_usage(task.tenant, runtime)

    def launch_failed(self, pool_name: str, message: str) -> None:
        self.pools.record_launch_error(pool_name, message)
        self._dirty = True

    def launch_succeeded(self, pool_name: str) -> None:
        self.pools.record_launch_success(pool_name)

    def set_pool_enabled(self, name: str, enabled: bool) -> None:
        self.pools.set_pool_enabled(name, enabled)
        self._dirty = True
        self._views.touch_all(self.queue_keys())

    def set_platform_health(self, pool_name: str, ok: bool, message: str) -> bool:
        """Record a platform check; True when the pool's health changed."""
        changed = self.pools.set_platform_health(pool_name, ok, message)
        if changed:
            self._dirty = True
            self._views.mark()
        return changed

    def set_priority(self, task: Task) -> None:
        """The task's priority changed (persisted already)."""
        if task.key in self.queue:
            self.queue.update_priority(task.key, task.priority)
            self._dirty = True
        elif task.key in self._no_slot:
            self._no_slot[task.key] = task
        elif task.key in self._conflicts:
            self._conflicts[task.key] = (task, self._conflicts[task.key][1])
        elif task.key in self._path_waits:
            self._path_waits[task.key] = (task, self._path_waits[task.key][1])

    # --- questions -------------------------------------------------------------------------
    def queue_keys(self) -> list[str]:
        return [t.key for t in self.queue.tasks()] if len(self.queue) else []

    def explain(self, task: Task) -> Pending:
        """The capacity answer for a READY task (pool full, quota, disabled, …)."""
        return self.scheduler.explain(task, self.pools)

    def order(self, now: float) -> list[Task]:
        """Every queued task in dispatch order."""
        return self.scheduler.order(self.queue, self.pools, now=now)

    def order_keys(self, now: float) -> list[str]:
        """The keys of :meth:`order` (queue positions)."""
        return self.scheduler.order_keys(self.queue, self.pools, now=now)

    def pool_status(self) -> list[PoolStatus]:
        return list(self.pools.get_all_pool_status())

    @property
    def pools_version(self) -> object:
        """Changes whenever capacity or health changes (pending reasons may be stale)."""
        return (id(self.pools), getattr(self.pools, "version", None))


def _repo(task: Task) -> str | None:
    """The repository a task's paths are claimed in (as the taskset names it: no I/O)."""
    return task.repo.strip().rstrip("/") if task.repo else None
