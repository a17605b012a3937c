"""Runner lifecycle inside the engine: launch, exit, fence, release, retry decision, adoption.

Every method here runs on the engine thread (or in ``start()`` before that thread exists). The
rules (DESIGN.md "Sources of truth"): a task goes READY -> RUNNING by compare-and-set *before*
its runner starts; a runner's slot and pool capacity are released exactly once, after the runner
is known to be gone; a lost or timed-out runner is stopped (fenced) before its task is offered
again, so a task never runs twice at the same time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .engine.commands import FenceOutcome, StopConfirmed, StopUnconfirmed
from .engine.runner_table import RunnerRecord, VerdictKind
from .engine.settler import RunFacts
from .engine_state import EngineBase
from .launchers.base import RunnerExit, RunnerLauncher
from .logging_setup import log_extra
from .models import (
    AgentPool,
    EventType,
    RunnerState,
    Task,
    TaskEvent,
    TaskState,
)

logger = logging.getLogger(__name__)

EXIT_STATUS_FILE = "exit_status.json"


_DEADLOCK_STATES = (TaskState.FAILED, TaskState.CANCELLED)
def run_facts(rec: RunnerRecord) -> RunFacts:
    """What the Settler needs of a runner record."""
    return RunFacts(key=rec.key, runner_id=rec.runner_id, pool=rec.pool,
                    slot_id=rec.slot.slot_id if rec.slot else None, started_at=rec.started_at,
                    attempt=rec.attempt, report=rec.report)


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


class RunnerMixin(EngineBase):
    """Launching and finishing runners (mixed into DispatcherCore)."""

    # --- bookkeeping of known tasks --------------------------------------------------------
    def _note_task(self, task: Task) -> None:
        """Record the newest state of ``task`` in the TaskBook; a change the deadlock check
        reports on schedules it (a failure soon: its dependents are stuck now)."""
        change = self._book.apply(task)
        if change.graph_changed:
            self._deadlock_dirty = True
        if change.finished_now and task.state is not TaskState.DONE:
            self._next_deadlock_check = min(self._next_deadlock_check, time.time() + 1.0)

    def _platform_failed(self, pool: AgentPool, exc: BaseException | str) -> None:
        raise NotImplementedError  # LifecycleMixin

    def _launcher_for(self, pool: AgentPool) -> RunnerLauncher | None:
        return self._launchers.get(pool.name) or self._launchers.get(pool.type)

    def _on_report(self, runner_id: str, report: dict[str, Any]) -> None:
        """A completion report over the API: poll the platform now (and fence it later if it
        does not exit)."""
        if not self._runners.report(runner_id, report, time.time()):
            self._launches.early_report(runner_id, report)

    def _has_runner(self, key: str) -> bool:
        """The task has a live runner, or one being launched."""
        return self._runners.has_task(key) or key in self._launches or key in self._reconciler

    # --- exits -----------------------------------------------------------------------------
    def _check_exits(self, runner_ids: list[str]) -> None:
        """Poll the platform for the given runners and finish those that ended."""
        for rec, result in self._runners.poll_exits(runner_ids, skip=self._fencer):
            self._runner_ended(rec, result)

    def _runner_ended(self, rec: RunnerRecord, result: RunnerExit) -> None:
        """The platform says the runner is gone: release it, then the Settler decides."""
        task = self._book.get(rec.key, rec.task)
        self._release(rec)
        self._settler.runner_ended(run_facts(rec), task, result)

    def _release(self, rec: RunnerRecord) -> None:
        """The runner is gone: give back its slot and pool capacity, exactly once."""
        if self._runners.remove(rec.runner_id) is None:
            return
        try:
            rec.launcher.release(rec.runner)
        except Exception as exc:
            logger.warning("launcher could not release runner %s: %s", rec.runner_id, exc,
                           exc_info=True, extra=log_extra(task=rec.key, runner=rec.runner_id,
                                                          pool=rec.pool))
        if rec.slot is not None and rec.slot.slot_id:
            self._workspaces.release(rec.key, rec.slot.slot_id)
        self._admission.runner_ended(rec.pool.name, rec.task,
                                     max(0.0, time.time() - rec.started_at))
        self._views.touch(rec.key)
        self._admission.slot_may_have_freed()

    # --- liveness, timeouts, fencing -------------------------------------------------------
    def _check_liveness(self, now: float) -> None:
        """Fence the runners the RunnerTable gives a verdict on (timed out, lost, reported
        without exiting)."""
        timeouts = {rec.key: t for rec in self._runners
                    if (t := self._book.get(rec.key, rec.task).timeout)}
        verdicts = self._runners.verdicts(now, timeouts, self.config.runner_stop_grace,
                                          self.config.heartbeat_timeout, skip=self._fencer)
        for verdict in verdicts:
            rec = self._runners.get(verdict.runner_id)
            if rec is None:
                continue
            if verdict.kind is VerdictKind.LOST:
                self.metrics.record_heartbeat_timeout(rec.pool.name)
            outcome = {VerdictKind.LOST: FenceOutcome.LOST,
                       VerdictKind.TIMED_OUT: FenceOutcome.TIMEOUT,
                       VerdictKind.REPORTED_NO_EXIT: FenceOutcome.REPORTED}[verdict.kind]
            self._fence(rec, outcome, verdict.reason, verdict.event_type)
        self._views.touch_all(rec.key for rec in self._runners)

    def _fence(self, rec: RunnerRecord, outcome: FenceOutcome, reason: str,
               event_type: EventType | None = None) -> None:
        """Stop a runner (the Fencer works in its workers); the engine settles its task once
        the stop is confirmed."""
        if not self._fencer.fence(rec, outcome, reason):
            return
        state = RunnerState.CANCELLED if outcome in (FenceOutcome.CANCELLED,
                                                     FenceOutcome.SHUTDOWN) \
            else RunnerState.LOST if outcome is not FenceOutcome.REPORTED else rec.state
        self._runners.mark_stopping(rec.runner_id, state)
        self._views.touch(rec.key)
        if event_type is not None:
            self._event_log.record(TaskEvent(
                event_type=event_type, task_key=rec.key, message=reason, runner_id=rec.runner_id,
                slot_id=rec.slot.slot_id if rec.slot else None, pool=rec.pool.name,
                duration=max(0.0, time.time() - rec.started_at),
            ))

    def _stop_unconfirmed(self, note: StopUnconfirmed) -> None:
        """A stop was not confirmed: the runner keeps everything it holds; shown on its row."""
        fence = self._fencer.note_unconfirmed(note)
        rec = self._runners.get(note.runner_id)
        if fence is None or rec is None:
            return
        rec.progress = fence.display
        rec.rev += 1
        self._views.touch(rec.key)

    def _fenced(self, note: StopConfirmed) -> None:
        """A fenced runner is known gone: release it and settle its task by the fence's
        outcome."""
        done = self._fencer.confirmed(note)
        rec = self._runners.get(note.runner_id)
        if done is None or rec is None:
            return
        fence, _exit = done
        task = self._book.get(rec.key, rec.task)
        self._release(rec)
        if not self._settler.fenced(run_facts(rec), task, fence.outcome, fence.reason):
            # an orphan: the task was changed by someone else; nothing to write, but it may
            # be READY again (reset by another tool): offer it as it is now
            current = self._book.get(rec.key)
            if current is not None:
                self._admission.place(current, time.time())
