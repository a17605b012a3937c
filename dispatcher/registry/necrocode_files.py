"""A Task Registry over an original NecroCode registry directory, dispatched in place.

The directory keeps the original's layout and format (:mod:`.necrocode_format`), so the
original NecroCode tools go on reading and writing it while the Dispatcher runs: every write
takes the spec's lock (:mod:`.necrocode_lock`), reads the file again if anyone changed it, and
rewrites it whole; events are appended in the original's vocabulary (:mod:`.necrocode_events`).

Reads come from a cache of every taskset file, refreshed by a ``stat`` of each file: a file is
read again only when another writer replaced it. Sequence numbers (the change feed, event
``seq``) are this object's own: each change it sees, its own or another writer's, takes the next
one. Tasks another writer changed are checked against their dependencies when the feed is
polled (:meth:`changes_since`): one the original left BLOCKED although every dependency is DONE
becomes READY, one left READY before its dependencies are DONE becomes BLOCKED.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InvalidTransitionError, RegistryError, TaskNotFoundError
from ..models import Task, TaskEvent, Taskset, TaskState, now, split_key
from ._common import (
    TransitionRequest,
    TransitionResult,
    apply_updates,
    as_states,
    bind_event,
    check_order_by,
    check_requests,
    check_updates,
    clone,
    paused_gc,
    priority_event,
    sort_tasks,
)
from ._submit_plan import normalize_tasks, plan_submit
from .base import ChangeBatch, KnownVersion, SubmitResult
from .necrocode_cache import SpecCache
from .necrocode_events import EventLog
from .necrocode_format import new_head, set_head_info
from .necrocode_lock import locked
from .necrocode_store import new_spec
from .necrocode_txn import Txn

log = logging.getLogger(__name__)

#: Folders of the original's layout; a directory with one of them is a NecroCode registry.
LAYOUT = ("tasksets", "events", "locks")


def check_spec_name(name: str) -> None:
    """A taskset name must be usable as the folder of its spec."""
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\0" in name:
        raise RegistryError(f"taskset name {name!r} cannot be a NecroCode spec folder; use a "
                            "name without '/' that does not start with '.'")


class NecroCodeRegistry:
    """Task Registry stored in a NecroCode registry directory (see the module doc).

    ``lock_timeout``: seconds to wait for a spec's lock (the original's default, 30).
    Opening reads every taskset file and refuses a directory with an unreadable one
    (NecroCodeFormatError naming the file and the fix); it writes nothing.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._lock = threading.RLock()
        self._seq = 0
        self._settle_warned: set[str] = set()
        self._cache = SpecCache(self.path, self._take_seq)
        self._events = EventLog(self.path, self._take_seq)
        with self._lock:
            self._cache.refresh(strict=True)
            self._events.load()

    def __repr__(self) -> str:
        return f"NecroCodeRegistry({str(self.path)!r})"

    # --- cache --------------------------------------------------------------------------------
    def _take_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- writes -------------------------------------------------------------------------------
    @contextmanager
    def _txn(self, names: Iterable[str]) -> Iterator[Txn]:
        """Lock the specs ``names``, read them fresh, collect changes, write them at the end."""
        specs = sorted(set(names))
        with self._lock:
            for folder in LAYOUT:
                try:
                    (self.path / folder).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise RegistryError(f"cannot create {self.path / folder}: "
                                        f"{exc.strerror or exc}; the NecroCode registry "
                                        "directory must be writable") from exc
            with locked([self.path / "locks" / f"{n}.lock" for n in specs], self.lock_timeout):
                self._cache.refresh(specs, strict=True)
                txn = Txn(frozenset(specs), self._cache.lookup, now())
                yield txn
                self._commit(txn)
            if txn.deferred:
                self._cache.unsettled.update(txn.deferred)

    def _commit(self, txn: Txn) -> None:
        for name, changed in txn.changed.items():
            spec = self._cache.specs.get(name) or new_spec(self._cache.store, Taskset(name), {})
            order = txn.orders.get(name) or spec.order + [t for t in changed if t not in
                                                          spec.tasks]
            written = self._cache.store.write(spec, changed, order, txn.stamp,
                                              txn.heads.get(name), txn.infos.get(name))
            keys = [k for k in txn.put_order if split_key(k)[0] == name]
            self._cache.install(name, written, changed=keys)
        if txn.events or txn.state_lines:
            self._events.append(txn.events, txn.state_lines)

    def _specs_to_lock(self, key: str, target: TaskState) -> set[str]:
        names = {split_key(key)[0]}
        if target is TaskState.DONE:
            names.update(split_key(d)[0] for d in self._cache.dependents(key))
        return names

    # --- tasksets -----------------------------------------------------------------------------
    def submit_taskset(self, taskset: Taskset) -> SubmitResult:
        """Create or update a taskset and its tasks, atomically (see TaskRegistry).

        A dependency on an id that is not a task of the taskset is refused (the original's
        format has none; a dependency on another taskset is written as its key ``set/id``).
        """
        name = taskset.name
        check_spec_name(name)
        with self._lock:  # refuse a missing dependency before taking any lock
            self._cache.refresh([name])
            spec = self._cache.specs.get(name)
            normalize_tasks(taskset)  # duplicate or bad ids
            self._check_dependencies(taskset, set(spec.tasks) if spec is not None else set())
        with self._txn([name]) as txn, paused_gc():
            spec = self._cache.specs.get(name)
            existing = {t.key: t for t in spec.tasks.values()} if spec is not None else {}

            def outside(keys: Iterable[str]) -> dict[str, TaskState]:
                return {k: t.state for k in keys if (t := self._cache.lookup(k)) is not None}

            self._check_dependencies(taskset, set(spec.tasks) if spec is not None else set())
            plan = plan_submit(taskset, existing, outside, txn.stamp)
            head = dict(spec.head) if spec is not None else new_head(taskset, txn.stamp)
            set_head_info(head, taskset)
            for task in plan.created + plan.updated:
                txn.put(clone(task))
            submitted = sorted(plan.positions, key=plan.positions.__getitem__)
            ids = [split_key(k)[1] for k in submitted]
            submitted_ids = set(ids)
            kept = [] if spec is None else [t for t in spec.order if t not in submitted_ids]
            txn.orders[name] = ids + kept
            txn.heads[name] = head
            info = replace(taskset, tasks=[],
                           created_at=spec.info.created_at if spec else taskset.created_at)
            txn.infos[name] = info
            if not txn.changed:  # nothing changed: write the taskset fields anyway
                txn.changed[name] = {}
            txn.events.extend((e, None) for e in plan.events)
        log.info("submitted taskset %s to %s: %d created, %d updated, %d unchanged", name,
                 self.path, len(plan.result.created), len(plan.result.updated),
                 len(plan.result.unchanged))
        return plan.result

    @staticmethod
    def _check_dependencies(taskset: Taskset, existing: set[str]) -> None:
        ids = existing | {t.id for t in taskset.tasks}
        name = taskset.name
        for task in taskset.tasks:
            missing = [d for d in task.dependencies
                       if ("/" not in d and d not in ids)
                       or (split_key(d)[0] == name and split_key(d)[1] not in ids)]
            if missing:
                raise RegistryError(
                    f"taskset {name!r}: task {task.id!r} depends on "
                    f"{', '.join(repr(d) for d in missing)}, not a task of the taskset; a "
                    "NecroCode taskset cannot keep that (add the task or drop the "
                    "dependency); nothing written")

    def _require(self, key: str) -> None:
        """TaskNotFoundError before any lock is taken (no lock file for a spec that is not
        there)."""
        self._cache.refresh([split_key(key)[0]])
        if self._cache.lookup(key) is None:
            raise TaskNotFoundError(key)

    def list_tasksets(self) -> list[Taskset]:
        """Every taskset (``tasks`` left empty; use list_tasks)."""
        with self._lock:
            self._cache.refresh()
            return [replace(self._cache.specs[n].info, tasks=[]) for n in sorted(self._cache.specs)]

    def get_taskset(self, name: str) -> Taskset | None:
        """One taskset with its tasks (in file order), or None."""
        with self._lock:
            self._cache.refresh([name])
            spec = self._cache.specs.get(name)
            if spec is None:
                return None
            return replace(spec.info, tasks=[clone(spec.tasks[t]) for t in spec.order])

    # --- tasks --------------------------------------------------------------------------------
    def get_task(self, key: str) -> Task:
        """The task with key ``taskset/id``; raises TaskNotFoundError."""
        with self._lock:
            self._cache.refresh([split_key(key)[0]])
            task = self._cache.lookup(key)
            if task is None:
                raise TaskNotFoundError(key)
            return clone(task)

    def get_tasks(self, keys: Iterable[str]) -> dict[str, Task]:
        """Several tasks by key; missing keys are left out."""
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            self._cache.refresh({split_key(k)[0] for k in wanted})
            found = ((k, self._cache.lookup(k)) for k in wanted)
            return {k: clone(t) for k, t in found if t is not None}

    def list_tasks(
        self, *, state: TaskState | Sequence[TaskState] | None = None, skill: str | None = None,
        taskset: str | None = None, tenant: str | None = None, order_by: str = "key",
        limit: int | None = None, offset: int = 0,
    ) -> list[Task]:
        """Tasks matching every given filter, sorted, one page (orders as TaskRegistry)."""
        check_order_by(order_by)
        states = set(as_states(state))
        with self._lock:
            self._cache.refresh(None if taskset is None else [taskset])
            found = [t for t in self._cache.all_tasks()
                     if (not states or t.state in states)
                     and (skill is None or t.required_skill == skill)
                     and (taskset is None or t.taskset == taskset)
                     and (tenant is None or t.tenant == tenant)]
            found = sort_tasks(found, order_by, self._cache.seq_of)
            end = None if limit is None else offset + limit
            return [clone(t) for t in found[offset:end]]

    def count_tasks(self, *, taskset: str | None = None) -> dict[TaskState, int]:
        """Number of tasks per state (every state present, zero included)."""
        counts = dict.fromkeys(TaskState, 0)
        with self._lock:
            self._cache.refresh(None if taskset is None else [taskset])
            for t in self._cache.all_tasks():
                if taskset is None or t.taskset == taskset:
                    counts[t.state] += 1
        return counts

    def transition(self, key: str, to_state: TaskState, *,
                   expected: TaskState | Sequence[TaskState] | None = None,
                   event: TaskEvent | None = None, **updates: Any) -> Task:
        """Compare-and-set state change plus updates plus event, under the spec's lock."""
        target = TaskState(to_state)
        checked = check_updates(key, updates)
        with self._lock:
            self._require(key)
        with self._txn(self._specs_to_lock(key, target)) as txn:
            new = txn.transition(key, target, expected, event, checked, self._cache.dependents,
                                 self._cache.deps)
        return clone(new)

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Several compare-and-sets under one lock per spec, each taskset file written once.

        Each request behaves as :meth:`transition` would, in order; a refused one is answered
        with its exception in its place and does not stop the others.
        """
        checked = check_requests(requests)
        out: list[TransitionResult] = []
        if not checked:
            return out
        names: set[str] = set()
        with self._lock:
            self._cache.refresh()
            for req, target, _ in checked:
                if self._cache.lookup(req.key) is not None:
                    names |= self._specs_to_lock(req.key, target)
        with self._txn(names) as txn:
            for req, target, updates in checked:
                try:
                    out.append(txn.transition(req.key, target, req.expected, req.event, updates,
                                              self._cache.dependents, self._cache.deps))
                except (InvalidTransitionError, TaskNotFoundError) as exc:
                    out.append(exc)
        return [clone(r) if isinstance(r, Task) else r for r in out]

    def update_task(self, key: str, *, event: TaskEvent | None = None, **updates: Any) -> Task:
        """Change fields of UPDATABLE_FIELDS (not the state) plus an event, atomically."""
        checked = check_updates(key, updates)
        with self._lock:
            self._require(key)
        with self._txn([split_key(key)[0]]) as txn:
            new = apply_updates(txn.get(key), checked, txn.stamp)
            txn.put(new)
            if event is not None:
                txn.events.append((bind_event(event, key), None))
        return clone(new)

    def set_priority(self, key: str, priority: int) -> Task:
        """Persist a new priority and write a PriorityChanged event (old and new in details)."""
        priority = int(priority)
        with self._lock:
            self._require(key)
        with self._txn([split_key(key)[0]]) as txn:
            task = txn.get(key)
            new = apply_updates(task, {"priority": priority}, txn.stamp)
            txn.put(new)
            txn.events.append((priority_event(key, task.priority, priority, txn.stamp), None))
        return clone(new)

    def _settle(self) -> None:
        """Tasks another writer changed follow their dependencies (see the module doc)."""
        for name, keys in self._cache.take_unsettled().items():
            if self._cache.is_broken(name):  # reported already; settled once it is fixed
                self._cache.unsettled.update(keys)
                continue
            try:
                with self._txn([name]) as txn:
                    for key in keys:
                        txn.settle(key, self._cache.deps(key))
            except RegistryError as exc:
                if name not in self._settle_warned:
                    self._settle_warned.add(name)
                    log.warning("could not update the states of %d task(s) of %s to their "
                                "dependencies (will try again): %s", len(keys), name, exc)
                self._cache.unsettled.update(keys)
            else:
                self._settle_warned.discard(name)

    # --- change feed --------------------------------------------------------------------------
    def current_seq(self) -> int:
        """The latest change sequence number (of this object; see the module doc)."""
        with self._lock:
            self._cache.refresh()
            self._events.refresh()
            return self._seq

    def changes_since(self, seq: int, limit: int | None = None, *,
                      known: KnownVersion | None = None) -> ChangeBatch:
        """Tasks whose latest change is after ``seq``, in sequence order (``known`` is not
        asked: the files are read as a whole anyway)."""
        with self._lock:
            self._cache.refresh()
            if self._cache.unsettled:
                self._settle()
            if limit is not None and limit <= 0:
                return ChangeBatch([], seq)
            tasks, last = self._cache.changes(seq, limit)
            return ChangeBatch(tasks, last if last is not None else max(self._seq, seq))

    # --- events -------------------------------------------------------------------------------
    def record_event(self, event: TaskEvent) -> TaskEvent:
        """Append an event to its spec's event log; returns it with its ``seq`` set."""
        with self._lock:
            (stored,) = self._events.append([(event, None)])
            return replace(stored, details=dict(stored.details))

    def record_events(self, events: Iterable[TaskEvent]) -> None:
        """Append several events (one write per event file)."""
        items = [(e, None) for e in events]
        if items:
            with self._lock:
                self._events.append(items)

    def get_events(
        self, *, task_key: str | None = None, since: float | None = None,
        until: float | None = None, event_types: Sequence[Any] | None = None,
        limit: int | None = None, after_seq: int | None = None, newest_first: bool = False,
    ) -> list[TaskEvent]:
        """Events filtered by task, time range [since, until), type; oldest first by default."""
        with self._lock:
            self._events.refresh()
            return self._events.query(task_key=task_key, since=since, until=until,
                                      event_types=event_types, limit=limit,
                                      after_seq=after_seq, newest_first=newest_first)

    def close(self) -> None:
        """Nothing stays open between calls; kept for the protocol."""


__all__ = ["LAYOUT", "NecroCodeRegistry", "check_spec_name"]
