"""What a NecroCode registry object knows of its directory: every taskset file as last seen.

:class:`SpecCache` keeps each spec (its tasks and their text), the change feed (each task's
latest sequence number), the dependency index (both ways, across tasksets) and the tasks another
writer changed whose state must still be checked against their dependencies. It reads a file
again only when a ``stat`` shows it was replaced.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import RegistryError
from ..models import Task, TaskState, split_key
from ._common import clone, dependency_keys
from .necrocode_format import NecroCodeFormatError
from .necrocode_store import Identity, Spec, SpecStore

log = logging.getLogger(__name__)


class SpecCache:
    """The cached specs of one directory; ``take_seq`` numbers each change seen."""

    def __init__(self, root: Path, take_seq: Callable[[], int]) -> None:
        self.root = root
        self.store = SpecStore(root)
        self._take_seq = take_seq
        self.specs: dict[str, Spec] = {}
        self._broken: dict[str, Identity] = {}  # spec -> identity of the bad file reported
        self._task_seq: dict[str, int] = {}
        self._feed_seqs: list[int] = []  # ascending; stale entries are skipped
        self._feed_keys: list[str] = []
        self._deps_of: dict[str, list[str]] = {}
        self._dependents: dict[str, set[str]] = {}
        self.unsettled: set[str] = set()  # keys another writer changed, to check

    def lookup(self, key: str) -> Task | None:
        spec, tid = split_key(key)
        found = self.specs.get(spec)
        return found.tasks.get(tid) if found is not None else None

    def all_tasks(self) -> Iterator[Task]:
        for name in sorted(self.specs):
            yield from self.specs[name].tasks.values()

    def seq_of(self, key: str) -> int:
        return self._task_seq[key]

    def dependents(self, key: str) -> list[str]:
        return sorted(self._dependents.get(key, ()))

    def deps(self, key: str) -> list[str]:
        return self._deps_of.get(key, [])

    def deps_done(self, key: str) -> bool:
        return all((d := self.lookup(dep)) is not None and d.state is TaskState.DONE
                   for dep in self.deps(key))

    def is_broken(self, name: str) -> bool:
        """True while the spec's file is one that could not be read (already reported)."""
        return name in self._broken

    def refresh(self, names: Iterable[str] | None = None, *, strict: bool = False) -> None:
        """Read again the taskset files another writer changed (all, or those of ``names``).

        A file that cannot be read raises NecroCodeFormatError when ``strict``; otherwise it
        is reported once (a warning) and its tasks keep their last known state.
        """
        if names is None:
            found: dict[str, Identity | None] = dict(self.store.scan())
            for gone in [n for n in self.specs if n not in found]:
                log.warning("taskset %s was removed from %s; its tasks are no longer known",
                            gone, self.root)
                self.install(gone, None)
        else:
            found = {n: self.store.stat(n) for n in names}
        problems: list[NecroCodeFormatError] = []
        for name, ident in found.items():
            spec = self.specs.get(name)
            if ident is None:
                if spec is not None:
                    self.install(name, None)
                continue
            if (spec is not None and spec.ident == ident) or (
                    not strict and self._broken.get(name) == ident):
                continue
            try:
                new = self.store.load(name, spec)
            except NecroCodeFormatError as exc:
                if strict:
                    problems.append(exc)
                else:
                    self._broken[name] = ident
                    log.warning("%s\n  (its tasks keep their last known state until the file "
                                "is fixed)", exc)
                continue
            self._broken.pop(name, None)
            if new is not None:
                self.install(name, new, foreign=True)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise RegistryError("\n".join(str(p) for p in problems))

    def install(self, name: str, new: Spec | None, *, foreign: bool = False,
                changed: Iterable[str] | None = None) -> None:
        """Make ``new`` the cached spec ``name`` (None: gone); each changed task takes the next
        sequence number (``changed``: keys in order; default: every task whose object
        changed)."""
        old = self.specs.pop(name, None)
        if new is not None:
            self.specs[name] = new
        if changed is None:
            ids = [] if new is None else [tid for tid in new.order if old is None
                                           or old.tasks.get(tid) is not new.tasks[tid]]
            changed = [f"{name}/{tid}" for tid in ids]
        removed = [] if old is None else [
            f"{name}/{tid}" for tid in old.tasks if new is None or tid not in new.tasks]
        for key in removed:
            self._task_seq.pop(key, None)
            self._set_deps(key, [])
        for key in changed:
            task = self.lookup(key)
            if task is None:
                continue
            self._set_deps(key, dependency_keys(task))
            seq = self._take_seq()
            self._task_seq[key] = seq
            self._feed_seqs.append(seq)
            self._feed_keys.append(key)
            if foreign:
                self.unsettled.add(key)
                self.unsettled.update(self._dependents.get(key, ()))
        if len(self._feed_seqs) > 2 * len(self._task_seq) + 1024:
            pairs = sorted((s, k) for k, s in self._task_seq.items())
            self._feed_seqs = [s for s, _ in pairs]
            self._feed_keys = [k for _, k in pairs]

    def _set_deps(self, key: str, deps: list[str]) -> None:
        for old in self._deps_of.get(key, ()):
            self._dependents.get(old, set()).discard(key)
        if deps:
            self._deps_of[key] = deps
            for dep in deps:
                self._dependents.setdefault(dep, set()).add(key)
        else:
            self._deps_of.pop(key, None)

    def take_unsettled(self) -> dict[str, list[str]]:
        """Tasks another writer left BLOCKED with every dependency DONE, or READY with one not
        DONE, by spec; the set of keys to check is emptied."""
        keys, self.unsettled = self.unsettled, set()
        todo: dict[str, list[str]] = {}
        for key in sorted(keys):
            task = self.lookup(key)
            if task is not None and task.state in (TaskState.BLOCKED, TaskState.READY) \
                    and self.deps_done(key) != (task.state is TaskState.READY):
                todo.setdefault(task.taskset, []).append(key)
        return todo

    def changes(self, seq: int, limit: int | None) -> tuple[list[Task], int | None]:
        """Tasks whose latest change is after ``seq`` (copies), and the seq of the last one
        when ``limit`` cut the list short (None otherwise)."""
        out: list[Task] = []
        for i in range(bisect_right(self._feed_seqs, seq), len(self._feed_seqs)):
            s, key = self._feed_seqs[i], self._feed_keys[i]
            if self._task_seq.get(key) != s:
                continue  # superseded by a later change of the same task
            task = self.lookup(key)
            if task is None:
                continue
            out.append(clone(task))
            if limit is not None and len(out) >= limit:
                return out, s
        return out, None
