"""Scheduling policies: small objects that decide the order in which placeable tasks go.

A policy answers three questions; the :class:`~.scheduler.Scheduler` does the rest (capacity,
pool choice, no head-of-line blocking):

``sort_key(task, now)``
    Order within one partition; smaller goes first. If the key ignores ``now``, set
    ``time_invariant = True`` and the Scheduler keeps an incremental index (O(log n) per
    decision); otherwise it re-sorts the queue once per round (O(n log n)).
``partition(task)``
    Tasks are split into partitions (default: a single one). Built-ins: skill-based uses the skill,
    fair-share the tenant.
``pick_partition(candidates, now)``
    Which partition places the next task, among those that have a placeable task now.

Hooks for policies with state: ``on_assigned(task, pool, now)`` after each decision,
``on_released(task_key)`` when the pool manager releases a task's capacity, and
``record_usage(tenant, runner_seconds, now)`` when the engine reports a finished runner.

A custom policy is a subclass registered by name::

    from necrocode.dispatcher.policies import Policy, register_policy

    class ShortestFirst(Policy):
        name = "shortest-first"
        time_invariant = True

        def sort_key(self, task, now):
            return (task.estimated_duration or 0.0, -task.priority)

    register_policy("shortest-first", ShortestFirst)
    Scheduler("shortest-first")          # or scheduling_policy: shortest-first in the YAML
"""

from __future__ import annotations

import copy
import math
import threading
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

from .config import DispatcherConfig
from .errors import DispatcherError
from .models import AgentPool, SchedulingPolicy, Task
from .task_queue import ready_time

__all__ = [
    "FairSharePolicy",
    "FifoPolicy",
    "Policy",
    "PriorityPolicy",
    "SkillBasedPolicy",
    "available_policies",
    "get_policy_class",
    "make_policy",
    "register_policy",
]


class Policy:
    """Base of every scheduling policy: priority then ready time, one partition.

    Subclass it and override :meth:`sort_key` (and optionally :meth:`partition`,
    :meth:`pick_partition`, :meth:`on_assigned`). ``self.config`` is the DispatcherConfig.
    """

    #: Registry name (informational; :func:`register_policy` decides the lookup name).
    name: ClassVar[str] = "custom"
    #: True when :meth:`sort_key` does not depend on ``now`` (enables the incremental index).
    time_invariant: ClassVar[bool] = False

    def __init__(self, config: DispatcherConfig | None = None) -> None:
        self.config = config or DispatcherConfig()

    def sort_key(self, task: Task, now: float) -> Any:
        """Order of tasks within a partition: smaller first."""
        return (-task.priority, ready_time(task))

    def partition(self, task: Task) -> Hashable:
        """The partition of ``task`` (must not change while the task is queued)."""
        return None

    def pick_partition(self, candidates: Sequence[Hashable], now: float) -> Hashable:
        """Which of ``candidates`` (partitions with a placeable task) goes next."""
        return candidates[0]

    def on_assigned(self, task: Task, pool: AgentPool, now: float) -> None:
        """Called after ``task`` was placed in ``pool``."""

    def on_released(self, task_key: str) -> None:
        """The capacity held by ``task_key`` was released (its runner ended)."""

    def record_usage(self, tenant: str, runner_seconds: float, now: float) -> None:
        """A runner of ``tenant`` ended after ``runner_seconds`` (fair-share bookkeeping)."""

    def clone(self) -> Policy:
        """An independent copy (used to simulate the dispatch order without side effects)."""
        return copy.deepcopy(self)

    def describe(self) -> str:
        return self.name

    def __deepcopy__(self, memo: dict[int, Any]) -> Policy:
        new = copy.copy(self)
        for attr, value in vars(self).items():
            if attr == "config" or isinstance(
                value, (type(threading.Lock()), type(threading.RLock()))
            ):
                continue
            setattr(new, attr, copy.deepcopy(value, memo))
        return new


class FifoPolicy(Policy):
    """First come, first served: by the time a task became ready (R7.4)."""

    name = "fifo"
    time_invariant = True

    def sort_key(self, task: Task, now: float) -> Any:
        return (ready_time(task),)


class PriorityPolicy(Policy):
    """Higher priority first, then earlier ready time (R7.1), with optional aging (R7.3).

    With ``priority_aging_seconds = A > 0`` the effective priority is
    ``priority + (now - ready_at) / A``. Every waiting task ages at the same rate, so ordering by
    ``priority - ready_at / A`` gives the same order at any ``now``: the key stays time-invariant
    and the incremental index remains valid.
    """

    name = "priority"
    time_invariant = True

    def __init__(self, config: DispatcherConfig | None = None) -> None:
        super().__init__(config)
        aging = float(self.config.priority_aging_seconds or 0.0)
        self.aging = aging if aging > 0 else 0.0

    def sort_key(self, task: Task, now: float) -> Any:
        ready = ready_time(task)
        if self.aging:
            return (-(task.priority - ready / self.aging), ready)
        return (-task.priority, ready)

    def effective_priority(self, task: Task, now: float) -> float:
        """Priority plus aging at ``now``."""
        if not self.aging:
            return float(task.priority)
        return task.priority + max(0.0, now - ready_time(task)) / self.aging


class SkillBasedPolicy(PriorityPolicy):
    """Priority order within each skill; skills take turns (round robin).

    A skill whose pools are full is simply not a candidate, so it never holds up another skill.
    """

    name = "skill-based"

    def __init__(self, config: DispatcherConfig | None = None) -> None:
        super().__init__(config)
        self._last: str | None = None

    def partition(self, task: Task) -> Hashable:
        return task.required_skill

    def pick_partition(self, candidates: Sequence[Hashable], now: float) -> Hashable:
        names = sorted(candidates, key=str)
        if self._last is not None:
            for name in names:
                if str(name) > self._last:
                    return name
        return names[0]

    def on_assigned(self, task: Task, pool: AgentPool, now: float) -> None:
        self._last = task.required_skill


class _Running:
    """One tenant's runners placed by this policy and not released yet.

    Each counts ``max(entry_charge, now - start)`` runner-seconds. Runners younger than the
    entry charge sit in ``young`` (assignment order, lazily cleaned); older ones are summed in
    ``old_n``/``old_starts``, so the total is O(1) to read at any ``now``.
    """

    __slots__ = ("young", "young_live", "old", "old_n", "old_starts")

    def __init__(self) -> None:
        self.young: deque[tuple[float, str]] = deque()
        self.young_live: dict[str, float] = {}
        self.old: dict[str, float] = {}
        self.old_n = 0
        self.old_starts = 0.0

    def add(self, key: str, start: float) -> None:
        self.young.append((start, key))
        self.young_live[key] = start

    def remove(self, key: str) -> bool:
        if self.young_live.pop(key, None) is not None:
            return True
        start = self.old.pop(key, None)
        if start is None:
            return False
        self.old_n -= 1
        self.old_starts -= start
        if not self.old_n:
            self.old_starts = 0.0  # no float drift once the tenant is idle
        return True

    def total(self, now: float, entry: float) -> float:
        young = self.young
        while young and now - young[0][0] >= entry:
            start, key = young.popleft()
            if self.young_live.pop(key, None) is not None:
                self.old[key] = start
                self.old_n += 1
                self.old_starts += start
        return self.old_n * now - self.old_starts + entry * len(self.young_live)


class FairSharePolicy(PriorityPolicy):
    """Tenants share capacity in proportion to their weights (R11.3).

    The tenant with the lowest ``usage / weight`` that has a placeable task goes next; within a
    tenant, priority then ready time. A tenant's usage, in runner-seconds, is

    - what its finished runners used (:meth:`record_usage`, called when a runner ends), decayed
      with a half-life of ``fair_share_half_life`` seconds; plus
    - for each of its runners still running, ``max(fair_share_entry_charge, seconds so far)``:
      the charge at assignment means a burst of new tasks cannot jump ahead within one round,
      and long runners count while they run, not only when they end.

    Runners are followed from assignment until the pool manager releases them (the Scheduler
    forwards releases to :meth:`on_released`). Decay is the same factor for every tenant, so
    finished usage is stored scaled to a reference time,
    ``stored = usage * 2 ** ((now - ref) / half_life)``, and rebased rarely.
    """

    name = "fair-share"

    _REBASE_AFTER = 64.0  # half-lives

    def __init__(self, config: DispatcherConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.weights = dict(cfg.fair_share_weights)
        self.default_weight = float(cfg.fair_share_default_weight) or 1.0
        self.half_life = float(cfg.fair_share_half_life)
        self.entry_charge = max(0.0, float(cfg.fair_share_entry_charge))
        self._scaled: dict[str, float] = {}
        self._ref: float | None = None
        self._running: dict[str, _Running] = {}
        self._tenant_of: dict[str, str] = {}  # running task key -> tenant
        self._lock = threading.RLock()

    def partition(self, task: Task) -> Hashable:
        return task.tenant

    def weight(self, tenant: str) -> float:
        w = self.weights.get(tenant, self.default_weight)
        return w if w > 0 else 1e-9

    def _factor(self, now: float) -> float:
        if self.half_life <= 0:
            return 1.0
        if self._ref is None:
            self._ref = now
        exponent = (now - self._ref) / self.half_life
        if exponent > self._REBASE_AFTER:
            scale = math.pow(2.0, -exponent)
            self._scaled = {t: u * scale for t, u in self._scaled.items()}
            self._ref = now
            exponent = 0.0
        return math.pow(2.0, exponent)

    def charge(self, tenant: str, runner_seconds: float, now: float) -> None:
        """Add ``runner_seconds`` of finished usage to ``tenant`` at ``now``."""
        with self._lock:
            self._scaled[tenant] = self._scaled.get(tenant, 0.0) + runner_seconds * self._factor(
                now
            )

    def running_usage(self, tenant: str, now: float) -> float:
        """Runner-seconds counted for ``tenant``'s runners still running at ``now``."""
        with self._lock:
            running = self._running.get(tenant)
            return 0.0 if running is None else running.total(now, self.entry_charge)

    def usage(self, tenant: str, now: float) -> float:
        """Usage of ``tenant`` at ``now``: decayed finished usage plus running usage."""
        with self._lock:
            done = self._scaled.get(tenant, 0.0) / self._factor(now)
            return done + self.running_usage(tenant, now)

    def pick_partition(self, candidates: Sequence[Hashable], now: float) -> Hashable:
        with self._lock:
            inv = 1.0 / self._factor(now)
            scaled = self._scaled
            running = self._running
            entry = self.entry_charge
            best = None
            best_v = 0.0
            for tenant in candidates:
                name = str(tenant)
                r = running.get(name)
                used = scaled.get(name, 0.0) * inv + (0.0 if r is None else r.total(now, entry))
                v = used / self.weight(name)
                if best is None or v < best_v or (v == best_v and name < str(best)):
                    best, best_v = tenant, v
            return best

    def on_assigned(self, task: Task, pool: AgentPool, now: float) -> None:
        with self._lock:
            key = task.key
            if key in self._tenant_of:
                self.on_released(key)
            running = self._running.get(task.tenant)
            if running is None:
                running = self._running[task.tenant] = _Running()
            running.add(key, now)
            self._tenant_of[key] = task.tenant

    def on_released(self, task_key: str) -> None:
        """The runner of ``task_key`` ended: stop counting it as running."""
        with self._lock:
            tenant = self._tenant_of.pop(task_key, None)
            if tenant is not None:
                running = self._running.get(tenant)
                if running is not None:
                    running.remove(task_key)

    def record_usage(self, tenant: str, runner_seconds: float, now: float) -> None:
        if runner_seconds > 0:
            self.charge(tenant, runner_seconds, now)


# --- registry ---------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Policy]] = {
    SchedulingPolicy.FIFO.value: FifoPolicy,
    SchedulingPolicy.PRIORITY.value: PriorityPolicy,
    SchedulingPolicy.SKILL_BASED.value: SkillBasedPolicy,
    SchedulingPolicy.FAIR_SHARE.value: FairSharePolicy,
}


def _name(name: SchedulingPolicy | str) -> str:
    return name.value if isinstance(name, SchedulingPolicy) else str(name)


def register_policy(name: SchedulingPolicy | str, cls: type[Policy]) -> type[Policy]:
    """Make ``cls`` available as ``name`` (replacing a previous registration); returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"policy {name!r}: {cls!r} is not a subclass of dispatcher.policies.Policy")
    _REGISTRY[_name(name)] = cls
    return cls


def get_policy_class(name: SchedulingPolicy | str) -> type[Policy]:
    """The class registered as ``name``; DispatcherError naming the known ones otherwise."""
    key = _name(name)
    cls = _REGISTRY.get(key)
    if cls is None:
        raise DispatcherError(
            f"unknown scheduling policy {key!r}; known: {', '.join(available_policies())} "
            "(register custom ones with dispatcher.policies.register_policy)"
        )
    return cls


def available_policies() -> list[str]:
    """Registered policy names."""
    return sorted(_REGISTRY)


def make_policy(
    policy: SchedulingPolicy | str | Policy | type[Policy] | None,
    config: DispatcherConfig | None = None,
) -> Policy:
    """A policy object from a name, a class or an instance (None: the config's policy)."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, type) and issubclass(policy, Policy):
        return policy(config)
    if policy is None:
        policy = (config or DispatcherConfig()).scheduling_policy
    return get_policy_class(policy)(config)
