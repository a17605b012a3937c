"""The TaskQueue: READY tasks waiting for a runner, keyed by ``task.key``.

An indexed heap: enqueue and dequeue are O(log n); ``contains``, ``get`` and ``remove`` are O(1)
(lazy deletion: every heap entry carries the generation number the task had when it was pushed,
and entries whose generation is no longer current are skipped when they reach the top);
``update_priority`` pushes one new entry instead of rebuilding anything. Stale entries are
compacted away once they outnumber live ones, so memory stays proportional to the queue.

Besides the seed's own order (priority, then ready time), the Scheduler attaches
:class:`QueueIndex` views: the same tasks split into groups (per skill, resources, tenant …) with
one heap per group, kept up to date on every change. A scheduling round then only looks at group
heads. Everything is guarded by one re-entrant lock (:attr:`TaskQueue.lock`).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, KeysView
from typing import Any, Protocol, TypeVar

from .models import Task

__all__ = ["MaintainedIndex", "QueueIndex", "TaskQueue", "default_sort_key", "ready_time"]

_COMPACT_MIN = 64

#: A heap entry: (*sort key, arrival order, generation, task key), flat so that comparisons stay
#: cheap. The arrival order is unique, so comparisons never reach the generation or the key.
Entry = tuple[Any, ...]


class MaintainedIndex(Protocol):
    """What the queue tells an index it maintains (under the queue's lock): see
    :meth:`TaskQueue.attach_index`. ``order`` is the task's arrival number (kept when the task is
    replaced), ``gen`` grows with every enqueue."""

    def add(self, task: Task, order: int, gen: int) -> None: ...

    def discard(self, key: str) -> None: ...

    def cleared(self) -> MaintainedIndex: ...


_I = TypeVar("_I", bound=MaintainedIndex)


def _flat(key: Any) -> tuple[Any, ...]:
    return key if type(key) is tuple else (key,)


def ready_time(task: Task) -> float:
    """When the task became ready (``ready_at``), else when it was created."""
    return task.ready_at if task.ready_at is not None else task.created_at


def default_sort_key(task: Task) -> tuple[float, float]:
    """The seed order: higher priority first, then earlier ready time."""
    return (-task.priority, ready_time(task))


class QueueIndex:
    """The queue's tasks split into groups, one heap per group, in ``key_fn`` order.

    With ``delay_aware`` tasks that carry a ``next_attempt_at`` first wait in a heap of their own
    and join their group once :meth:`promote` is called with a time at or after it. All methods
    must be called with the queue's lock held (the queue does so itself).
    """

    def __init__(
        self,
        queue: TaskQueue,
        group_fn: Callable[[Task], Hashable],
        key_fn: Callable[[Task], Any],
        *,
        delay_aware: bool = True,
    ) -> None:
        self._queue = queue
        self.group_fn = group_fn
        self.key_fn = key_fn
        self.delay_aware = delay_aware
        self.groups: dict[Hashable, list[Entry]] = {}
        self._live: dict[Hashable, int] = {}
        self._stale: dict[Hashable, int] = {}
        self._member: dict[str, Hashable] = {}  # key -> group (or _DELAYED)
        # one object per group: the members share it instead of each keeping the equal tuple
        # its group_fn made (100,000 queued tasks of a few shapes: ~10 MB)
        self._canon: dict[Hashable, Hashable] = {}
        self._delayed: list[tuple[float, int, int, str]] = []
        self._delayed_stale = 0

    # --- maintenance (called by the queue) ----------------------------------------------------
    def add(self, task: Task, order: int, gen: int) -> None:
        key = task.key
        if self.delay_aware and task.next_attempt_at is not None:
            self._member[key] = _DELAYED
            heapq.heappush(self._delayed, (task.next_attempt_at, order, gen, key))
            return
        self._push(task, order, gen)

    def _push(self, task: Task, order: int, gen: int) -> None:
        group = self.group_fn(task)
        group = self._canon.setdefault(group, group)
        key = task.key
        self._member[key] = group
        heap = self.groups.get(group)
        if heap is None:
            heap = self.groups[group] = []
            self._live[group] = 0
            self._stale[group] = 0
        heapq.heappush(heap, (*_flat(self.key_fn(task)), order, gen, key))
        self._live[group] += 1

    def discard(self, key: str) -> None:
        group = self._member.pop(key, _MISSING)
        if group is _MISSING:
            return
        if group is _DELAYED:
            self._delayed_stale += 1
            if self._delayed_stale > _COMPACT_MIN and self._delayed_stale > len(self._delayed) // 2:
                self._delayed = [e for e in self._delayed if self._valid(e[-2], e[-1])]
                heapq.heapify(self._delayed)
                self._delayed_stale = 0
            return
        self._live[group] -= 1
        self._stale[group] += 1
        if self._live[group] == 0:
            del self.groups[group], self._live[group], self._stale[group], self._canon[group]
        elif self._stale[group] > _COMPACT_MIN and self._stale[group] > self._live[group]:
            heap = [e for e in self.groups[group] if self._valid(e[-2], e[-1])]
            heapq.heapify(heap)
            self.groups[group] = heap
            self._stale[group] = 0

    def _valid(self, gen: int, key: str) -> bool:
        return self._queue._gen.get(key) == gen

    def cleared(self) -> QueueIndex:
        """An empty index with the same functions (the queue was cleared)."""
        return QueueIndex(self._queue, self.group_fn, self.key_fn, delay_aware=self.delay_aware)

    # --- reading ------------------------------------------------------------------------------
    def promote(self, now: float) -> int:
        """Move tasks whose ``next_attempt_at`` has come into their groups; returns how many."""
        moved = 0
        delayed = self._delayed
        tasks = self._queue._tasks
        while delayed and delayed[0][0] <= now:
            _, order, gen, key = heapq.heappop(delayed)
            if not self._valid(gen, key):
                self._delayed_stale -= 1
                continue
            self._push(tasks[key], order, gen)
            moved += 1
        return moved

    def next_delayed_at(self) -> float | None:
        """The earliest ``next_attempt_at`` still waiting, if any."""
        while self._delayed and not self._valid(self._delayed[0][-2], self._delayed[0][-1]):
            heapq.heappop(self._delayed)
            self._delayed_stale -= 1
        return self._delayed[0][0] if self._delayed else None

    def head(self, group: Hashable) -> Entry | None:
        """The first live entry of ``group`` (None when the group is empty)."""
        heap = self.groups.get(group)
        if not heap:
            return None
        gen_of = self._queue._gen
        while heap:
            entry = heap[0]
            if gen_of.get(entry[-1]) == entry[-2]:
                return entry
            heapq.heappop(heap)
            self._stale[group] -= 1
        return None

    def take_head(self, group: Hashable) -> Task:
        """Remove the head of ``group`` from the whole queue and return its task."""
        entry = self.head(group)
        if entry is None:
            raise KeyError(f"group {group!r} is empty")
        heapq.heappop(self.groups[group])
        key = entry[-1]
        # Forget it here first so that the queue's removal does not count a stale entry.
        del self._member[key]
        self._live[group] -= 1
        if self._live[group] == 0:
            del self.groups[group], self._live[group], self._stale[group], self._canon[group]
        return self._queue._pop_locked(key)

    def task_of(self, entry: Entry) -> Task | None:
        """The task an entry stands for (None: no longer queued)."""
        return self._queue.get(entry[-1])

    def live_tasks(self, group: Hashable) -> list[Task]:
        """The queued tasks of ``group``, unordered."""
        return [t for e in self.live_entries(group) if (t := self.task_of(e)) is not None]

    def live_entries(self, group: Hashable) -> list[Entry]:
        """The live entries of ``group``, unordered."""
        gen_of = self._queue._gen
        return [e for e in self.groups.get(group, ()) if gen_of.get(e[-1]) == e[-2]]

    def delayed_keys(self) -> list[str]:
        """Keys of tasks still waiting for their ``next_attempt_at``, earliest first."""
        return [e[-1] for e in sorted(self._delayed) if self._valid(e[-2], e[-1])]

    def group_sizes(self) -> dict[Hashable, int]:
        """Live tasks per group."""
        return dict(self._live)


_DELAYED: Hashable = object()
_MISSING: Hashable = object()


class TaskQueue:
    """READY tasks waiting to be scheduled, keyed by ``task.key``; thread-safe.

    ``enqueue`` of a key already queued replaces that task (its place in FIFO ties is kept).
    ``dequeue``/``peek`` follow the seed order: higher priority first, then earlier ready time,
    then arrival. The Scheduler does not use them: it reads per-group indexes instead.
    """

    _MAIN = "__main__"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tasks: dict[str, Task] = {}
        self._gen: dict[str, int] = {}  # key -> generation of its live entries
        # key -> arrival number, only where it differs from the generation (re-enqueued keys):
        # a first entry's generation is its arrival number (one map of 100,000 keys less)
        self._order: dict[str, int] = {}
        self._counter = itertools.count(1)
        self._indexes: dict[str, MaintainedIndex] = {}
        self._version = 0

    @property
    def version(self) -> int:
        """Grows with every change of the queue's contents (for caching derived views)."""
        return self._version

    @property
    def lock(self) -> threading.RLock:
        """The queue's lock; hold it to make several operations one atomic step."""
        return self._lock

    # --- the seed's API -----------------------------------------------------------------------
    def enqueue(self, task: Task) -> None:
        """Add ``task`` (or replace the queued task with the same key)."""
        with self._lock:
            key = task.key
            old = self._gen.get(key)
            if old is None:
                gen = order = next(self._counter)
            else:
                order = self._order.get(key, old)
                for index in self._indexes.values():
                    index.discard(key)
                gen = next(self._counter)
                self._order[key] = order
            self._version += 1
            self._tasks[key] = task
            self._gen[key] = gen
            for index in self._indexes.values():
                index.add(task, order, gen)

    def dequeue(self) -> Task | None:
        """Remove and return the first task in the seed order, or None when empty."""
        with self._lock:
            index = self._main()
            entry = index.head(None)
            return None if entry is None else index.take_head(None)

    def peek(self) -> Task | None:
        """The task :meth:`dequeue` would return, without removing it."""
        with self._lock:
            entry = self._main().head(None)
            return None if entry is None else self._tasks[entry[-1]]

    def size(self) -> int:
        """Number of queued tasks."""
        return len(self._tasks)

    def clear(self) -> None:
        """Remove every task."""
        with self._lock:
            self._version += 1
            self._tasks.clear()
            self._gen.clear()
            self._order.clear()
            for name, index in list(self._indexes.items()):
                self._indexes[name] = index.cleared()

    # --- keyed access -------------------------------------------------------------------------
    def remove(self, key: str) -> bool:
        """Remove the task with ``key``; False when it was not queued. O(1)."""
        with self._lock:
            if key not in self._tasks:
                return False
            self._pop_locked(key)
            return True

    def pop(self, key: str) -> Task | None:
        """Remove and return the task with ``key`` (None when it was not queued). O(1)."""
        with self._lock:
            if key not in self._tasks:
                return None
            return self._pop_locked(key)

    def take_for(self, key: str, index: MaintainedIndex) -> Task | None:
        """:meth:`pop` on behalf of the attached ``index``, which has dropped ``key`` itself
        (it handed the task out): the other indexes are told, ``index`` is not. The caller
        holds the queue's lock (the scheduler's decision loop: one call per decision)."""
        task = self._tasks.pop(key, None)
        if task is None:
            return None
        self._version += 1
        del self._gen[key]
        if self._order:
            self._order.pop(key, None)
        for other in self._indexes.values():
            if other is not index:
                other.discard(key)
        return task

    def get(self, key: str) -> Task | None:
        """The queued task with ``key``, or None."""
        return self._tasks.get(key)

    def update_priority(self, key: str, priority: int) -> bool:
        """Set the priority of a queued task (in place) and reorder it; False if not queued."""
        with self._lock:
            task = self._tasks.get(key)
            if task is None:
                return False
            task.priority = priority
            self.enqueue(task)
            return True

    def tasks(self) -> list[Task]:
        """The queued tasks, unordered."""
        with self._lock:
            return list(self._tasks.values())

    def keys(self) -> KeysView[str]:
        """The keys of the queued tasks: a live view (membership tests at C speed, for the
        thread that owns the queue)."""
        return self._tasks.keys()

    def __contains__(self, key: object) -> bool:
        if type(key) is str:  # the usual question (a snapshot asks it of every queued task)
            return key in self._tasks
        if isinstance(key, Task):
            key = key.key
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks())

    def __repr__(self) -> str:
        return f"TaskQueue(size={len(self._tasks)})"

    # --- indexes ------------------------------------------------------------------------------
    def index(
        self,
        name: str,
        group_fn: Callable[[Task], Hashable],
        key_fn: Callable[[Task], Any],
        *,
        delay_aware: bool = True,
    ) -> QueueIndex:
        """The index called ``name``, built on first use (O(n)) and maintained from then on.

        ``group_fn`` and ``key_fn`` must depend only on fields that do not change while the task
        is queued (re-``enqueue`` a task after changing them); ``key_fn`` orders ascending.
        """
        with self._lock:
            idx = self._indexes.get(name)
            if idx is None:
                idx = self.build_index(group_fn, key_fn, delay_aware=delay_aware)
                self._indexes[name] = idx
            assert isinstance(idx, QueueIndex), f"index {name!r} is not a QueueIndex"
            return idx

    def attach_index(self, name: str,
                     make: Callable[[Iterable[tuple[str, Task, int, int]]], _I]) -> _I:
        """The index attached as ``name``. On first use ``make`` builds it from the queued
        ``(key, task, order, gen)`` (O(n), an iterator read once: no list of 100,000 tuples);
        from then on the queue keeps it up to date (``add``/``discard`` on every
        change, ``cleared`` on :meth:`clear`). ``make`` must give the same kind of index for a
        name every time."""
        with self._lock:
            idx = self._indexes.get(name)
            if idx is None:
                made = make(self._triples())
                self._indexes[name] = made
                return made
            return idx  # type: ignore[return-value]

    def _triples(self) -> Iterator[tuple[str, Task, int, int]]:
        """``(key, task, order, gen)`` of every queued task, in arrival of their keys."""
        order, gens = self._order, self._gen
        if not order:  # no key was re-enqueued: every arrival number is the generation
            for (key, task), gen in zip(self._tasks.items(), gens.values(), strict=True):
                yield key, task, gen, gen
            return
        for key, task in self._tasks.items():
            gen = gens[key]
            yield key, task, order.get(key, gen), gen

    def build_index(
        self,
        group_fn: Callable[[Task], Hashable],
        key_fn: Callable[[Task], Any],
        *,
        delay_aware: bool = True,
    ) -> QueueIndex:
        """A one-off index of the current tasks, not maintained (for keys that depend on time)."""
        with self._lock:
            idx = QueueIndex(self, group_fn, key_fn, delay_aware=delay_aware)
            groups: dict[Hashable, list[Entry]] = {}
            canon = idx._canon.setdefault
            for key, task in self._tasks.items():
                gen = self._gen[key]
                order = self._order.get(key, gen)
                if delay_aware and task.next_attempt_at is not None:
                    idx._member[key] = _DELAYED
                    idx._delayed.append((task.next_attempt_at, order, gen, key))
                    continue
                group = group_fn(task)
                group = canon(group, group)
                idx._member[key] = group
                groups.setdefault(group, []).append((*_flat(key_fn(task)), order, gen, key))
            for group, heap in groups.items():
                heapq.heapify(heap)
                idx.groups[group] = heap
                idx._live[group] = len(heap)
                idx._stale[group] = 0
            heapq.heapify(idx._delayed)
            return idx

    def drop_index(self, name: str) -> None:
        """Stop maintaining the index called ``name``."""
        with self._lock:
            self._indexes.pop(name, None)

    def _main(self) -> QueueIndex:
        return self.index(self._MAIN, _no_group, default_sort_key, delay_aware=False)

    def _pop_locked(self, key: str) -> Task:
        task = self._tasks.pop(key)
        self._version += 1
        del self._gen[key]
        self._order.pop(key, None)
        for index in self._indexes.values():
            index.discard(key)
        return task


def _no_group(task: Task) -> None:
    return None
