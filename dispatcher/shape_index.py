"""The Scheduler's index of queued tasks: groups of interchangeable tasks, one heap per group.

Tasks of one group (partition, skill, milli-cores, MB) are interchangeable as far as placement
goes, so a scheduling round only looks at group heads. The queue keeps the index up to date
(:meth:`~.task_queue.TaskQueue.attach_index`).

Heap entries are short so that a decision costs little more than a bare ``heapq`` pop:

- with a policy that has an int sort key (every built-in one, see
  :meth:`~.policies.Policy.int_sort_key`), an entry is one int,
  ``(((sort_key << 64) + order) << 96) + (gen << 32) + gid``: it orders by the policy's key,
  then by arrival (``order``, kept when a task is replaced), and carries the task's enqueue
  generation ``gen`` (unique) and its group's number ``gid``;
- otherwise an entry is ``(*sort_key, order, (gen << 32) + gid)``.

Deletion is lazy: an entry (its last item for tuples) is unique, since it holds ``gen``, and
``_key_at`` names the current entry of each task; an entry no longer named there is skipped
when it reaches the top, and a group's heap is compacted once its stale entries outnumber its
live ones. Tasks with a future ``next_attempt_at`` wait in a heap of their own until
:meth:`ShapeIndex.promote` is called at or after that time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from .models import Task
from .task_queue import TaskQueue

__all__ = ["Entry", "ShapeIndex"]

#: One heap entry: an int (int sort keys) or a tuple whose last item is ``(gen << 32) + gid``.
Entry = Any

_M32 = (1 << 32) - 1
_COMPACT_MIN = 64


def _flat(key: Any) -> tuple[Any, ...]:
    return key if type(key) is tuple else (key,)


class ShapeIndex:
    """The queued tasks split into groups, one heap per group, in the policy's order.

    ``key_fn`` gives an int when ``int_keys`` (any sortable value otherwise). All methods must
    be called with the queue's lock held.
    """

    def __init__(
        self,
        queue: TaskQueue,
        group_fn: Callable[[Task], Hashable],
        key_fn: Callable[[Task], Any],
        *,
        int_keys: bool,
        unkeyed: Hashable = None,
    ) -> None:
        self._queue = queue
        self.group_fn = group_fn
        self.key_fn = key_fn
        self.int_keys = int_keys
        self.unkeyed = unkeyed
        self.groups: dict[Hashable, list[Entry]] = {}
        self._live: dict[Hashable, int] = {}
        self._stale: dict[Hashable, int] = {}
        self._gid: dict[Hashable, int] = {}
        self._by_gid: list[Hashable] = []
        self._key_at: dict[int, str] = {}  # ident -> key, for the entry that is current
        self._entry_of: dict[str, Entry] = {}  # key -> its current entry
        self._delayed: list[tuple[float, int, str]] = []  # (next_attempt_at, gen, key)
        self._delayed_of: dict[str, tuple[int, int]] = {}  # key -> (gen, order)
        self._delayed_stale = 0

    @classmethod
    def build(
        cls,
        queue: TaskQueue,
        group_fn: Callable[[Task], Hashable],
        key_fn: Callable[[Task], Any],
        items: Iterable[tuple[str, Task, int, int]],
        *,
        int_keys: bool,
        unkeyed: Hashable = None,
    ) -> ShapeIndex:
        """An index of ``items`` (``(key, task, order, gen)``), heapified once: O(n).

        Tasks whose group is ``unkeyed`` (when not None: e.g. tasks that can never be placed)
        are not given to ``key_fn``: their sort key is 0 (``(0,)`` for tuple keys), so they
        keep their arrival order among themselves."""
        idx = cls(queue, group_fn, key_fn, int_keys=int_keys, unkeyed=unkeyed)
        idx._load(items)
        return idx

    def _load(self, items: Iterable[tuple[str, Task, int, int]]) -> None:
        """What :meth:`_place` does for each item of a new index, in one loop (the first
        snapshot of a 100,000-task queue builds it), then each heap heapified once."""
        group_fn, key_fn, ints, unkeyed = self.group_fn, self.key_fn, self.int_keys, self.unkeyed
        groups, gid_of, by_gid = self.groups, self._gid, self._by_gid
        key_at, entry_of = self._key_at, self._entry_of
        delayed, delayed_of = self._delayed, self._delayed_of
        for key, task, order, gen in items:
            if task.next_attempt_at is not None:
                delayed_of[key] = (gen, order)
                delayed.append((task.next_attempt_at, gen, key))
                continue
            group = group_fn(task)
            gid = gid_of.get(group)
            if gid is None:  # a new index: a new group is a new heap too
                gid = gid_of[group] = len(by_gid)
                by_gid.append(group)
                groups[group] = []
            if ints:
                code = 0 if unkeyed is not None and group == unkeyed else key_fn(task)
                e: Entry = (((code << 64) + order) << 96) + (gen << 32) + gid
                key_at[e] = key
            else:
                flat = (0,) if unkeyed is not None and group == unkeyed else _flat(key_fn(task))
                e = (*flat, order, (gen << 32) + gid)
                key_at[e[-1]] = key
            groups[group].append(e)
            entry_of[key] = e
        for group, heap in groups.items():
            heapq.heapify(heap)
            self._live[group] = len(heap)
            self._stale[group] = 0
        heapq.heapify(delayed)

    def cleared(self) -> ShapeIndex:
        """An empty index with the same functions (the queue was cleared)."""
        return ShapeIndex(self._queue, self.group_fn, self.key_fn, int_keys=self.int_keys,
                          unkeyed=self.unkeyed)

    # --- maintenance (called by the queue) ----------------------------------------------------
    def add(self, task: Task, order: int, gen: int) -> None:
        self._place(task, order, gen, heapify=True, due=False)

    def _place(self, task: Task, order: int, gen: int, *, heapify: bool, due: bool) -> None:
        key = task.key
        if not due and task.next_attempt_at is not None:
            self._delayed_of[key] = (gen, order)
            entry = (task.next_attempt_at, gen, key)
            if heapify:
                heapq.heappush(self._delayed, entry)
            else:
                self._delayed.append(entry)
            return
        group = self.group_fn(task)
        gid = self._gid.get(group)
        if gid is None:
            gid = self._gid[group] = len(self._by_gid)
            self._by_gid.append(group)
        plain = self.unkeyed is not None and group == self.unkeyed
        if self.int_keys:
            code = 0 if plain else self.key_fn(task)
            e: Entry = (((code << 64) + order) << 96) + (gen << 32) + gid
        else:
            e = (*((0,) if plain else _flat(self.key_fn(task))), order, (gen << 32) + gid)
        heap = self.groups.get(group)
        if heap is None:
            heap = self.groups[group] = []
            self._live[group] = 0
            self._stale[group] = 0
        if heapify:
            heapq.heappush(heap, e)
        else:
            heap.append(e)
        self._live[group] += 1
        self._key_at[e if self.int_keys else e[-1]] = key
        self._entry_of[key] = e

    def discard(self, key: str) -> None:
        e = self._entry_of.pop(key, None)
        if e is None:
            if self._delayed_of.pop(key, None) is not None:
                self._delayed_stale += 1
                if (self._delayed_stale > _COMPACT_MIN
                        and self._delayed_stale > len(self._delayed) // 2):
                    waiting = self._delayed_of
                    self._delayed = [d for d in self._delayed if (got := waiting.get(d[2]))
                                     is not None and got[0] == d[1]]
                    heapq.heapify(self._delayed)
                    self._delayed_stale = 0
            return
        tag = e if self.int_keys else e[-1]
        del self._key_at[tag]
        group = self._by_gid[tag & _M32]
        live = self._live[group] - 1
        if live == 0:
            del self.groups[group], self._live[group], self._stale[group]
            return
        self._live[group] = live
        stale = self._stale[group] + 1
        if stale > _COMPACT_MIN and stale > live:
            heap = [x for x in self.groups[group] if self._ident(x) in self._key_at]
            heapq.heapify(heap)
            self.groups[group] = heap
            stale = 0
        self._stale[group] = stale

    def _ident(self, e: Entry) -> int:
        """The int that names an entry (unique: it holds the task's generation)."""
        return int(e if self.int_keys else e[-1])

    # --- reading ------------------------------------------------------------------------------
    def promote(self, now: float) -> int:
        """Move tasks whose ``next_attempt_at`` has come into their groups; returns how many."""
        moved = 0
        delayed = self._delayed
        waiting = self._delayed_of
        tasks = self._queue
        while delayed and delayed[0][0] <= now:
            _, gen, key = heapq.heappop(delayed)
            got = waiting.get(key)
            if got is None or got[0] != gen:
                self._delayed_stale -= 1
                continue
            del waiting[key]
            task = tasks.get(key)
            if task is not None:
                self._place(task, got[1], gen, heapify=True, due=True)
                moved += 1
        return moved

    def next_delayed_at(self) -> float | None:
        """The earliest ``next_attempt_at`` still waiting, if any."""
        delayed = self._delayed
        waiting = self._delayed_of
        while delayed:
            _, gen, key = delayed[0]
            got = waiting.get(key)
            if got is not None and got[0] == gen:
                return delayed[0][0]
            heapq.heappop(delayed)
            self._delayed_stale -= 1
        return None

    def delayed_keys(self) -> list[str]:
        """Keys of tasks still waiting for their ``next_attempt_at``, earliest first."""
        waiting = self._delayed_of
        return [d[2] for d in sorted(self._delayed)
                if (got := waiting.get(d[2])) is not None and got[0] == d[1]]

    def head(self, group: Hashable) -> Entry | None:
        """The first live entry of ``group`` (None when the group is empty)."""
        heap = self.groups.get(group)
        if not heap:
            return None
        key_at = self._key_at
        ints = self.int_keys
        while heap:
            e = heap[0]
            if (e if ints else e[-1]) in key_at:
                return e
            heapq.heappop(heap)
            self._stale[group] -= 1
        return None

    def take_head(self, group: Hashable) -> tuple[Task, str, Entry | None]:
        """Remove the head of ``group`` from the whole queue: its task, its key and the next
        head of the group (None when the group is now empty)."""
        heap = self.groups[group]
        key_at = self._key_at
        ints = self.int_keys
        while True:
            e = heapq.heappop(heap)
            key = key_at.pop(e if ints else e[-1], None)
            if key is not None:
                break
            self._stale[group] -= 1
        del self._entry_of[key]
        task = self._queue.take_for(key, self)
        if task is None:  # never: the index follows the queue
            raise KeyError(f"task {key!r} is indexed but not queued")
        live = self._live[group] - 1
        if live == 0:
            del self.groups[group], self._live[group], self._stale[group]
            return task, key, None
        self._live[group] = live
        while heap:
            e = heap[0]
            if (e if ints else e[-1]) in key_at:
                return task, key, e
            heapq.heappop(heap)
            self._stale[group] -= 1
        return task, key, None  # never: live > 0

    def key_of(self, entry: Entry) -> str | None:
        """The key of the task an entry stands for (None: no longer queued as that entry)."""
        return self._key_at.get(self._ident(entry))

    def task_of(self, entry: Entry) -> Task | None:
        """The task an entry stands for (None: no longer queued)."""
        key = self.key_of(entry)
        return None if key is None else self._queue.get(key)

    def ordered_keys(self, groups: Iterable[Hashable]) -> list[str]:
        """The keys of the queued tasks of ``groups`` in entry order (the policy's order, then
        arrival): one sort of their live entries."""
        key_at = self._key_at
        entries: list[Entry] = []
        for group in groups:
            entries.extend(self.live_entries(group))
        entries.sort()
        if self.int_keys:
            return [key_at[e] for e in entries]
        return [key_at[e[-1]] for e in entries]

    def live_entries(self, group: Hashable) -> list[Entry]:
        """The live entries of ``group``, unordered."""
        key_at = self._key_at
        heap = self.groups.get(group, ())
        if self.int_keys:
            return [e for e in heap if e in key_at]
        return [e for e in heap if e[-1] in key_at]

    def live_tasks(self, group: Hashable) -> list[Task]:
        """The queued tasks of ``group``, unordered."""
        return [t for e in self.live_entries(group) if (t := self.task_of(e)) is not None]

    def group_sizes(self) -> dict[Hashable, int]:
        """Live tasks per group."""
        return dict(self._live)

