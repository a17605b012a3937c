"""The base of scheduling policies (see :mod:`.policies`): :class:`Policy`, the order-only
built-ins (:class:`FifoPolicy`, :class:`PriorityPolicy`), :class:`PartitionPicker` and
:func:`float_code` for int sort keys."""

from __future__ import annotations

import copy
import struct
import threading
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, ClassVar

from .config import DispatcherConfig
from .models import AgentPool, Task
from .task_queue import ready_time

__all__ = ["FifoPolicy", "PartitionPicker", "Policy", "PriorityPolicy", "float_code"]


_PACK = struct.Struct("<d").pack
_UNPACK = struct.Struct("<q").unpack


def float_code(x: float) -> int:
    """An int in ``[0, 2**64)`` that orders like the float ``x`` (-0.0 as 0.0)."""
    bits: int = _UNPACK(_PACK(float(x) + 0.0))[0]
    if bits < 0:
        bits ^= 0x7FFF_FFFF_FFFF_FFFF
    return bits + (1 << 63)


class PartitionPicker:
    """Picks partitions during one round (or one simulated dispatch order) at a fixed ``now``.

    Between two calls of :meth:`pick` the candidates only shrink (a partition that has nothing
    placeable left drops out); :meth:`assigned` follows each decision and :meth:`close` the
    end of the round (the policy's state is complete after it). This one asks the
    policy's :meth:`Policy.pick_partition` and :meth:`Policy.on_assigned` every time; the
    built-in policies give faster ones that keep what they computed for the round.
    """

    def __init__(self, policy: Policy, now: float) -> None:
        self.policy = policy
        self.now = now

    def pick(self, candidates: Collection[Hashable]) -> Hashable:
        """Which of ``candidates`` places the next task."""
        return self.policy.pick_partition(list(candidates), self.now)

    def assigned(self, task: Task, pool: AgentPool) -> None:
        """``task`` was placed in ``pool``."""
        self.policy.on_assigned(task, pool, self.now)

    def close(self) -> None:
        """The round is over (called once, also when it ended by an error)."""


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

    def int_sort_key(self) -> Callable[[Task], int] | None:
        """A function giving an int that orders like :meth:`sort_key` (for a time-invariant
        key), or None. With one the Scheduler's heaps hold plain ints (cheaper decisions)."""
        return None

    def picker(self, now: float) -> PartitionPicker:
        """The partition picker for one round at ``now``."""
        return PartitionPicker(self, now)

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

    def int_sort_key(self) -> Callable[[Task], int] | None:
        if type(self).sort_key is not FifoPolicy.sort_key:
            return None  # a subclass orders otherwise

        def key(task: Task) -> int:
            return float_code(ready_time(task))

        return key


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

    def int_sort_key(self) -> Callable[[Task], int] | None:
        if type(self).sort_key is not PriorityPolicy.sort_key:
            return None  # a subclass orders otherwise
        aging = self.aging

        def aged(task: Task) -> int:
            ready = ready_time(task)
            return (float_code(-(task.priority - ready / aging)) << 64) + float_code(ready)

        def key(task: Task) -> int:
            return (-int(task.priority) << 64) + float_code(ready_time(task))

        return aged if aging else key

    def effective_priority(self, task: Task, now: float) -> float:
        """Priority plus aging at ``now``."""
        if not self.aging:
            return float(task.priority)
        return task.priority + max(0.0, now - ready_time(task)) / self.aging
