"""After a run: the task's work committed on its branch and recorded (R21.1).

:func:`finish_work` runs after an agent exits successfully and before its task is DONE, in a
worker thread (it calls git; it touches no engine state). Changes the agent left uncommitted are
committed on the task branch by the Dispatcher (``work.commit_author``, ``work.commit_message``
with the agent's final summary as the body); then the branch head, the commit the work started
from, the commit count and the changed files are answered as a :class:`WorkResult`, whose
:meth:`~WorkResult.task_updates` the engine writes with the DONE transition.

The branch lives in the Dispatcher's bare clone (worktrees share its refs), so cleaning the slot
for the next task loses nothing.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import WorkConfig
from ..models import EventType, Slot, Task, TaskEvent
from .git import RepoPoolError, changed_files, identity_env, rev_parse, run_git

logger = logging.getLogger(__name__)

#: Where the commit a branch started from is kept (``base_ref(branch)``), beside the branch.
BASE_REFS = "refs/necrocode/base/"
_DEFAULT_BASE = "refs/remotes/origin/HEAD"


def base_ref(branch: str) -> str:
    """The ref holding the commit ``branch`` started from."""
    return BASE_REFS + branch


class WorkVerdict(str, enum.Enum):
    """What the recorded work means for the task."""

    DONE = "done"
    FAILED = "failed"  # it changed nothing and ``work.on_no_changes`` is ``fail``


@dataclass(frozen=True)
class WorkResult:
    """A run's work as recorded on its branch."""

    task_key: str
    branch: str
    base: str  # the commit its work started from
    head: str  # the branch head after the run (and the Dispatcher's commit)
    commits: int  # commits base..head
    files_changed: tuple[str, ...]
    committed: bool  # the Dispatcher committed changes the agent left
    verdict: WorkVerdict

    @property
    def no_changes(self) -> bool:
        """The run changed nothing (no commit, no file)."""
        return self.commits == 0 and not self.files_changed

    @property
    def summary(self) -> str:
        """One line: ``2 commits, 3 files changed on feature/…`` or why it changed nothing."""
        if self.no_changes:
            return f"changed nothing on {self.branch}"
        commits = f"{self.commits} commit{'s' if self.commits != 1 else ''}"
        files = len(self.files_changed)
        mine = " (leftover changes committed by the Dispatcher)" if self.committed else ""
        return (f"{commits}, {files} file{'s' if files != 1 else ''} changed on "
                f"{self.branch}{mine}")

    def task_updates(self) -> dict[str, Any]:
        """The task fields to write with its DONE (or FAILED) transition."""
        return {"branch": self.branch, "base": self.base, "head": self.head,
                "commits": self.commits, "files_changed": self.files_changed,
                "landed": None, "gate_failed": None}

    def event(self) -> TaskEvent:
        """The WorkRecorded event of this result."""
        return TaskEvent(
            event_type=EventType.WORK_RECORDED, task_key=self.task_key, message=self.summary,
            details={"branch": self.branch, "base": self.base, "head": self.head,
                     "commits": self.commits, "files_changed": list(self.files_changed[:200]),
                     "files": len(self.files_changed), "committed": self.committed,
                     "verdict": self.verdict.value},
        )


def commit_message(work: WorkConfig, task: Task, summary: str = "") -> str:
    """The message of the Dispatcher's commit: the template filled in, the summary as body."""
    template = work.commit_message
    values = {"key": task.key, "id": task.id, "taskset": task.taskset,
              "title": task.title or task.key, "description": task.description,
              "summary": summary.strip()}
    try:
        text = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:  # a config built in code, not validated
        logger.warning("work.commit_message %r cannot be used (%s); using the default",
                       template, exc)
        text = WorkConfig().commit_message.format(**values)
    text = text.strip() or task.key
    if "{summary}" not in template and values["summary"]:
        text += "\n\n" + values["summary"]
    return text + "\n"


def finish_work(slot: Slot, task: Task, summary: str = "",
                work: WorkConfig | None = None) -> WorkResult | None:
    """Commit what the agent left in ``slot`` on the task branch and record the work.

    None for a slot without a repository (a scratch directory). Raises RepoPoolError when git
    cannot read or commit the worktree (its message names the slot and the git error).
    """
    if not slot.repo or not slot.branch:
        return None
    work = work or WorkConfig()
    path = Path(slot.slot_path)
    if not (path / ".git").exists():
        raise RepoPoolError(f"slot {slot.slot_id} of {task.key}: {path} is not a git worktree "
                            "any more; the run's work cannot be recorded")
    committed = _commit_leftovers(path, task, summary, work)
    head = run_git(["rev-parse", "HEAD"], cwd=path).stdout.strip()
    branch = slot.branch
    current = run_git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=path, check=False)
    if current.stdout.strip() != branch:
        where = current.stdout.strip() or "a detached HEAD"
        logger.warning("task %s left its worktree on %s; its work (%s) is recorded on %s",
                       task.key, where, head[:12], branch)
        run_git(["update-ref", f"refs/heads/{branch}", head], cwd=path)
    base = slot.base or rev_parse(_git_dir(path), base_ref(branch)) or _merge_base(path, head)
    commits = int(run_git(["rev-list", "--count", f"{base}..{head}"], cwd=path).stdout.strip()
                  or 0)
    files = changed_files(_git_dir(path), base, head)
    verdict = WorkVerdict.DONE
    if commits == 0 and not files:
        if work.on_no_changes == "fail":
            verdict = WorkVerdict.FAILED
        else:
            logger.warning("task %s succeeded but changed nothing on %s", task.key, branch)
    return WorkResult(task_key=task.key, branch=branch, base=base, head=head, commits=commits,
                      files_changed=files, committed=committed, verdict=verdict)


def _commit_leftovers(path: Path, task: Task, summary: str, work: WorkConfig) -> bool:
    status = run_git(["status", "--porcelain", "-z", "--untracked-files=all"], cwd=path).stdout
    if not status:
        return False
    run_git(["add", "-A"], cwd=path)
    staged = run_git(["diff", "--cached", "--quiet"], cwd=path, check=False)
    if staged.returncode == 0:
        return False
    run_git(["-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-F", "-"], cwd=path,
            input=commit_message(work, task, summary), env=identity_env(work.commit_author))
    return True


def _git_dir(path: Path) -> str:
    """The common git directory of a worktree (the bare clone), where refs live."""
    out = run_git(["rev-parse", "--git-common-dir"], cwd=path).stdout.strip()
    return str((path / out).resolve()) if not Path(out).is_absolute() else out


def _merge_base(path: Path, head: str) -> str:
    """Fallback base of a branch whose start was not recorded: its fork from the default."""
    proc = run_git(["merge-base", head, _DEFAULT_BASE], cwd=path, check=False)
    return proc.stdout.strip() or head
