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

import bisect
from collections.abc import Collection, Hashable, Sequence

from .config import DispatcherConfig
from .errors import DispatcherError
from .fair_share import FairSharePolicy
from .models import AgentPool, SchedulingPolicy, Task
from .policy_base import FifoPolicy, PartitionPicker, Policy, PriorityPolicy, float_code

__all__ = [
    "FairSharePolicy",
    "FifoPolicy",
    "PartitionPicker",
    "Policy",
    "PriorityPolicy",
    "SkillBasedPolicy",
    "available_policies",
    "float_code",
    "get_policy_class",
    "make_policy",
    "register_policy",
]


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

    def picker(self, now: float) -> PartitionPicker:
        cls = type(self)
        if (cls.pick_partition is not SkillBasedPolicy.pick_partition
                or cls.on_assigned is not SkillBasedPolicy.on_assigned):
            return PartitionPicker(self, now)
        return _RoundRobin(self, now)


class _RoundRobin(PartitionPicker):
    """Skill-based turns with the candidates sorted once per change of the candidate set."""

    def __init__(self, policy: SkillBasedPolicy, now: float) -> None:
        super().__init__(policy, now)
        self.skills = policy
        self._n = -1
        self._names: list[Hashable] = []
        self._strs: list[str] = []

    def pick(self, candidates: Collection[Hashable]) -> Hashable:
        if len(candidates) != self._n:  # they only shrink: a new size is a new set
            self._names = sorted(candidates, key=str)
            self._strs = [str(n) for n in self._names]
            self._n = len(candidates)
        last = self.skills._last
        if last is not None:
            i = bisect.bisect_right(self._strs, last)
            if i < len(self._names):
                return self._names[i]
        return self._names[0]

    def assigned(self, task: Task, pool: AgentPool) -> None:
        self.skills._last = task.required_skill

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
