"""TaskBook: the engine's view of tasks, and which views changed since the last snapshot.

The registry is the truth; the TaskBook holds the newest version of every task the engine has
seen (its own writes and other processes' changes, from the change feed), the count per state,
the order in which tasks finished, and the tasks finished per throughput interval.
:class:`ViewChanges` collects what the next snapshot must rebuild; every component that changes
something visible reports it there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import overload

from ..models import Task, TaskState

FINISHED_ORDER_KEEP = 2000  # keys of finished tasks remembered, newest first
THROUGHPUT_INTERVAL = 10.0  # seconds per throughput bucket
THROUGHPUT_BUCKETS = 60  # buckets kept (10 minutes)


class ViewChanges:
    """Task keys whose views the next snapshot rebuilds, and whether anything visible changed."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._dirty = True

    def touch(self, key: str) -> None:
        """The view of ``key`` changed (its task, runner, position or reason)."""
        self._keys.add(key)
        self._dirty = True

    def touch_all(self, keys: Iterable[str]) -> None:
        self._keys.update(keys)
        self._dirty = True

    def mark(self) -> None:
        """Something visible changed that is not one task's view (pools, state, counters)."""
        self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def take(self) -> set[str]:
        """The changed keys since the last call (and clears the dirty flag)."""
        keys, self._keys = self._keys, set()
        self._dirty = False
        return keys


@dataclass(frozen=True)
class TaskChange:
    """One task's move in the TaskBook: its previous version (None when new) and the new one."""

    old: Task | None
    new: Task

    @property
    def is_new(self) -> bool:
        return self.old is None

    @property
    def finished_now(self) -> bool:
        """It reached DONE, FAILED or CANCELLED with this change."""
        return self.new.state.terminal and (self.old is None or not self.old.state.terminal)

    @property
    def graph_changed(self) -> bool:
        """What the deadlock check reports on may have changed: a new task, new edges, or a
        task entering or leaving FAILED/CANCELLED."""
        old, new = self.old, self.new
        if old is None or old.dependencies != new.dependencies:
            return True
        return old.state is not new.state and (_failure(old.state) or _failure(new.state))


def _failure(state: TaskState) -> bool:
    return state in (TaskState.FAILED, TaskState.CANCELLED)


class Throughput:
    """Tasks finished per interval, the newest bucket last (a ring of ``buckets``)."""

    def __init__(self, started: float, interval: float = THROUGHPUT_INTERVAL,
                 buckets: int = THROUGHPUT_BUCKETS) -> None:
        self.interval = interval
        self._buckets: deque[int] = deque([0], maxlen=buckets)
        self._started = started

    def count(self) -> None:
        self._buckets[-1] += 1

    def next_roll(self) -> float:
        """When the current bucket closes."""
        return self._started + self.interval * min(len(self._buckets),
                                                   self._buckets.maxlen or 1)

    def roll(self, now: float) -> bool:
        """Open the buckets whose time has come; True when one was opened."""
        rolled = False
        maxlen = self._buckets.maxlen or 1
        while now >= self._started + self.interval * len(self._buckets):
            if len(self._buckets) == maxlen:
                self._started += self.interval
            self._buckets.append(0)
            rolled = True
        return rolled

    def values(self) -> tuple[int, ...]:
        return tuple(self._buckets)


class TaskBook:
    """Newest task per key, counts per state, finishing order (engine thread only)."""

    def __init__(self, views: ViewChanges, started: float) -> None:
        self._views = views
        self._tasks: dict[str, Task] = {}
        self._counts: dict[TaskState, int] = {}
        self._finished: deque[str] = deque(maxlen=FINISHED_ORDER_KEEP)
        self.throughput = Throughput(started)

    def apply(self, task: Task) -> TaskChange:
        """Record the newest version of ``task``."""
        old = self._tasks.get(task.key)
        if old is not None:
            self._counts[old.state] = self._counts.get(old.state, 1) - 1
        self._counts[task.state] = self._counts.get(task.state, 0) + 1
        self._tasks[task.key] = task
        self._views.touch(task.key)
        change = TaskChange(old, task)
        if change.finished_now:
            self._finished.appendleft(task.key)
            if old is not None:  # finished while this engine watched (not an old result)
                self.throughput.count()
        return change

    @overload
    def get(self, key: str) -> Task | None: ...

    @overload
    def get(self, key: str, default: Task) -> Task: ...

    def get(self, key: str, default: Task | None = None) -> Task | None:
        """The newest version of the task, else ``default``."""
        return self._tasks.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def as_mapping(self) -> Mapping[str, Task]:
        """A read-only view by key (for pending reasons that walk dependency chains)."""
        return MappingProxyType(self._tasks)

    def counts(self) -> dict[TaskState, int]:
        """Tasks per state (states never seen are missing)."""
        return dict(self._counts)

    def finished_keys(self) -> Iterable[str]:
        """Keys of finished tasks, newest first (a key may repeat after a retry)."""
        return self._finished

    def dependents_count(self, task: Task) -> int:
        """Tasks of the same taskset that depend on ``task`` directly."""
        return sum(1 for t in self._tasks.values()
                   if t.taskset == task.taskset and task.id in t.dependencies)
