"""Launching runners: the engine's side (capacity, bookkeeping) and the launch workers' side.

A scheduled task becomes "launching": a worker thread reserves its workspace slot, moves it
READY -> RUNNING by compare-and-set with its TaskAssigned event, and starts its runner on the
platform; the engine thread then registers the runner (:meth:`LaunchMixin._launched`). Workers
touch no engine state: they only call the thread-safe registry, repo pool and launcher, and post
a command with the outcome. A launch failure releases the slot and the capacity and counts as a
failed attempt (retried with backoff, or FAILED when not retryable): never stuck in RUNNING.
"""

from __future__ import annotations

import logging
import time

from .engine.commands import FenceOutcome, LaunchFinished, LaunchOutcome, LaunchResult
from .engine.runner_table import DirectoryState, RunnerRecord
from .engine_runners import RunnerMixin, next_run_number
from .engine_state import PendingLaunch
from .errors import InvalidTransitionError, RunnerLaunchError, TaskNotFoundError
from .launchers.base import new_runner_id
from .logging_setup import log_extra
from .models import AgentPool, EventType, RunnerState, Slot, Task, TaskEvent, TaskState

logger = logging.getLogger(__name__)


class LaunchMixin(RunnerMixin):
    """Starting runners (mixed into DispatcherCore)."""

    def _launch(self, task: Task, pool: AgentPool, now: float) -> bool:
        """Start one scheduled task (capacity already acquired by the scheduler).

        The slow part — workspace slot, the READY -> RUNNING compare-and-set with its
        TaskAssigned event, the platform launch — runs in a launch worker; the engine holds the
        task as "launching" meanwhile (capacity kept, not queued) and settles it in
        :meth:`_launched`.
        """
        key = task.key
        if key in self._slot_releases:  # its previous slot is still being cleaned: wait for it
            self._admission.give_back(pool.name, task)
            self._admission.wait_for_slot(task)
            return False
        launcher = self._launcher_for(pool)
        if launcher is None:
            self._admission.give_back(pool.name, task)
            self._admission.launch_failed(pool.name, "no launcher")
            self._settler.attempt_failed(task, TaskState.READY, None, "launch_error",
                                 f"no launcher for pool {pool.name!r} of type "
                                 f"{pool.type.value}; is its platform available (docker SDK, "
                                 "kubernetes client)?", retryable=True)
            return False
        attempt = next_run_number(self.runs_dir, task)
        pending = PendingLaunch(task=task, pool=pool, slot=None, launcher=launcher,
                                attempt=attempt, runner_id=new_runner_id(task, attempt),
                                assigned_at=now, ready_at=task.ready_at or task.created_at)
        self._launching[key] = pending
        self._launching_ids[pending.runner_id] = key
        self._directory.set(pending.runner_id, DirectoryState.LAUNCHING)
        self._views.touch(key)  # leaves the queued views, shows as LAUNCHING
        self._views.mark()
        workers = self._launch_pool
        if workers is None:
            self._launched(key, self._prepare_and_launch(pending))
        else:  # fork+exec, container create, git worktrees overlap in worker threads
            workers.submit(self._launch_in_worker, pending)
        return True

    def _prepare_and_launch(self, pending: PendingLaunch) -> LaunchOutcome:
        """Slot, compare-and-set, launch (in a launch worker; touches no engine state)."""
        task, pool = pending.task, pending.pool
        key = task.key
        try:
            slot = self.repo_pool.allocate_slot(task)
        except Exception as exc:
            return LaunchOutcome(LaunchResult.SLOT_ERROR, error=exc)
        if slot is None:
            return LaunchOutcome(LaunchResult.NO_SLOT)
        now = time.time()
        assigned = TaskEvent(
            event_type=EventType.TASK_ASSIGNED, task_key=key, timestamp=now,
            message=f"assigned to pool {pool.name}, slot {slot.slot_id} "
                    f"(attempt {pending.attempt})",
            runner_id=pending.runner_id, slot_id=slot.slot_id, pool=pool.name,
            details={"attempt": pending.attempt, "branch": slot.branch},
        )
        try:
            running = self.events.transition(
                key, TaskState.RUNNING, expected=TaskState.READY, event=assigned,
                runner_id=pending.runner_id, assigned_slot=slot.slot_id,
                reserved_branch=slot.branch, started_at=now, next_attempt_at=None,
            )
        except Exception as exc:
            # Did it commit before the error came back (an answer lost after the commit, then a
            # retry refused because the task had moved)? Ask the registry: RUNNING with our
            # runner id is ours to launch; otherwise it was not assigned; no answer: unknown.
            refused = isinstance(exc, InvalidTransitionError | TaskNotFoundError)
            try:
                current: Task | None = self.registry.get_task(key)
            except TaskNotFoundError:
                current = task.copy(state=TaskState.CANCELLED)  # gone: nothing to launch
            except Exception:
                current = None
            if current is not None and current.state is TaskState.RUNNING \
                    and current.runner_id == pending.runner_id:
                logger.warning("assignment of %s committed although the registry reported %s",
                               key, exc, extra=log_extra(task=key, runner=pending.runner_id,
                                                         pool=pool))
                running = current
            else:
                self._release_slot_now(slot.slot_id, key)
                kind = LaunchResult.REFUSED if refused or (
                    current is not None and current.state is not TaskState.READY) \
                    else LaunchResult.REGISTRY_ERROR if current is not None \
                    else LaunchResult.REGISTRY_UNKNOWN
                return LaunchOutcome(kind, error=exc)
        try:
            runner = pending.launcher.launch(running, slot, pool, attempt=pending.attempt)
        except Exception as exc:
            return LaunchOutcome(LaunchResult.LAUNCH_ERROR, running=running, slot=slot,
                                 error=exc)
        return LaunchOutcome(LaunchResult.RUNNER, running=running, slot=slot, runner=runner)

    def _launch_in_worker(self, pending: PendingLaunch) -> None:
        try:
            outcome = self._prepare_and_launch(pending)
        except BaseException as exc:  # never leave the engine waiting for this launch
            outcome = LaunchOutcome(LaunchResult.REGISTRY_ERROR, error=exc)
        self._post(LaunchFinished(pending.task.key, outcome))

    def _launched(self, key: str, outcome: LaunchOutcome) -> None:
        """A launch finished in a worker: register the runner, or settle what went wrong."""
        pending = self._launching.pop(key, None)
        if pending is None:
            return
        self._launching_ids.pop(pending.runner_id, None)
        self._directory.drop(pending.runner_id)
        task, pool = pending.task, pending.pool
        extra = log_extra(task=key, runner=pending.runner_id, pool=pool)
        self._views.touch(key)
        self._views.mark()
        if outcome.result is not LaunchResult.RUNNER \
                and outcome.result is not LaunchResult.LAUNCH_ERROR:
            self._admission.give_back(pool.name, task)
            if pending.stop_outcome is FenceOutcome.CANCELLED \
                    and outcome.result is not LaunchResult.REFUSED:
                self._cancel_unstarted(key, "cancelled by an operator before it started")
            elif outcome.result is LaunchResult.NO_SLOT:
                self._admission.wait_for_slot(task)
            elif outcome.result is LaunchResult.SLOT_ERROR:
                logger.warning("no workspace for %s: %s", key, outcome.error, extra=extra)
                self._settler.attempt_failed(task, TaskState.READY, None, "launch_error",
                                     f"workspace slot could not be prepared: {outcome.error}",
                                     retryable=bool(getattr(outcome.error, "retryable", True)))
            elif outcome.result is LaunchResult.REFUSED:  # it moved on: place it as it is now
                logger.info("not launching %s: %s", key, outcome.error, extra=extra)
                self._registry_dirty = True
                current = self._book.get(key)
                if current is not None and current.state is not TaskState.READY:
                    self._admission.place(current, time.time())
            elif outcome.result is LaunchResult.REGISTRY_ERROR:  # still READY there: offer it again
                logger.error("not launching %s: %s", key, outcome.error, extra=extra)
                self._admission.enqueue(task)
            else:  # unknown whether the assignment committed: find out when the registry answers
                logger.error("not launching %s: %s (its assignment may have committed)", key,
                             outcome.error, extra=extra)
                self._unsure[key] = pending.runner_id
            return
        running, slot = outcome.running, outcome.slot
        assert running is not None and slot is not None
        self._note_task(running)
        self._last_pool[key] = pool.name
        self._registry_dirty = True
        self._counters["assigned"] += 1
        self.metrics.record_assignment(running, pool)
        if outcome.result is LaunchResult.LAUNCH_ERROR or outcome.runner is None:
            err = outcome.error
            self._launch_error(running, pool, slot, err if isinstance(err, RunnerLaunchError)
                               else RunnerLaunchError(f"{type(err).__name__}: {err}",
                                                      pool=pool.name))
            if pending.stop_outcome is FenceOutcome.CANCELLED:
                self._cancel_unstarted(key, "cancelled by an operator; its launch had failed")
            return
        runner = outcome.runner
        if runner.runner_id != pending.runner_id:  # the launcher named it itself
            rid = runner.runner_id
            named = self._settler.write(f"recording runner {rid} of {key}",
                                         lambda: self.registry.update_task(key, runner_id=rid),
                                         key)
            if named is not None:
                running = named
        started = runner.started_at or pending.assigned_at
        rec = RunnerRecord(runner=runner, task=running, pool=pool, launcher=pending.launcher,
                           slot=slot, started_at=started, last_sign=time.time(),
                           attempt=pending.attempt)
        runner.state = RunnerState.RUNNING
        self._runners.add(rec)
        self._admission.launch_succeeded(pool.name)
        self._event_log.defer(TaskEvent(
            event_type=EventType.RUNNER_STARTED, task_key=key, timestamp=started,
            message=f"runner {runner.runner_id} started ({runner.handle or '?'})",
            runner_id=runner.runner_id, slot_id=slot.slot_id, pool=pool.name,
            details={"attempt": pending.attempt, "handle": runner.handle,
                     "log_path": runner.log_path},
        ))
        self.metrics.record_start(running, pool, max(0.0, started - pending.ready_at))
        self._runners.flag_exit(runner.runner_id)  # it may have ended before we knew it
        if pending.early_report is not None:
            self._on_report(runner.runner_id, pending.early_report)
        if pending.stop_outcome is not None:
            self._fence(rec, pending.stop_outcome, pending.stop_reason)

    def _resolve_unsure(self) -> None:
        """Assignments whose commit is unknown: a RUNNING task with that runner id goes back to
        READY (no runner was started; no attempt spent); a READY one is queued again."""
        for key, runner_id in list(self._unsure.items()):
            try:
                task = self.registry.get_task(key)
            except TaskNotFoundError:
                del self._unsure[key]
                continue
            except Exception:
                continue  # still no answer: try again later
            del self._unsure[key]
            if task.state is TaskState.RUNNING and task.runner_id == runner_id \
                    and not self._has_runner(key):
                self._requeue_unstarted(key)
            elif task.state is TaskState.READY:
                self._note_task(task)
                self._admission.enqueue(task)

    def _requeue_unstarted(self, key: str) -> None:
        self._settler.requeue_unstarted(key)

    def _cancel_unstarted(self, key: str, message: str) -> None:
        """Cancel a task that has no runner (a cancel that arrived while it was launching)."""
        task = self._book.get(key)
        if task is None or task.state.terminal or task.state is TaskState.RUNNING:
            return
        self._admission.remove(key)
        self._settler.cancel_unstarted(key, task.state, message)

    def _launch_error(self, task: Task, pool: AgentPool, slot: Slot | None,
                      exc: RunnerLaunchError) -> None:
        """A runner could not start: release everything, then retry with backoff or fail."""
        if slot is not None:
            self._release_slot(task.key, slot.slot_id)
        self._admission.give_back(pool.name, task)
        extra = log_extra(task=task.key, pool=pool.name)
        if _task_fault(task, pool, exc):  # the task's mistake: the pool stays healthy
            logger.warning("task %s cannot run in pool %s: %s", task.key, pool.name, exc,
                           extra=extra)
        else:
            self._admission.launch_failed(pool.name, str(exc))
            self.metrics.record_launch_error(pool.name)
            self._counters["launch_errors"] += 1
            logger.warning("launch of %s in pool %s failed: %s", task.key, pool.name, exc,
                           extra=extra)
        self._settler.launch_failed(task, pool, slot.slot_id if slot else None, str(exc),
                                    retryable=exc.retryable)
        self._admission.slot_may_have_freed()


def _task_fault(task: Task, pool: AgentPool, exc: RunnerLaunchError) -> bool:
    """A launch error caused by the task itself (no command, and the pool has no
    agent_command): it fails the task and does not count against the pool's health."""
    return not exc.retryable and not task.command and not (
        pool.agent_command or (pool.config or {}).get("agent_command"))
