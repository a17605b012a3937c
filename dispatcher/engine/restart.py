"""Restart: carrying out the Reconciler's plan for the tasks the registry says are RUNNING.

On start (before the engine thread runs) every pool's launcher is asked which runners it still
finds; :func:`~.engine.reconciler.plan_reconcile` decides per task, and this module acts: adopt
(slot marked in use, capacity held, RunnerAdopted), settle from the recorded exit status, stop
stray local processes then requeue, requeue, or keep the task RUNNING as *unknown* while its
platform cannot be asked (asked again with backoff, in a worker; settled only by an answer).
Runners that no RUNNING task claims are fenced before their task may run again, and slots held
by nobody are released, so a task never runs twice at the same time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..launchers.base import RunnerExit, RunnerLauncher, short_error
from ..launchers.procfs import kill_group
from ..launchers.proctree import runner_processes
from ..logging_setup import log_extra
from ..models import (
    AgentPool,
    EventType,
    PoolType,
    Runner,
    RunnerState,
    Slot,
    Task,
    TaskEvent,
    TaskState,
)
from .commands import Command, FenceOutcome, PlatformAnswer
from .parts import EngineParts
from .platforms import Platforms
from .reconciler import Action, Plan, PlatformView, Step, plan_reconcile, read_exit_status
from .runner_table import RunnerRecord
from .runs import run_number_of
from .settler import RunFacts
from .work_step import CommitJob, agent_summary, records_work

logger = logging.getLogger(__name__)


class Restart:
    """Acts on reconcile plans at start and on the platforms' later answers (engine thread;
    :meth:`reconcile` runs in ``start()`` before that thread exists)."""

    def __init__(self, parts: EngineParts, platforms: Platforms,
                 post: Callable[[Command], None], has_runner: Callable[[str], bool],
                 note: Callable[[Task], None],
                 fence: Callable[[RunnerRecord, FenceOutcome, str], None]) -> None:
        self._p = parts
        self._platforms = platforms
        self._post = post
        self._has_runner = has_runner
        self._note = note
        self._fence = fence
        self._expected: list[Task] | None = None  # RUNNING tasks read by expect()

    def expect(self) -> None:
        """Before the API serves: the runners of RUNNING tasks are expected (ADOPTING), so a
        heartbeat that comes before :meth:`reconcile` has found them is not told to stop."""
        self._expected = self._p.registry.list_tasks(state=TaskState.RUNNING)
        self._p.directory.expect(t.runner_id for t in self._expected if t.runner_id)

    def reconcile(self) -> None:
        """Match RUNNING tasks to live runners (adopt) or settle them."""
        running = self._expected
        self._expected = None
        if running is None:
            running = self._p.registry.list_tasks(state=TaskState.RUNNING)
        views = {pool.name: self._ask_platform(pool)
                 for pool in self._p.seed.pools.pools.values()}
        for view in views.values():
            if not view.known:
                self._p.reconciler.blind[view.pool.name] = view.error
        plan = plan_reconcile(running, views, self._candidates,
                              lambda t: read_exit_status(self._p.seed.runs_dir, t))
        self._carry_out(plan, time.time())
        self._p.directory.expected_done(keep=self._unknown_runner_ids())
        self._p.workspaces.release_leaked(self._has_runner)

    def _unknown_runner_ids(self) -> list[str]:
        """Runners of the tasks left unknown (their platform could not be asked yet)."""
        return [r.task.runner_id for r in self._p.reconciler.unknown.values()
                if r.task.runner_id]

    def _candidates(self, task: Task) -> list[str]:
        """The pools a task may run on (its skill's mapping)."""
        return [p.name for p in self._p.seed.pools.pools_for_skill(task.required_skill)]

    def _ask_platform(self, pool: AgentPool) -> PlatformView:
        """What the pool's platform shows now (blocking: at start, or in a worker)."""
        launcher = self._platforms.launcher_for(pool)
        if launcher is None:
            return PlatformView(pool, None, f"no launcher for pool {pool.name} of type "
                                            f"{pool.type.value}")
        try:
            return PlatformView(pool, tuple(launcher.reconcile(pool)))
        except Exception as exc:  # an unreachable platform: one line, pool unhealthy
            self._platforms.failed(pool, exc)
            return PlatformView(pool, None, short_error(exc))

    def _carry_out(self, plan: Plan, now: float) -> None:
        for step in plan.by_action(Action.ADOPT):
            assert step.runner is not None and step.pool is not None
            launcher = self._platforms.launcher_for(step.pool)
            assert launcher is not None
            self._forget_unknown(step.task.key)
            self._ensure_started_event(step.task, step.runner.handle)
            self._adopt(step.task, step.runner, launcher, step.pool)
        for step in plan.by_action(Action.SETTLE):
            self._forget_unknown(step.task.key)
            self._ensure_started_event(step.task, None)
            self._settle_from_status(step.task, dict(step.status or {}))
        local = plan.by_action(Action.FENCE_LOCAL)
        stuck = self._fence_untracked({s.task.runner_id for s in local if s.task.runner_id})
        for step in local:
            reason = stuck.get(step.task.runner_id or "")
            if reason:
                self._hold_unknown(Step(Action.UNKNOWN, step.task, pool=self._local_pool(
                    step.task), reason=reason), now)
            else:
                self._forget_unknown(step.task.key)
                self._requeue_after_restart(step.task)
        for step in plan.by_action(Action.REQUEUE):
            self._forget_unknown(step.task.key)
            self._requeue_after_restart(step.task)
        for step in plan.by_action(Action.UNKNOWN):
            self._hold_unknown(step, now)
        for runner, pool in plan.orphans:
            self._fence_orphan(runner, pool)

    def _ensure_started_event(self, task: Task, handle: str | None) -> None:
        """A run that ran has its RunnerStarted: a kill -9 between a launch and the batched
        write of that event loses it, so it is written now, marked as recovered."""
        rid = task.runner_id
        if not rid:
            return
        try:
            seen = self._p.registry.get_events(
                task_key=task.key, since=(task.started_at or 0.0) - 1.0,
                event_types=[EventType.RUNNER_STARTED])
        except Exception as exc:  # the start is only not recorded twice: say it, go on
            logger.warning("could not check the RunnerStarted of %s: %s", task.key, exc,
                           extra=log_extra(task=task.key))
            return
        if any(e.runner_id == rid for e in seen):
            return
        self._p.events.record(TaskEvent(
            event_type=EventType.RUNNER_STARTED, task_key=task.key, runner_id=rid,
            slot_id=task.assigned_slot, timestamp=task.started_at or time.time(),
            message=f"runner {rid} started ({handle or '?'}); recorded after a restart, its "
                    "first record was lost", details={"recovered": True, "handle": handle}))

    def _local_pool(self, task: Task) -> AgentPool:
        pools = [p for p in self._p.seed.pools.pools_for_skill(task.required_skill)
                 if p.type is PoolType.LOCAL_PROCESS]
        return pools[0] if pools else next(iter(self._p.seed.pools.pools.values()))

    # --- unknown tasks ---------------------------------------------------------------------
    def _hold_unknown(self, step: Step, now: float) -> None:
        first = step.task.key not in self._p.reconciler
        run = self._p.reconciler.hold(step, now)
        if first:
            self._p.admission.take(run.pool.name, run.task)
            run.holds_capacity = True
            self._note(step.task)
            logger.warning("%s stays RUNNING until pool %s answers: %s", step.task.key,
                           run.pool.name, step.reason,
                           extra=log_extra(task=step.task.key, pool=run.pool.name))
            self._p.events.record(TaskEvent(
                event_type=EventType.RUNNER_UNKNOWN, task_key=step.task.key,
                runner_id=step.task.runner_id, pool=run.pool.name,
                message=f"runner state unknown after restart: {step.reason}"))
        self._p.views.touch(step.task.key)

    def _forget_unknown(self, key: str) -> None:
        run = self._p.reconciler.resolve(key)
        if run is not None and run.holds_capacity:
            self._p.admission.give_back(run.pool.name, run.task)
            self._p.views.touch(key)

    def ask_again(self, now: float) -> None:
        """Ask the platforms of unknown tasks again, in a worker (it may block)."""
        for pool in self._p.reconciler.due(now):
            self._p.reconciler.asking.add(pool.name)

            def work(pool: AgentPool = pool) -> None:
                view = self._ask_platform(pool)
                self._post(PlatformAnswer(pool.name, view.runners, view.error))

            threading.Thread(target=work, name="necrocode-reconcile", daemon=True).start()

    def answered(self, answer: PlatformAnswer) -> None:
        """A platform answered about unknown tasks: settle those it can, keep the rest."""
        self._p.reconciler.asking.discard(answer.pool)
        pool = self._p.seed.pools.pools.get(answer.pool)
        if pool is None:
            return
        if answer.runners is None:
            self._p.reconciler.blind[answer.pool] = answer.error
        else:
            self._p.reconciler.blind.pop(answer.pool, None)
            self._platforms.set_health(answer.pool, True)  # it answered: reachable again
        views = {name: PlatformView(p, ()) for name, p in self._p.seed.pools.pools.items()}
        for name, error in self._p.reconciler.blind.items():
            views[name] = PlatformView(views[name].pool, None, error)
        if answer.runners is not None:
            mine = tuple(r for r in answer.runners if r.runner_id not in self._p.runners)
            views[answer.pool] = PlatformView(pool, mine)
        still: list[Task] = []
        gone: list[Task] = []
        for task in self._p.reconciler.tasks_of(answer.pool):
            current = self._p.book.get(task.key, task)
            (still if current.state is TaskState.RUNNING else gone).append(current)
        for task in gone:  # settled by someone else meanwhile: its runner, if alive, is fenced
            self._forget_unknown(task.key)
        plan = plan_reconcile(still, views, self._candidates,
                              lambda t: read_exit_status(self._p.seed.runs_dir, t))
        self._carry_out(plan, time.time())
        self._p.directory.expected_done(keep=self._unknown_runner_ids())

    # --- acting ----------------------------------------------------------------------------
    def _adopt(self, task: Task, runner: Runner, launcher: RunnerLauncher,
               pool: AgentPool) -> None:
        now = time.time()
        slot_id = task.assigned_slot or runner.slot_id
        slot = Slot(slot_id=slot_id or "", slot_path=runner.slot_path or "",
                    branch=task.reserved_branch) if slot_id else None
        if slot_id:
            self._p.workspaces.mark_in_use(slot_id, task.key)
        self._p.admission.take(pool.name, task)
        runner.state = RunnerState.RUNNING
        rec = RunnerRecord(runner=runner, task=task, pool=pool, launcher=launcher, slot=slot,
                           started_at=runner.started_at or now, last_sign=now,
                           attempt=run_number_of(task), adopted=True)
        self._p.runners.add(rec, last_seen=now)
        self._p.runners.flag_exit(runner.runner_id)  # it may have ended: poll it at once
        self._note(task)
        self._p.events.record(TaskEvent(
            event_type=EventType.RUNNER_ADOPTED, task_key=task.key,
            message=f"runner {runner.runner_id} ({runner.handle}) adopted after restart",
            runner_id=runner.runner_id, slot_id=slot_id, pool=pool.name,
        ))

    def _fence_orphan(self, runner: Runner, pool: AgentPool) -> None:
        """A live runner no RUNNING task claims: watch it and stop it; its task cannot start
        again before the stop is confirmed."""
        launcher = self._platforms.launcher_for(pool)
        if launcher is None or runner.runner_id in self._p.runners:
            return
        logger.warning("runner %s (%s) has no RUNNING task; stopping it", runner.runner_id,
                       runner.task_key, extra=log_extra(task=runner.task_key,
                                                        runner=runner.runner_id, pool=pool))
        known = self._p.book.get(runner.task_key)
        taskset, _, task_id = runner.task_key.partition("/")
        task = known or Task(id=task_id or runner.task_key, taskset=taskset, title="")
        now = time.time()
        rec = RunnerRecord(runner=runner, task=task, pool=pool, launcher=launcher, slot=None,
                           started_at=runner.started_at or now, last_sign=now,
                           attempt=runner.attempt or 1, adopted=True)
        self._p.admission.take(pool.name, task)
        self._p.runners.add(rec, last_seen=now)
        self._fence(rec, FenceOutcome.ORPHAN, "a runner of an earlier dispatcher that no "
                                              "RUNNING task claims")

    def _fence_untracked(self, runner_ids: set[str]) -> dict[str, str]:
        """Stop local processes of runners that cannot be adopted (the dispatcher died after
        starting them but before their runner record was written): found by their
        ``NECROCODE_RUNNER_ID``, their process group is stopped before the task is requeued.
        Returns the runner ids whose processes could not be stopped, with why."""
        stuck: dict[str, str] = {}
        if not runner_ids:
            return stuck
        groups: dict[int, str] = {}
        for pid, rid in runner_processes(runner_ids).items():
            try:
                groups.setdefault(os.getpgid(pid), rid)
            except OSError:
                continue
        for pgid, rid in groups.items():
            if pgid in (os.getpgrp(), 0, 1):
                continue
            logger.warning("runner %s (process group %d) runs without a runner record; "
                           "stopping it before its task is requeued", rid, pgid,
                           extra=log_extra(runner=rid))
            if kill_group(pgid, self._p.config.runner_stop_grace) == "stuck":
                stuck[rid] = f"process group {pgid} of runner {rid} survived SIGKILL"
        return stuck

    def _settle_from_status(self, task: Task, status: dict[str, Any]) -> None:
        """A RUNNING task whose run ended while the dispatcher was down and recorded how (a
        success in a repository slot has its work committed first, as a live one would)."""
        now = time.time()
        code = status.get("exit_code")
        if code == 0 and self._commit_recovered(task, status, now):
            return
        if task.assigned_slot:
            self._p.workspaces.release_now(task.assigned_slot, task.key)
        common: dict[str, Any] = {"task_key": task.key, "runner_id": task.runner_id,
                                  "slot_id": task.assigned_slot}
        if code == 0:
            event = TaskEvent(event_type=EventType.RUNNER_COMPLETED,
                              message="runner finished while the dispatcher was down (exit 0)",
                              details={"exit_code": 0, "recovered": True}, **common)
            self._p.settler.settle(task.key, TaskState.DONE, event, finished_at=now,
                                 next_attempt_at=None)
            return
        code_i = int(code) if isinstance(code, int | float) else None
        self._p.events.record(TaskEvent(
            event_type=EventType.RUNNER_FAILED,
            message=f"runner ended while the dispatcher was down (exit {code_i})",
            details={"exit_code": code_i, "recovered": True}, **common))
        self._p.settler.attempt_failed(task, TaskState.RUNNING, code_i,
                                     "exit_code" if code_i else "killed", f"exit code {code_i}")

    def _commit_recovered(self, task: Task, status: dict[str, Any], now: float) -> bool:
        """Hand a run that ended with exit 0 while no dispatcher watched to the WorkStep when
        its slot is a repository worktree still held for it; False otherwise."""
        slot = self._p.workspaces.held_slot(task.assigned_slot, task.key) \
            if task.assigned_slot else None
        if not records_work(slot):
            return False
        assert slot is not None
        pools = self._p.seed.pools.pools_for_skill(task.required_skill) \
            or list(self._p.seed.pools.pools.values())
        finished = status.get("finished_at")
        run = RunFacts(key=task.key, runner_id=task.runner_id or "", pool=pools[0],
                       slot_id=slot.slot_id, started_at=task.started_at or now,
                       attempt=run_number_of(task), report=dict(status))
        self._p.work.begin(CommitJob(
            run=run, task=task, slot=slot, summary=agent_summary(status), began_at=now,
            exit=RunnerExit(0, "exited", float(finished) if isinstance(finished, int | float)
                            else now), recovered=True))
        logger.info("%s ended with exit 0 while the dispatcher was down; recording its work",
                    task.key, extra=log_extra(task=task.key))
        self._p.views.touch(task.key)
        return True

    def _requeue_after_restart(self, task: Task) -> None:
        """A RUNNING task whose runner is gone without a trace: back to READY."""
        if task.assigned_slot:
            self._p.workspaces.release_now(task.assigned_slot, task.key)
        event = TaskEvent(event_type=EventType.TASK_REQUEUED, task_key=task.key,
                          runner_id=task.runner_id, slot_id=task.assigned_slot,
                          message="runner gone after a dispatcher restart, no exit status: "
                                  "back to READY (no attempt spent)")
        self._p.settler.settle(task.key, TaskState.READY, event, runner_id=None,
                             next_attempt_at=None)
