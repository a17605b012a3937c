"""Supervisor: what happens to live runners — signs of life, exits, verdicts, fences, release.

The rules (DESIGN.md "Sources of truth"): a runner's slot and pool capacity are released exactly
once, after the runner is known to be gone (its platform said it ended, or its fence was
confirmed); a lost or timed-out runner is stopped before its task is offered again, so a task
never runs twice at the same time. The RunnerTable gives verdicts, the Fencer stops, the Settler
writes the outcome; this module ties them together on the engine thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..agents.supervisor import AgentProgress, AgentRuns, AttemptOutcome
from ..launchers.base import RunnerExit
from ..logging_setup import log_extra
from ..models import EventType, RunnerState, Slot, Task, TaskEvent, TaskState, Usage
from .commands import FenceOutcome, StopConfirmed, StopUnconfirmed, WorkCommitted
from .launch_plane import LaunchPlane
from .parts import EngineParts
from .runner_table import RunnerRecord, VerdictKind
from .settler import RunFacts, Settler
from .work_step import CommitJob, agent_summary, records_work

logger = logging.getLogger(__name__)

_FENCE_FOR = {VerdictKind.LOST: FenceOutcome.LOST, VerdictKind.TIMED_OUT: FenceOutcome.TIMEOUT,
              VerdictKind.REPORTED_NO_EXIT: FenceOutcome.REPORTED}


def run_facts(rec: RunnerRecord, agent: AttemptOutcome | None = None) -> RunFacts:
    """What the Settler needs of a runner record (``agent``: what its coding agent said)."""
    return RunFacts(key=rec.key, runner_id=rec.runner_id, pool=rec.pool,
                    slot_id=rec.slot.slot_id if rec.slot else None, started_at=rec.started_at,
                    attempt=rec.attempt, report=rec.report, agent=agent)


class Supervisor:
    """Watches live runners and finishes them (engine thread)."""

    def __init__(self, parts: EngineParts, launches: LaunchPlane,
                 place: Callable[[Task, float], None]) -> None:
        self._p = parts
        self._launches = launches
        self._place = place

    # --- signs of life ---------------------------------------------------------------------
    def heartbeat(self, runner_id: str, progress: str | None,
                  usage: Usage | None = None) -> None:
        p = self._p
        rec = p.runners.get(runner_id)
        if rec is not None and runner_id not in p.fencer \
                and p.runners.heartbeat(runner_id, progress, time.time(), usage):
            p.views.touch(rec.key)

    def agent_progress(self, update: AgentProgress, now: float) -> None:
        """A coding agent's stream grew: a sign of life with its last action and usage; a run
        over its budget is stopped (and fails without retry)."""
        p = self._p
        rec = p.runners.get(update.runner_id)
        if rec is None or update.runner_id in p.fencer:
            return
        p.runners.sign_of_life(update.runner_id, now, update.progress or None, update.usage)
        p.views.touch(rec.key)
        if update.budget_reason:
            self.fence(rec, FenceOutcome.BUDGET, update.budget_reason, EventType.BUDGET_EXCEEDED)

    def _judgement(self, rec: RunnerRecord, result: RunnerExit | None) -> AttemptOutcome | None:
        """What the run's coding agent said of it (None: not an agent run): read from its
        stream to the end, or from a wrapped runner's completion report."""
        code = None if result is None else Settler.exit_code(run_facts(rec), result)
        said = self._p.agents.ended(rec.runner_id, code)
        if said is None and rec.report:
            said = AgentRuns.reported(self._p.book.get(rec.key, rec.task), rec.pool, rec.report)
        if said is not None and said.usage:
            self._p.metrics.agents.record(said.agent or "agent", rec.task.tenant, said.usage)
        return said

    def report(self, runner_id: str, report: dict[str, Any]) -> None:
        """A completion report: poll the platform now (and fence it later if it does not
        exit)."""
        if not self._p.runners.report(runner_id, report, time.time()):
            self._launches.early_report(runner_id, report)

    # --- exits and verdicts ----------------------------------------------------------------
    def check_exits(self, runner_ids: list[str]) -> None:
        """Poll the platform for these runners and finish those that ended."""
        with self._p.settler.batch():  # the successful ones: one registry transaction
            for rec, result in self._p.runners.poll_exits(runner_ids, skip=self._p.fencer):
                self.runner_ended(rec, result)

    def check_liveness(self, now: float) -> None:
        """Fence the runners the RunnerTable gives a verdict on."""
        p = self._p
        timeouts = {rec.key: t for rec in p.runners
                    if (t := p.book.get(rec.key, rec.task).timeout)}
        verdicts = p.runners.verdicts(now, timeouts, p.config.runner_stop_grace,
                                      p.config.heartbeat_timeout, skip=p.fencer)
        for verdict in verdicts:
            rec = p.runners.get(verdict.runner_id)
            if rec is None:
                continue
            if verdict.kind is VerdictKind.LOST:
                p.metrics.record_heartbeat_timeout(rec.pool.name)
            self.fence(rec, _FENCE_FOR[verdict.kind], verdict.reason, verdict.event_type)
        p.views.touch_all(rec.key for rec in p.runners)

    def next_timeout(self) -> float | None:
        """When the earliest task timeout of a live runner falls due."""
        p = self._p
        timeouts = {rec.key: t for rec in p.runners
                    if (t := p.book.get(rec.key, rec.task).timeout)}
        return p.runners.next_timeout(timeouts)

    def runner_ended(self, rec: RunnerRecord, result: RunnerExit) -> None:
        """The platform says the runner is gone: release it, then the Settler decides (a
        successful run in a repository slot first has its work committed)."""
        task = self._p.book.get(rec.key, rec.task)
        run = run_facts(rec, self._judgement(rec, result))
        if records_work(rec.slot) and self._p.settler.succeeded(run, result):
            self._commit_work(rec, run, task, result)
            return
        self.release(rec)
        self._p.settler.runner_ended(run, task, result)

    # --- the work of a successful run ------------------------------------------------------
    def _commit_work(self, rec: RunnerRecord, run: RunFacts, task: Task,
                     result: RunnerExit) -> None:
        """Runner and capacity released now; the slot once the work is recorded."""
        assert rec.slot is not None
        self.release(rec, keep_slot=True)
        summary = run.agent.final_message if run.agent and run.agent.final_message \
            else agent_summary(rec.report)
        self._p.work.begin(CommitJob(run=run, task=task, slot=rec.slot, exit=result,
                                     summary=summary, began_at=time.time()))
        self._p.views.touch(rec.key)

    def work_committed(self, note: WorkCommitted) -> None:
        """The work of a successful run is recorded (or could not be): the Settler writes the
        outcome, then the slot is released and the run compared with those beside it."""
        p = self._p
        job = p.work.finished(note.key)
        if job is None:
            return
        task = p.book.get(job.key, job.task)
        # the slot is kept until the outcome is in the registry (a write retried after a
        # registry fault too): a restart meanwhile finds the work where the task says it is
        p.settler.when_settled(job.key, lambda done: self._work_settled(job.key, job.slot,
                                                                        done))
        p.settler.work_recorded(job.run, task, job.exit, note.outcome,
                                recovered=job.recovered, summary=job.summary)

    def _work_settled(self, key: str, slot: Slot, done: Task | None) -> None:
        p = self._p
        p.workspaces.release(key, slot)
        p.views.touch(key)
        p.admission.slot_may_have_freed()
        if done is not None and done.state is TaskState.DONE:
            for overlap in p.work.check_overlap(done).overlaps:
                p.events.record(overlap.event())

    # --- fencing ---------------------------------------------------------------------------
    def fence(self, rec: RunnerRecord, outcome: FenceOutcome, reason: str,
              event_type: EventType | None = None) -> None:
        """Stop a runner (the Fencer works in its workers); its task is settled once the stop
        is confirmed."""
        p = self._p
        if not p.fencer.fence(rec, outcome, reason):
            return
        state = RunnerState.CANCELLED if outcome in (FenceOutcome.CANCELLED,
                                                     FenceOutcome.SHUTDOWN) \
            else RunnerState.LOST if outcome is not FenceOutcome.REPORTED else rec.state
        p.runners.mark_stopping(rec.runner_id, state)
        p.views.touch(rec.key)
        if event_type is not None:
            p.events.record(TaskEvent(
                event_type=event_type, task_key=rec.key, message=reason, runner_id=rec.runner_id,
                slot_id=rec.slot.slot_id if rec.slot else None, pool=rec.pool.name,
                duration=max(0.0, time.time() - rec.started_at)))

    def stop_unconfirmed(self, note: StopUnconfirmed) -> None:
        """A stop was not confirmed: the runner keeps everything it holds; shown on its row."""
        p = self._p
        fence = p.fencer.note_unconfirmed(note)
        rec = p.runners.get(note.runner_id)
        if fence is None or rec is None:
            return
        rec.progress = fence.display
        rec.rev += 1
        p.views.touch(rec.key)

    def fenced(self, note: StopConfirmed) -> None:
        """**Where a fence completes**: the runner is known gone; release it and settle its
        task by why it was stopped."""
        p = self._p
        done = p.fencer.confirmed(note)
        rec = p.runners.get(note.runner_id)
        if done is None or rec is None:
            return
        fence, _exit = done
        task = p.book.get(rec.key, rec.task)
        reported = p.settler.reported_exit(run_facts(rec)) \
            if fence.outcome is FenceOutcome.REPORTED else None
        run = run_facts(rec, self._judgement(rec, reported))
        if reported is not None and records_work(rec.slot) \
                and p.settler.succeeded(run, reported):  # settled by its report, as if exited
            self._commit_work(rec, run, task, reported)
            return
        self.release(rec)
        if not p.settler.fenced(run, task, fence.outcome, fence.reason):
            # an orphan: the task was changed by someone else; nothing to write, but it may
            # be READY again (reset by another tool): offer it as it is now
            current = p.book.get(rec.key)
            if current is not None:
                self._place(current, time.time())

    def release(self, rec: RunnerRecord, *, keep_slot: bool = False) -> None:
        """The runner is gone: give back its slot and pool capacity, exactly once
        (``keep_slot``: the slot stays held for the commit of its work)."""
        p = self._p
        if p.runners.remove(rec.runner_id) is None:
            return
        try:
            rec.launcher.release(rec.runner)
        except Exception as exc:
            logger.warning("launcher could not release runner %s: %s", rec.runner_id, exc,
                           exc_info=True, extra=log_extra(task=rec.key, runner=rec.runner_id,
                                                          pool=rec.pool))
        if rec.slot is not None and rec.slot.slot_id and not keep_slot:
            p.workspaces.release(rec.key, rec.slot)
        p.admission.runner_ended(rec.pool.name, rec.task, max(0.0, time.time() - rec.started_at))
        p.views.touch(rec.key)
        p.admission.slot_may_have_freed()
