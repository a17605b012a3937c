"""WorkStep: a successful run's work committed on its branch before its task is DONE (R21.1).

The step between "runner gone" and "settled". When a runner in a repository slot exits 0, the
Supervisor releases the runner and its pool capacity but keeps the slot, and hands the run here
(:meth:`WorkStep.begin`). A worker thread calls :func:`~..repo_pool.work.finish_work` (git is
slow: never on the engine thread), which commits what the agent left and records the branch,
base, head, commits and files; it posts :class:`~.commands.WorkCommitted`. On the engine thread
the Supervisor then takes the job back (:meth:`WorkStep.finished`), the Settler writes the
outcome (DONE with the work, or a failed attempt), and only then is the slot released. While
the step runs the task is RUNNING, counts as having a runner (it is never offered again), and
shows as "committing work".

A restart that finds a RUNNING task whose run ended with exit 0 while no dispatcher watched
commits it the same way before it settles it (``Restart``): the worktree still holds what the
agent left, since a slot is cleaned only when it is reused. Committing twice cannot happen: a
second :func:`finish_work` on a worktree already committed finds nothing left to commit and
records the same head.

:class:`~..work_overlap.OverlapWatch` (owned here) compares, after each DONE, the files its run
changed with those of runs that overlapped it in time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..config import WorkConfig
from ..launchers.base import RunnerExit
from ..logging_setup import log_extra
from ..models import Slot, Task
from ..repo_pool.git import RepoPoolError
from ..repo_pool.work import WorkResult, finish_work
from ..work_overlap import OverlapReport, OverlapWatch
from .commands import Command, WorkCommitted, WorkOutcome
from .settler import RunFacts

logger = logging.getLogger(__name__)

COMMIT_WORKERS = 2  # git commits of ended runs in parallel
COMMITTING = "committing work"  # what the snapshot shows for a task in this step

FinishWork = Callable[[Slot, Task, str, WorkConfig], "WorkResult | None"]


def agent_summary(report: dict[str, Any] | None) -> str:
    """The agent's final summary from its completion report (``summary``, or the coding
    agent's ``agent.final_message``), for the commit message's body."""
    if not report:
        return ""
    text = report.get("summary")
    if not isinstance(text, str) or not text.strip():
        agent = report.get("agent")
        text = agent.get("final_message") if isinstance(agent, dict) else None
    return text.strip()[:4000] if isinstance(text, str) else ""


def records_work(slot: Slot | None) -> bool:
    """True when a run in ``slot`` has work to commit (a repository worktree, not scratch)."""
    return slot is not None and bool(slot.repo) and bool(slot.branch) and bool(slot.slot_id)


@dataclass(frozen=True)
class CommitJob:
    """One successful run whose work is being committed."""

    run: RunFacts
    task: Task  # as it was when its runner ended
    slot: Slot
    exit: RunnerExit
    summary: str
    began_at: float
    recovered: bool = False  # found ended after a restart

    @property
    def key(self) -> str:
        return self.run.key


class WorkStep:
    """Commits in flight, per task (engine thread), done by workers of its own."""

    def __init__(self, work: WorkConfig, post: Callable[[Command], None],
                 finish: FinishWork | None = None) -> None:
        self._work = work
        self._post = post
        self._finish: FinishWork = finish or finish_work
        self._jobs: dict[str, CommitJob] = {}
        self._workers: ThreadPoolExecutor | None = None
        self.overlap = OverlapWatch()
        self.committed = 0  # runs whose work this engine recorded
        self.seconds = 0.0  # total time from a runner's end to its work recorded

    def start(self) -> None:
        self._workers = ThreadPoolExecutor(max_workers=COMMIT_WORKERS,
                                           thread_name_prefix="necrocode-commit")

    def shutdown(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None

    # --- questions -------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def jobs(self) -> Iterable[CommitJob]:
        return list(self._jobs.values())

    def keys(self) -> list[str]:
        return list(self._jobs)

    # --- the step --------------------------------------------------------------------------
    def begin(self, job: CommitJob) -> None:
        """Commit ``job``'s work in a worker (on this thread when the workers are not
        started); its :class:`WorkCommitted` comes back through the engine's queue."""
        if job.key in self._jobs:
            logger.warning("the work of %s is already being committed", job.key,
                           extra=log_extra(task=job.key))
            return
        self._jobs[job.key] = job
        if self._workers is None:
            self._post(WorkCommitted(job.key, self._commit(job)))
        else:
            self._workers.submit(self._in_worker, job)

    def _in_worker(self, job: CommitJob) -> None:
        self._post(WorkCommitted(job.key, self._commit(job)))

    def _commit(self, job: CommitJob) -> WorkOutcome:
        """finish_work (in a worker; touches no engine state)."""
        try:
            return WorkOutcome(result=self._finish(job.slot, job.task, job.summary, self._work))
        except RepoPoolError as exc:
            logger.warning("the work of %s could not be recorded: %s", job.key, exc,
                           extra=log_extra(task=job.key))
            return WorkOutcome(error=str(exc))
        except Exception as exc:  # never leave the task waiting for this step
            logger.warning("recording the work of %s failed: %s", job.key, exc, exc_info=True,
                           extra=log_extra(task=job.key))
            return WorkOutcome(error=f"{type(exc).__name__}: {exc}")

    def finished(self, key: str) -> CommitJob | None:
        """The worker is done with ``key``: its job (None when unknown: nothing to settle)."""
        job = self._jobs.pop(key, None)
        if job is not None:
            self.committed += 1
            self.seconds += max(0.0, time.time() - (job.exit.finished_at or job.began_at))
        return job

    def forget_all(self) -> list[str]:
        """This replica stood down: commits in flight are no longer its to settle."""
        keys = list(self._jobs)
        self._jobs.clear()
        return keys

    def check_overlap(self, done: Task) -> OverlapReport:
        """After a DONE: overlaps with runs at the same time, and undeclared files (warned)."""
        report = self.overlap.record(done)
        for found in report.overlaps:
            logger.warning("%s", found.message, extra=log_extra(task=done.key))
        if report.undeclared:
            shown = ", ".join(report.undeclared[:5]) + (
                f" and {len(report.undeclared) - 5} more" if len(report.undeclared) > 5 else "")
            logger.warning("%s changed files outside its declared paths: %s", done.key, shown,
                           extra=log_extra(task=done.key))
        return report
