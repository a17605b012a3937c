"""RepoPoolManager: workspace slots (git worktrees and scratch directories) for tasks.

Layout under ``<state_dir>/workspaces/``::

    <repo-slug>/repo.git     one bare clone per repository (fetched, never checked out)
    <repo-slug>/slot-<n>     worktrees of it, reused by task after task
    scratch/slot-<n>         clean directories for tasks without a repository
    slots.json               which slot holds which task (a restarted dispatcher reads it)

A task with a repository gets a worktree on branch ``feature/task-{taskset}-{id}``, started from
the remote's default branch, or, given a :class:`~.start.StartPlan`, from the base merged with
its dependencies' work (a conflict is answered as :class:`~.start.StartConflict`, the slot left
free). The start is kept as ``refs/necrocode/base/<branch>``; a branch that is started again
keeps its earlier head as ``refs/necrocode/previous/<branch>``. Slots are cleaned (reset,
clean -ffdx, new branch; scratch emptied) before each reuse, so one task never sees another's
leftovers; branches stay in the clone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..launchers.proctree import Evictor
from ..models import Slot, Task
from .files import empty_dir, remove_tree, write_whole
from .git import (
    RepoPoolError,
    branch_name,
    is_ancestor,
    normalize_repo,
    redact,
    repo_slug,
    rev_parse,
    run_git,
    workspaces_dir,
)
from .start import StartConflict, StartPlan, StartPoint, resolve_start
from .work import base_ref

logger = logging.getLogger(__name__)

SCRATCH = "scratch"
STATE_FILE = "slots.json"
_START = "refs/remotes/origin/HEAD"
_MAX_PADDING = 64 * 1024  # blanks after a shrunken slots.json before it is rewritten smaller
_dumps = json.JSONEncoder(indent=None, separators=(",", ":")).encode


@dataclass
class _SlotRecord:
    slot_id: str
    path: str
    repo: str | None  # normalized repository; None for scratch slots
    branch: str | None = None
    task: str | None = None  # key of the task holding it; None when free
    base: str | None = None  # commit the branch started from
    merged: tuple[str, ...] = ()  # dependencies whose work it started from

    @property
    def index(self) -> int:
        return int(self.slot_id.rsplit("/", 1)[1])

    def to_slot(self) -> Slot:
        return Slot(slot_id=self.slot_id, slot_path=self.path, repo=self.repo, branch=self.branch,
                    base=self.base, merged=self.merged)


class RepoPoolManager:
    """Hands out workspace slots and takes them back, each exactly once."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        slots_per_repo: int = 4,
        *,
        scratch_slots: int | None = None,
        fetch_interval: float = 10.0,
    ) -> None:
        if slots_per_repo < 1:
            raise ValueError(f"slots_per_repo must be >= 1, got {slots_per_repo}")
        self.root = workspaces_dir(state_dir)
        self.slots_per_repo = slots_per_repo
        self.scratch_slots = scratch_slots  # None: as many as needed
        self.fetch_interval = fetch_interval
        self._lock = threading.RLock()
        self._slots: dict[str, _SlotRecord] = {}
        self._evictor = Evictor()
        self._last_fetch: dict[str, float] = {}
        self._state_path = self.root / STATE_FILE
        self._unsaved = False  # a scratch slot's release not written yet
        self.root.mkdir(parents=True, exist_ok=True)
        self._load()

    # --- public API -----------------------------------------------------------------------------
    def allocate_slot(self, task: Task,
                      start: StartPlan | None = None) -> Slot | StartConflict | None:
        """Reserve and prepare a slot for ``task``; None when its repository has no free slot.

        With ``start``, the branch starts from the base merged with the dependencies' work;
        when they conflict the answer is a :class:`StartConflict` and no slot is taken.
        Raises RepoPoolError (a RunnerLaunchError) when git cannot prepare the workspace.
        """
        with self._lock:
            held = self.slot_for_task(task.key)
            if held is not None:
                logger.warning("task %s already holds slot %s; reusing it", task.key, held.slot_id)
                return held
            if task.repo:
                return self._allocate_worktree(task, task.repo, start)
            rec = self._claim_scratch(task)
        if rec is None:
            return None
        return self._prepare_scratch(rec)

    def mirror_of(self, repo: str) -> Path:
        """The bare clone of ``repo`` (created on the first slot of one of its tasks)."""
        return self.root / repo_slug(repo) / "repo.git"

    def release_slot(self, slot_id: str) -> bool:
        """Free a slot. A second release (or an unknown slot) is logged and ignored: False."""
        with self._lock:
            rec = self._slots.get(slot_id)
            if rec is None or rec.task is None:
                logger.warning("release of slot %s ignored: it is not in use "
                               "(released twice?)", slot_id)
                return False
            logger.debug("slot %s released by %s", slot_id, rec.task)
            rec.task = None
            if rec.repo is None:
                # a scratch slot: written with the next allocation or at shutdown (flush); a
                # crash meanwhile leaves it recorded as held, and the restart frees slots
                # whose task has no live runner (Workspaces.release_leaked)
                self._unsaved = True
                return True
            self._save()
            if rec.repo is not None and Path(rec.path).is_dir():
                # let go of the branch so a retry of the task can check it out elsewhere
                run_git(["checkout", "-q", "--detach"], cwd=rec.path, check=False)
            return True

    def flush(self) -> None:
        """Write slots.json if a release is not in it yet (at shutdown)."""
        with self._lock:
            if self._unsaved:
                self._save()

    def slot_in_use(self, slot_id: str) -> bool:
        """True while a task holds the slot."""
        with self._lock:
            rec = self._slots.get(slot_id)
            return rec is not None and rec.task is not None

    def mark_in_use(
        self, slot_id: str, task_key: str, *, repo: str | None = None, branch: str | None = None
    ) -> Slot:
        """Record that ``task_key`` holds ``slot_id`` (adoption of a live runner after restart)."""
        with self._lock:
            rec = self._slots.get(slot_id)
            if rec is None:
                rec = self._record_for_id(slot_id, repo)
                self._slots[slot_id] = rec
            if rec.task not in (None, task_key):
                logger.warning("slot %s was held by %s; now marked in use by %s",
                               slot_id, rec.task, task_key)
            rec.task = task_key
            if branch is not None:
                rec.branch = branch
            self._save()
            return rec.to_slot()

    def free_slots(self, repo: str | None) -> int:
        """Free slots for tasks of ``repo`` (None: scratch; ``sys.maxsize`` if unbounded)."""
        with self._lock:
            if not repo:
                if self.scratch_slots is None:
                    return sys.maxsize
                return max(0, self.scratch_slots - self._count_used(SCRATCH))
            return max(0, self.slots_per_repo - self._count_used(repo_slug(repo)))

    def assignments(self) -> dict[str, str]:
        """slot id -> key of the task holding it, for every slot in use."""
        with self._lock:
            return {sid: r.task for sid, r in self._slots.items() if r.task is not None}

    def get_slot(self, slot_id: str) -> Slot | None:
        with self._lock:
            rec = self._slots.get(slot_id)
            return rec.to_slot() if rec else None

    def slot_for_task(self, task_key: str) -> Slot | None:
        """The slot ``task_key`` holds, if any."""
        with self._lock:
            for rec in self._slots.values():
                if rec.task == task_key:
                    return rec.to_slot()
            return None

    def in_use_count(self) -> int:
        with self._lock:
            return sum(1 for r in self._slots.values() if r.task is not None)

    # --- scratch --------------------------------------------------------------------------------
    def _claim_scratch(self, task: Task) -> _SlotRecord | None:
        """Take a free scratch slot for ``task`` (under the lock): no other allocation can
        have it while it is made ready outside the lock."""
        rec = self._pick(None, SCRATCH, self.scratch_slots)
        if rec is not None:
            rec.branch = None
            rec.task = task.key
        return rec

    def _prepare_scratch(self, rec: _SlotRecord) -> Slot:
        """Empty a claimed scratch slot of an earlier run's processes and files — outside the
        lock, so concurrent launches (and releases) do not wait for each other's /proc scan
        and deletes — then record it. A failure gives the slot back."""
        try:
            # nothing of an earlier run may stay in it
            self._evictor.evict(rec.path, f"slot {rec.slot_id}")
            empty_dir(rec.path)
        except BaseException:
            with self._lock:
                rec.task = None
            raise
        with self._lock:
            self._save()
            return rec.to_slot()

    # --- worktrees ------------------------------------------------------------------------------
    def _allocate_worktree(self, task: Task, repo: str,
                           plan: StartPlan | None) -> Slot | StartConflict | None:
        norm = normalize_repo(repo)
        slug = repo_slug(norm)
        rec = self._pick(norm, slug, self.slots_per_repo)
        if rec is None:
            return None
        mirror = self._ensure_mirror(norm, slug)
        start = resolve_start(mirror, task.key, plan, _START)
        if isinstance(start, StartConflict):
            logger.warning("task %s cannot start: %s", task.key, start.reason)
            return start
        branch = branch_name(task.taskset, task.id)
        _keep_previous(mirror, branch, start.commit)
        # nothing of an earlier run may stay in it
        self._evictor.evict(rec.path, f"slot {rec.slot_id}")
        try:
            self._prepare_worktree(mirror, Path(rec.path), branch, start)
        except RepoPoolError:
            # a broken worktree (lock files, half-deleted dir): rebuild it once from scratch
            logger.warning("slot %s: rebuilding its worktree", rec.slot_id, exc_info=True)
            remove_tree(Path(rec.path))
            run_git(["--git-dir", str(mirror), "worktree", "prune"], check=False)
            self._prepare_worktree(mirror, Path(rec.path), branch, start)
        rec.branch = branch
        rec.task = task.key
        rec.base, rec.merged = start.base, start.merged
        self._save()
        return rec.to_slot()

    def _ensure_mirror(self, norm: str, slug: str) -> Path:
        mirror = self.root / slug / "repo.git"
        now = time.monotonic()
        if not mirror.is_dir():
            tmp = self.root / slug / "repo.git.tmp"
            remove_tree(tmp)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            run_git(["init", "-q", "--bare", str(tmp)])
            run_git(["--git-dir", str(tmp), "remote", "add", "origin", norm])
            run_git(["--git-dir", str(tmp), "fetch", "-q", "--prune", "origin"])
            if run_git(["--git-dir", str(tmp), "remote", "set-head", "origin", "--auto"],
                       check=False).returncode != 0:
                self._guess_head(tmp, norm)
            os.replace(tmp, mirror)
            self._last_fetch[slug] = now
            logger.info("cloned %s into %s", redact(norm), mirror)
        elif now - self._last_fetch.get(slug, float("-inf")) >= self.fetch_interval:
            proc = run_git(["--git-dir", str(mirror), "fetch", "-q", "--prune", "origin"],
                           check=False)
            if proc.returncode != 0:
                logger.warning("fetch of %s failed, using the last fetched state: %s",
                               redact(norm), redact(proc.stderr.strip()))
            self._last_fetch[slug] = now
        return mirror

    @staticmethod
    def _guess_head(git_dir: Path, norm: str) -> None:
        for name in ("main", "master"):
            ref = f"refs/remotes/origin/{name}"
            if run_git(["--git-dir", str(git_dir), "rev-parse", "-q", "--verify", ref],
                       check=False).returncode == 0:
                run_git(["--git-dir", str(git_dir), "symbolic-ref", _START, ref])
                return
        raise RepoPoolError(
            f"repository {redact(norm)} has no default branch (is it empty?); push a first "
            "commit or fix the taskset's `repo:`", retryable=False,
        )

    @staticmethod
    def _prepare_worktree(mirror: Path, path: Path, branch: str, start: StartPoint) -> None:
        if not (path / ".git").exists():
            remove_tree(path)
            run_git(["--git-dir", str(mirror), "worktree", "add", "-q", "--detach", "-f",
                     str(path), start.commit])
        else:
            run_git(["reset", "-q", "--hard"], cwd=path)
            run_git(["clean", "-q", "-ffdx"], cwd=path)
        run_git(["checkout", "-q", "-f", "--ignore-other-worktrees", "-B", branch, start.commit],
                cwd=path)
        run_git(["--git-dir", str(mirror), "update-ref", base_ref(branch), start.base])

    # --- bookkeeping ----------------------------------------------------------------------------
    def _pick(self, repo: str | None, folder: str, limit: int | None) -> _SlotRecord | None:
        """A free slot of ``repo`` (lowest index first), created if the limit allows."""
        mine = sorted((r for r in self._slots.values() if r.slot_id.startswith(folder + "/")),
                      key=lambda r: r.index)
        for rec in mine:
            if rec.task is None and (limit is None or rec.index < limit):
                rec.repo = repo
                return rec
        used = {r.index for r in mine}
        index = next(i for i in range(len(used) + 1) if i not in used)
        if limit is not None and index >= limit:
            return None
        rec = _SlotRecord(f"{folder}/{index}", str(self.root / folder / f"slot-{index}"), repo)
        self._slots[rec.slot_id] = rec
        return rec

    def _count_used(self, folder: str) -> int:
        return sum(1 for r in self._slots.values()
                   if r.task is not None and r.slot_id.startswith(folder + "/"))

    def _record_for_id(self, slot_id: str, repo: str | None) -> _SlotRecord:
        folder, _, index = slot_id.rpartition("/")
        if not folder or not index.isdigit() or "/" in folder or folder.startswith("."):
            raise ValueError(f"malformed slot id {slot_id!r}; expected '<repo-slug>/<n>' "
                             "or 'scratch/<n>'")
        norm = None if folder == SCRATCH else (normalize_repo(repo) if repo else None)
        return _SlotRecord(slot_id, str(self.root / folder / f"slot-{index}"), norm)

    def _load(self) -> None:
        path = self._state_path
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s: %s", path, exc)
            return
        for raw in (data.get("slots") or {}).values():
            try:
                rec = _SlotRecord(str(raw["slot_id"]), str(raw["path"]), raw.get("repo"),
                                  raw.get("branch"), raw.get("task"), raw.get("base"),
                                  tuple(raw.get("merged") or ()))
                rec.index  # noqa: B018 (validates the id)
            except (KeyError, ValueError, TypeError, IndexError):
                logger.warning("ignoring a malformed slot entry in %s: %r", path, raw)
                continue
            self._slots[rec.slot_id] = rec

    def _save(self) -> None:
        """Write slots.json in place: one ``pwrite`` of the whole document from offset 0.

        (One save per scratch task: its slot's release is written with the next save, see
        :meth:`release_slot`.) Two saves per task made the tmp-file-and-rename of earlier
        versions the costliest part of a short task (each rename creates and deletes an inode;
        on ext4 inode allocation then scans ever more recently deleted inodes). A single
        write() of a complete document is not torn by a killed process, and a shorter document
        is padded with blanks (JSON allows trailing whitespace) instead of truncating, so the
        file is a valid document after every write. Should it still be unreadable (power loss),
        :meth:`_load` ignores it and the engine re-derives ownership on restart
        (``mark_in_use`` for adopted runners, the rest is free) — as when the file is missing.
        """
        self._unsaved = False
        body = _dumps({"version": 1, "slots": {
            sid: {"slot_id": r.slot_id, "path": r.path, "repo": r.repo, "branch": r.branch,
                  "task": r.task, "base": r.base, "merged": list(r.merged)}
            for sid, r in sorted(self._slots.items())
        }}).encode()
        size = len(body)
        fd = os.open(self._state_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            current = os.fstat(fd).st_size  # the file's own size: another writer may have grown it
            if size < current:
                if current - size > _MAX_PADDING:  # rarely: shrink the file again (atomically)
                    write_whole(self._state_path, body)
                    return
                body += b" " * (current - size - 1) + b"\n"
            os.pwrite(fd, body, 0)
        finally:
            os.close(fd)


def _keep_previous(mirror: Path, branch: str, start: str) -> None:
    """A branch about to start again keeps its earlier head (work the new start does not
    contain) as ``refs/necrocode/previous/<branch>``."""
    old = rev_parse(mirror, f"refs/heads/{branch}")
    if old is not None and old != start and not is_ancestor(mirror, old, start):
        run_git(["--git-dir", str(mirror), "update-ref", f"refs/necrocode/previous/{branch}",
                 old])
        logger.info("branch %s starts again; its earlier head %s is kept as "
                    "refs/necrocode/previous/%s", branch, old[:12], branch)
