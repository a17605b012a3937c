"""The fair-share policy: tenants share capacity in proportion to their weights (R11.3)."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Collection, Hashable, Sequence

from .config import DispatcherConfig
from .models import AgentPool, Task
from .policy_base import PartitionPicker, PriorityPolicy

__all__ = ["FairSharePolicy"]


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

    def picker(self, now: float) -> PartitionPicker:
        cls = type(self)
        if (self.entry_charge <= 0 or cls.pick_partition is not FairSharePolicy.pick_partition
                or cls.on_assigned is not FairSharePolicy.on_assigned
                or cls.weight is not FairSharePolicy.weight):
            return PartitionPicker(self, now)
        return _LeastShare(self, now)

    def on_assigned(self, task: Task, pool: AgentPool, now: float) -> None:
        self.assigned_all([task], now)

    def assigned_all(self, tasks: list[Task], now: float) -> None:
        """:meth:`on_assigned` for each of ``tasks``, all placed at ``now``, under one lock."""
        with self._lock:
            running_of = self._running
            tenant_of = self._tenant_of
            for task in tasks:
                key = task.key
                tenant = task.tenant
                if key in tenant_of:
                    self.on_released(key)
                running = running_of.get(tenant)
                if running is None:
                    running = running_of[tenant] = _Running()
                running.young.append((now, key))  # _Running.add, inline (once per decision)
                running.young_live[key] = now
                tenant_of[key] = tenant

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


class _LeastShare(PartitionPicker):
    """Fair-share turns for one round: each tenant's share computed once, then kept up to date.

    At a fixed ``now`` (and an entry charge above 0) a decision only adds one young runner to
    its tenant, so the tenant's share is recomputed from the parts :meth:`FairSharePolicy.
    pick_partition` sums, in the same order: the same floats, the same choice. The policy's
    own bookkeeping of the round's runners is done once, in :meth:`close`.
    """

    def __init__(self, policy: FairSharePolicy, now: float) -> None:
        super().__init__(policy, now)
        self.fair = policy
        self._parts: dict[str, tuple[float, float, float]] = {}  # tenant -> done, old, weight
        self._young: dict[str, int] = {}
        self._rank: dict[Hashable, tuple[float, str]] = {}
        self._placed: list[Task] = []

    def _rank_of(self, tenant: Hashable) -> tuple[float, str]:
        fair = self.fair
        now = self.now
        name = str(tenant)
        with fair._lock:
            done = fair._scaled.get(name, 0.0) * (1.0 / fair._factor(now))
            r = fair._running.get(name)
            if r is None:
                parts = (done, 0.0, fair.weight(name))
                young = -1
            else:
                r.total(now, fair.entry_charge)  # moves runners past the entry charge along
                parts = (done, r.old_n * now - r.old_starts, fair.weight(name))
                young = len(r.young_live)
        self._parts[name] = parts
        self._young[name] = young
        return self._rank_for(name)

    def _rank_for(self, name: str) -> tuple[float, str]:
        done, old, weight = self._parts[name]
        young = self._young[name]
        used = done + (0.0 if young < 0 else old + self.fair.entry_charge * young)
        return (used / weight, name)

    def pick(self, candidates: Collection[Hashable]) -> Hashable:
        rank = self._rank
        if not rank:  # the first call: the candidates only shrink from here
            for tenant in candidates:
                rank[tenant] = self._rank_of(tenant)
        return min(candidates, key=rank.__getitem__)

    def assigned(self, task: Task, pool: AgentPool) -> None:
        self._placed.append(task)
        name = task.tenant
        young = self._young.get(name)
        if young is not None:
            if young < 0:  # its first runner: the running part appears
                self._parts[name] = (self._parts[name][0], 0.0, self._parts[name][2])
                young = 0
            young += 1
            self._young[name] = young
            if name in self._rank:  # _rank_for(name), inline (once per decision)
                done, old, weight = self._parts[name]
                self._rank[name] = ((done + (old + self.fair.entry_charge * young)) / weight,
                                    name)

    def close(self) -> None:
        placed, self._placed = self._placed, []
        if placed:
            self.fair.assigned_all(placed, self.now)
