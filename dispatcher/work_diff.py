"""A task's work for the console and ``necroui diff``: branch, commits, stat and patch (R21.4).

:func:`task_diff` reads the Dispatcher's clone of the task's repository: the recorded
``base..head`` (for a task still running, its branch against the start kept beside it). It
runs git (tree-to-tree diffs cost what changed, not the repository's size) and can take a
moment on big changes: call it in a worker thread, never on the UI loop. The patch is cut at
``max_patch_chars`` (``truncated`` says so).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import DispatcherError
from .models import Task
from .repo_pool.git import git_env, mirror_path, redact, rev_parse, run_git
from .repo_pool.work import base_ref

MAX_PATCH_CHARS = 2_000_000
MAX_COMMITS = 500


class DiffError(DispatcherError):
    """A task's work cannot be shown (no repository, no clone, nothing recorded)."""


@dataclass(frozen=True)
class CommitInfo:
    """One commit of a task's work."""

    sha: str
    author: str
    timestamp: float
    subject: str


@dataclass(frozen=True)
class FileStat:
    """Lines added and deleted in one file (``binary``: no line counts)."""

    path: str
    added: int
    deleted: int
    binary: bool = False


@dataclass(frozen=True)
class TaskDiff:
    """A task's work against its base."""

    key: str
    branch: str
    base: str
    head: str
    commits: tuple[CommitInfo, ...]  # newest first
    files: tuple[FileStat, ...]
    patch: str
    truncated: bool = False

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def deleted(self) -> int:
        return sum(f.deleted for f in self.files)


def task_diff(task: Task, state_dir: str | Path, *, patch: bool = True,
              max_patch_chars: int = MAX_PATCH_CHARS) -> TaskDiff:
    """The work of ``task``; DiffError when there is none to show."""
    if not task.repo:
        raise DiffError(f"task {task.key} has no repository: its work is not in git")
    mirror = mirror_path(state_dir, task.repo)
    if not (mirror / "HEAD").is_file():
        raise DiffError(f"no clone of {redact(task.repo)} under {Path(state_dir) / 'workspaces'}"
                        f"; task {task.key} has not run with this state_dir")
    branch = task.branch or task.reserved_branch
    head = task.head and rev_parse(mirror, task.head)
    base = task.base and rev_parse(mirror, task.base)
    if not head and branch:  # still running, or recorded before work was: its branch so far
        head = rev_parse(mirror, f"refs/heads/{branch}")
        base = base or rev_parse(mirror, base_ref(branch))
    if not head or not base:
        raise DiffError(f"task {task.key} has no recorded work yet (no branch head in {mirror})")
    git_dir = str(mirror)
    text, truncated = _patch(git_dir, base, head, max_patch_chars if patch else 0)
    return TaskDiff(key=task.key, branch=branch or "", base=base, head=head,
                    commits=_commits(git_dir, base, head), files=_numstat(git_dir, base, head),
                    patch=text, truncated=truncated)


def _commits(git_dir: str, base: str, head: str) -> tuple[CommitInfo, ...]:
    out = run_git(["--git-dir", git_dir, "log", f"--max-count={MAX_COMMITS}",
                   "--format=%H%x1f%an <%ae>%x1f%at%x1f%s%x1e", f"{base}..{head}"]).stdout
    commits = []
    for record in out.split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) == 4:
            commits.append(CommitInfo(parts[0], parts[1], float(parts[2] or 0), parts[3]))
    return tuple(commits)


def _numstat(git_dir: str, base: str, head: str) -> tuple[FileStat, ...]:
    out = run_git(["--git-dir", git_dir, "diff", "--numstat", "--no-renames", "-z", base,
                   head]).stdout
    stats = []
    for entry in out.split("\0"):
        if not entry:
            continue
        added, deleted, path = entry.split("\t", 2)
        if added == "-":
            stats.append(FileStat(path, 0, 0, binary=True))
        else:
            stats.append(FileStat(path, int(added), int(deleted)))
    return tuple(stats)


def _patch(git_dir: str, base: str, head: str, limit: int) -> tuple[str, bool]:
    """The patch, read up to ``limit`` characters (git is stopped beyond)."""
    if limit <= 0:
        return "", False
    proc = subprocess.Popen(
        ["git", "--git-dir", git_dir, "diff", "--no-color", "--no-ext-diff", "--no-renames",
         base, head], env=git_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    raw = proc.stdout.read(limit + 1)
    truncated = len(raw) > limit
    if truncated:
        proc.kill()
    proc.stdout.close()
    proc.wait()
    if proc.returncode not in (0, -9) and not truncated:
        raise DiffError(f"git diff {base[:12]} {head[:12]} failed in {git_dir}")
    return raw[:limit].decode("utf-8", errors="replace"), truncated
