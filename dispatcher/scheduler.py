"""The Scheduler: which queued tasks go to which pools in one round.

A round works on group heads only. The queue keeps, per scheduler, an index of its tasks grouped
by ``(partition, skill, milli-cores, MB)`` — tasks in one group are interchangeable as far as
placement goes — each group a heap in the policy's order. A round:

1. returns at once when the global limit is reached or no enabled pool has a free place
   (O(#pools), whatever the queue length);
2. promotes tasks whose retry time has come, then collects the heads of the groups that a pool
   can take now, one heap per partition;
3. repeatedly lets the policy pick a partition and places that partition's best head, reserving
   its capacity at once (``acquire``); a group whose head does not fit is closed for the round
   (all its tasks have the same shape), so a full pool never blocks another skill or shape.

Each decision costs O(log n + #mapped pools); a round costs O(#groups) more.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from . import limits
from . import pending as _pending
from .config import DispatcherConfig
from .errors import DispatcherStateError
from .models import AgentPool, SchedulingPolicy, Task
from .policies import PartitionPicker, Policy, make_policy, register_policy
from .pool_manager import AgentPoolManager, cpu_millis
from .shape_index import Entry, ShapeIndex
from .snapshot import Pending, PendingReason
from .task_queue import TaskQueue

log = logging.getLogger(__name__)

__all__ = ["Scheduler", "register_policy"]

Group = tuple[Hashable, str, int, int]  # (partition, skill, cpu milli-cores, memory MB)

#: The group of tasks that can never be placed (a number out of range, see
#: :func:`~.limits.task_problem`): skipped by every round, so one bad task stored by another
#: tool never stops the others; :meth:`Scheduler.take_invalid` hands them out to be failed.
INVALID_GROUP: Group = ("\x00invalid", "", -1, -1)


class Scheduler:
    """Chooses (task, pool) pairs from a TaskQueue by a policy, within every limit.

    ``policy`` is a :class:`SchedulingPolicy`, a registered policy name, a
    :class:`~.policies.Policy` subclass or instance.
    """

    def __init__(
        self,
        policy: SchedulingPolicy | str | Policy | type[Policy] | None = None,
        config: DispatcherConfig | None = None,
    ) -> None:
        self.config = config or DispatcherConfig()
        self.policy: Policy = make_policy(policy, self.config)
        self._index_name = f"scheduler-{id(self)}"
        self._warned: set[tuple[tuple[str, int, int], PendingReason]] = set()
        self._never_checked: set[tuple[str, int, int]] = set()
        self._explain_cache: dict[tuple[str, float, int], Pending] = {}
        self._explain_stamp: tuple[int, int] = (0, -1)
        self._millis: dict[float, int] = {}  # cores -> milli-cores (a queue has few sizes)
        self._watched: set[int] = set()  # pool managers that tell us of releases
        self._state_version = 0  # policy state (fair-share usage, rotation) changes
        self._order_cache: tuple[tuple[int, int, int], float | None, list[str]] | None = None
        self._lock = threading.Lock()
        self._invalid_logged: set[str] = set()
        self.saw_invalid = False  # a round met tasks that can never be scheduled

    @property
    def policy_name(self) -> str:
        return self.policy.name

    # --- the index -----------------------------------------------------------------------------
    def _group_of(self, task: Task) -> Group:
        if limits.task_problem(task) is not None:
            return INVALID_GROUP
        res = task.resources
        millis = self._millis.get(res.cpu)
        if millis is None:
            if len(self._millis) >= 4096:  # sizes of every kind: forget, do not grow
                self._millis.clear()
            millis = self._millis[res.cpu] = cpu_millis(res.cpu)
        return (self.policy.partition(task), task.required_skill, millis, res.memory_mb)

    def _sort_key(self, now: float) -> tuple[Callable[[Task], Any], bool]:
        """The index's key function, and whether it gives ints. The index never asks it about
        a task of INVALID_GROUP (``unkeyed``: their key is 0, they keep their arrival order)."""
        policy = self.policy
        int_key = policy.int_sort_key()
        if int_key is not None:
            return int_key, True

        def key(task: Task) -> Any:
            return policy.sort_key(task, now)

        return key, False

    def _build(self, queue: TaskQueue, now: float,
               items: Iterable[tuple[str, Task, int, int]]) -> ShapeIndex:
        key, ints = self._sort_key(now)
        return ShapeIndex.build(queue, self._group_of, key, items, int_keys=ints,
                                unkeyed=INVALID_GROUP)

    def _attached(self, queue: TaskQueue) -> ShapeIndex:
        def make(items: Iterable[tuple[str, Task, int, int]]) -> ShapeIndex:
            return self._build(queue, 0.0, items)

        return queue.attach_index(self._index_name, make)

    def _index(self, queue: TaskQueue, now: float) -> ShapeIndex:
        if self.policy.time_invariant:
            index = self._attached(queue)
        else:  # a key that depends on now: a one-off index for this round
            def make(items: Iterable[tuple[str, Task, int, int]]) -> ShapeIndex:
                return self._build(queue, now, items)

            name = f"{self._index_name}-once"
            index = queue.attach_index(name, make)
            queue.drop_index(name)
        index.promote(now)
        return index

    def take_invalid(self, task_queue: TaskQueue) -> list[tuple[Task, str]]:
        """Remove from ``task_queue`` the tasks that can never be scheduled, with the reason.

        A task is invalid when one of its numbers is out of range (:func:`~.limits.task_problem`
        — e.g. ``cpu: nan`` written by another tool). Scheduling rounds skip them in any case
        (each is logged once as an error); the engine calls this after a round and fails them
        with the reason, so each fails alone and visibly.
        """
        if not self.saw_invalid:
            return []
        with task_queue.lock:
            self.saw_invalid = False
            index = self._index(task_queue, time.time())
            found = [(t, limits.task_problem(t) or "invalid")
                     for t in index.live_tasks(INVALID_GROUP)]
            for task, why in found:
                task_queue.remove(task.key)
                self._report_invalid(task, why)
            return found

    def _report_invalid(self, task: Task, why: str) -> None:
        if task.key not in self._invalid_logged:
            self._invalid_logged.add(task.key)
            log.error("task %s cannot be scheduled: %s; it never runs as stored (fix it in its "
                      "taskset and submit it again); other tasks are not affected", task.key, why)

    # --- the round ------------------------------------------------------------------------------
    def schedule(
        self,
        task_queue: TaskQueue,
        agent_pool_manager: AgentPoolManager,
        *,
        now: float | None = None,
        limit: int | None = None,
        hold: Callable[[Task], bool] | None = None,
    ) -> list[tuple[Task, AgentPool]]:
        """Decide and reserve capacity for as many queued tasks as fit now (at most ``limit``).

        Returns ``(task, pool)`` pairs in decision order. Each chosen task has left the queue and
        holds capacity in its pool (``agent_pool_manager.acquire``); the caller releases it when
        the runner ends or its launch fails. Tasks whose ``next_attempt_at`` is in the future
        are not handed out. ``hold`` is asked about each task a pool could take, before its
        capacity is reserved: True means it must wait (it has left the queue and the caller
        keeps it; e.g. its paths overlap a running task's), and the round goes on without it.
        """
        now = time.time() if now is None else now
        pm = agent_pool_manager
        decisions: list[tuple[Task, AgentPool]] = []
        if limit is not None and limit <= 0:
            return decisions
        with task_queue.lock, self._lock:
            if id(pm) not in self._watched:
                pm.add_release_listener(self._released)
                self._watched.add(id(pm))
            if not len(task_queue) or not pm.any_capacity():
                return decisions
            index = self._index(task_queue, now)
            parts = self._open_heads(index, pm)
            picker = self.policy.picker(now)
            try:
                self._decide(index, parts, pm, picker, limit, hold, decisions)
            finally:
                picker.close()
            if decisions:
                self._state_version += 1
        if decisions:
            log.debug("scheduled %d task(s) with policy %s", len(decisions), self.policy.name)
        return decisions

    def _decide(
        self,
        index: ShapeIndex,
        parts: dict[Hashable, list[tuple[Entry, Group]]],
        pm: AgentPoolManager,
        picker: PartitionPicker,
        limit: int | None,
        hold: Callable[[Task], bool] | None,
        decisions: list[tuple[Task, AgentPool]],
    ) -> None:
        """The round's decisions, appended to ``decisions`` (the hot loop)."""
        policy = self.policy
        pick = picker.pick
        # the base class's on_assigned does nothing: not called per decision then
        assigned: Callable[[Task, AgentPool], None] | None = picker.assigned
        if (type(picker) is PartitionPicker
                and getattr(policy.on_assigned, "__func__", None) is Policy.on_assigned):
            assigned = None
        budget = pm.max_global_concurrency - pm.global_running
        if limit is not None:
            budget = min(budget, limit)
        select = pm.select_pool
        acquire = pm.acquire_shape
        take = index.take_head
        heappop = heapq.heappop
        heapreplace = heapq.heapreplace
        while parts and budget > 0:
            part = next(iter(parts)) if len(parts) == 1 else pick(parts)
            heap = parts[part]
            group = heap[0][1]
            pool = select(group[1], group[2], group[3])
            if pool is None:
                heappop(heap)
            else:
                task, key, nxt = take(group)
                if hold is not None and hold(task):
                    pass  # it waits outside the queue; the next head of its group may go
                else:
                    try:
                        acquire(pool, key, group[2], group[3])
                    except DispatcherStateError as exc:
                        # Queued while it still holds capacity: it runs already; drop it
                        # here rather than lose the decisions of this round.
                        log.error("task %s left the queue without a decision: %s",
                                  key, exc)
                    else:
                        if assigned is not None:
                            assigned(task, pool)
                        decisions.append((task, pool))
                        budget -= 1
                if nxt is None:
                    heappop(heap)
                else:
                    heapreplace(heap, (nxt, group))
            if not heap:
                del parts[part]

    def _open_heads(
        self, index: ShapeIndex, pm: AgentPoolManager
    ) -> dict[Hashable, list[tuple[Entry, Group]]]:
        parts: dict[Hashable, list[tuple[Entry, Group]]] = {}
        for group in list(index.groups):
            g: Group = group  # type: ignore[assignment]
            if g == INVALID_GROUP:
                self.saw_invalid = True  # take_invalid hands them out to be failed
                for bad in index.live_tasks(g):
                    self._report_invalid(bad, limits.task_problem(bad) or "invalid")
                continue
            if pm.select_pool(g[1], g[2], g[3]) is None:
                self._warn_if_never(index, g, pm)
                continue
            head = index.head(g)
            if head is None:
                continue
            parts.setdefault(g[0], []).append((head, g))
        for heap in parts.values():
            heapq.heapify(heap)
        return parts

    def _warn_if_never(self, index: ShapeIndex, group: Group, pm: AgentPoolManager) -> None:
        shape = (group[1], group[2], group[3])
        if shape in self._never_checked:
            return
        self._never_checked.add(shape)
        head = index.head(group)
        task = None if head is None else index.task_of(head)
        if task is None:
            return
        why = _pending.explain_placement(task, pm)
        if why.reason in _NEVER and (shape, why.reason) not in self._warned:
            self._warned.add((shape, why.reason))
            log.warning("task %s (and others like it) cannot be placed: %s", task.key, why)

    # --- views ---------------------------------------------------------------------------------
    def order(
        self,
        task_queue: TaskQueue,
        agent_pool_manager: AgentPoolManager | None = None,
        now: float | None = None,
    ) -> list[Task]:
        """Every queued task in the order this policy would dispatch it, capacity aside.

        Tasks still in retry backoff come last, earliest retry first. Nothing is changed (the
        policy's state is simulated on a copy).
        """
        with task_queue.lock:
            get = task_queue.get
            return [t for k in self.order_keys(task_queue, agent_pool_manager, now)
                    if (t := get(k)) is not None]

    def order_keys(
        self,
        task_queue: TaskQueue,
        agent_pool_manager: AgentPoolManager | None = None,
        now: float | None = None,
    ) -> list[str]:
        """The keys of :meth:`order` (what queue positions need: the first snapshot of a big
        queue then reads no task twice)."""
        now = time.time() if now is None else now
        with task_queue.lock, self._lock:
            policy = self.policy
            stamp = (id(task_queue), task_queue.version, self._state_version)
            cached = self._order_cache
            if policy.time_invariant and cached is not None and cached[0] == stamp:
                due = cached[1]
                if due is None or due > now:
                    return list(cached[2])
            index = self._index(task_queue, now)
            tasks = task_queue.keys()  # membership at C speed
            later = [k for k in index.delayed_keys() if k in tasks]
            per_part: dict[Hashable, list[Hashable]] = {}
            for group in index.groups:
                if group == INVALID_GROUP:  # never dispatched: last, in arrival order
                    later.extend(k for e in index.live_entries(group)
                                 if (k := index.key_of(e)) is not None and k in tasks)
                    continue
                part = group[0]  # type: ignore[index]
                per_part.setdefault(part, []).append(group)
            out: list[str] = []
            ordered = {p: index.ordered_keys(groups) for p, groups in per_part.items()}
            if len(ordered) <= 1:
                for chosen in ordered.values():
                    out.extend(chosen)
            else:
                sim = policy.clone()
                picker = sim.picker(now)
                cursors = {p: 0 for p in ordered}
                dummy = AgentPool(name="order")
                while cursors:
                    part = picker.pick(cursors)
                    i = cursors[part]
                    key = ordered[part][i]
                    out.append(key)
                    task = task_queue.get(key)
                    if task is not None:  # (a live entry's task is always queued)
                        picker.assigned(task, dummy)
                    if i + 1 < len(ordered[part]):
                        cursors[part] = i + 1
                    else:
                        del cursors[part]
                picker.close()
            out.extend(later)
            if policy.time_invariant:
                self._order_cache = (stamp, index.next_delayed_at(), out)
                return list(out)
            return out

    def explain(
        self,
        task: Task,
        agent_pool_manager: AgentPoolManager,
        now: float | None = None,
        *,
        paused: bool = False,
    ) -> Pending:
        """Why ``task`` (READY, still queued) is not running now; see :mod:`.pending`.

        Answers are cached per task shape (skill, CPU, memory) until the pools change, so
        explaining every task of a 10,000-task queue costs little.
        """
        now = time.time() if now is None else now
        if paused:
            return _pending.pending_paused()
        why = limits.task_problem(task)
        if why is not None:
            return Pending(PendingReason.INVALID_TASK, f"cannot be scheduled: {why} "
                           "(fix it in its taskset and submit it again)")
        if task.next_attempt_at is not None and task.next_attempt_at > now:
            return _pending.pending_retry(task)
        pm = agent_pool_manager
        stamp = (id(pm), pm.version)
        if self._explain_stamp != stamp:
            self._explain_cache.clear()
            self._explain_stamp = stamp
        res = task.resources
        asked = (task.required_skill, res.cpu, res.memory_mb)  # the cores as given: no rounding
        found = self._explain_cache.get(asked)  # per task (100,000 at a big queue's snapshot)
        if found is None:
            found = _pending.explain_placement(task, pm, now)
            self._explain_cache[asked] = found
            shape = (task.required_skill, cpu_millis(res.cpu), res.memory_mb)
            if found.reason in _WARN and (shape, found.reason) not in self._warned:
                self._warned.add((shape, found.reason))
                log.warning("task %s (and others like it) waits: %s", task.key, found)
        return found

    # --- fair share ----------------------------------------------------------------------------
    def _released(self, pool_name: str, task_key: str) -> None:
        if type(self.policy).on_released is not Policy.on_released:
            self.policy.on_released(task_key)
            self._state_version += 1

    def record_usage(self, tenant: str, runner_seconds: float, now: float | None = None) -> None:
        """A runner of ``tenant`` ended after ``runner_seconds`` (feeds fair-share usage)."""
        now = time.time() if now is None else now
        with self._lock:
            self.policy.record_usage(tenant, runner_seconds, now)
            self._state_version += 1

    def tenant_usage(self, tenant: str, now: float | None = None) -> float:
        """Decayed fair-share usage of ``tenant`` (0 for other policies)."""
        usage = getattr(self.policy, "usage", None)
        if usage is None:
            return 0.0
        return float(usage(tenant, time.time() if now is None else now))

    def next_wakeup(self, task_queue: TaskQueue) -> float | None:
        """Earliest ``next_attempt_at`` among queued tasks still in backoff, if any."""
        with task_queue.lock:
            if self.policy.time_invariant:
                return self._attached(task_queue).next_delayed_at()
            times = [t.next_attempt_at for t in task_queue.tasks() if t.next_attempt_at]
            return min(times) if times else None

    def __repr__(self) -> str:
        return f"Scheduler(policy={self.policy.name!r})"


_NEVER = frozenset(
    {
        PendingReason.NO_POOL_FOR_SKILL,
        PendingReason.EXCEEDS_QUOTA,
        PendingReason.POOL_DISABLED,
    }
)
_WARN = _NEVER | {PendingReason.CPU_QUOTA, PendingReason.MEMORY_QUOTA}
