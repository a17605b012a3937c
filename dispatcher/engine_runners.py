"""Runner lifecycle inside the engine: launch, exit, fence, release, retry decision, adoption.

Every method here runs on the engine thread (or in ``start()`` before that thread exists). The
rules (DESIGN.md "Sources of truth"): a task goes READY -> RUNNING by compare-and-set *before*
its runner starts; a runner's slot and pool capacity are released exactly once, after the runner
is known to be gone; a lost or timed-out runner is stopped (fenced) before its task is offered
again, so a task never runs twice at the same time.
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .engine.commands import FenceOutcome, SlotReleased, StopConfirmed, StopUnconfirmed
from .engine.settler import RunFacts
from .engine_state import EngineBase, RunnerRecord
from .launchers.base import RunnerExit, RunnerLauncher, attempt_dir
from .logging_setup import log_extra
from .models import (
    AgentPool,
    EventType,
    PoolType,
    RunnerState,
    Task,
    TaskEvent,
    TaskState,
)

logger = logging.getLogger(__name__)

EXIT_STATUS_FILE = "exit_status.json"


def liveness_mode(pool: AgentPool) -> str:
    """How a pool's runners show they are alive: ``process`` (a live process is enough; the
    default of local-process pools) or ``log`` (log growth or heartbeats; the default of
    docker and kubernetes pools, whose runners heartbeat through the wrapper)."""
    mode = (pool.config or {}).get("liveness")
    if mode in ("process", "log"):
        return str(mode)
    return "process" if pool.type is PoolType.LOCAL_PROCESS else "log"


_DEADLOCK_STATES = (TaskState.FAILED, TaskState.CANCELLED)
_RUN_IN_ID = re.compile(r"-a(\d+)-[0-9a-f]+$")


def next_run_number(runs_dir: Path, task: Task) -> int:
    """The number of the task's next run: one more than any run it already had, so a task
    retried by an operator (attempts reset to 0) never reuses, and overwrites, the attempt
    directory (log, exit status) of an earlier run. Equal to ``attempts + 1`` for a task that
    was never reset: the runner contract's NECROCODE_ATTEMPT counts the task's runs."""
    number = task.attempts + 1
    try:
        names = os.listdir(attempt_dir(runs_dir, task, 1).parent)
    except OSError:
        return number
    for name in names:
        if name.startswith("attempt-") and name[8:].isdigit():
            number = max(number, int(name[8:]) + 1)
    return number


def run_number_of(task: Task) -> int:
    """The run number of a RUNNING task's current runner (from its runner id), else
    ``attempts + 1``."""
    match = _RUN_IN_ID.search(task.runner_id or "")
    return int(match.group(1)) if match else task.attempts + 1


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

    # --- slots -----------------------------------------------------------------------------
    def _release_slot_now(self, slot_id: str, key: str | None = None) -> None:
        try:
            self.repo_pool.release_slot(slot_id)
        except Exception:
            logger.exception("slot %s could not be released", slot_id,
                             extra=log_extra(task=key))

    def _release_slot(self, key: str, slot_id: str) -> None:
        """Release a slot after its runner is gone: in a worker (git cleanup can be slow);
        the task cannot start again before its old slot is released."""
        workers = self._stopper
        if workers is None:
            self._release_slot_now(slot_id, key)
            return
        self._slot_releases[key] = self._slot_releases.get(key, 0) + 1

        def work() -> None:
            self._release_slot_now(slot_id, key)
            self._post(SlotReleased(key))

        workers.submit(work)

    def _slot_released(self, key: str) -> None:
        left = self._slot_releases.get(key, 1) - 1
        if left > 0:
            self._slot_releases[key] = left
        else:
            self._slot_releases.pop(key, None)
        self._requeue_no_slot()

    def _on_report(self, runner_id: str, report: dict[str, Any]) -> None:
        """A completion report over the API: poll the platform now (and fence it later if it
        does not exit)."""
        rec = self._runners.get(runner_id)
        if rec is None:
            key = self._launching_ids.get(runner_id)
            if key is not None:  # reported before its launch was registered: keep it
                self._launching[key].early_report = report
            return
        rec.report = report
        rec.reported_at = time.time()
        rec.last_sign = rec.reported_at
        self.runner_monitor.touch(runner_id)
        self._flagged_exits.add(runner_id)

    # --- exits -----------------------------------------------------------------------------
    def _check_exits(self, runner_ids: Iterable[str]) -> None:
        """Poll the platform for the given runners and finish those that ended."""
        for rid in list(runner_ids):
            rec = self._runners.get(rid)
            if rec is None or rec.stopping:
                continue
            try:
                result = rec.launcher.poll(rec.runner)
            except Exception:
                logger.exception("polling runner %s failed", rid,
                                 extra=log_extra(task=rec.key, runner=rid, pool=rec.pool))
                continue
            if result is not None:
                self._runner_ended(rec, result)

    def _runner_ended(self, rec: RunnerRecord, result: RunnerExit) -> None:
        """The platform says the runner is gone: release it, then the Settler decides."""
        task = self._book.get(rec.key, rec.task)
        self._release(rec)
        self._settler.runner_ended(run_facts(rec), task, result)

    def _release(self, rec: RunnerRecord) -> None:
        """Give back the runner's slot and pool capacity, exactly once."""
        if rec.released:
            return
        rec.released = True
        self._runners.pop(rec.runner_id, None)
        if self._by_task.get(rec.key) == rec.runner_id:
            del self._by_task[rec.key]
        self.runner_monitor.remove_runner(rec.runner_id)
        try:
            rec.launcher.release(rec.runner)
        except Exception:
            logger.exception("launcher could not release runner %s", rec.runner_id,
                             extra=log_extra(task=rec.key, runner=rec.runner_id,
                                             pool=rec.pool))
        if rec.slot is not None and rec.slot.slot_id:
            self._release_slot(rec.key, rec.slot.slot_id)
        self.pool_manager.release(rec.pool.name, rec.task)
        runtime = max(0.0, time.time() - rec.started_at)
        self.scheduler.record_usage(rec.task.tenant, runtime)
        self._sched_dirty = True
        self._views.touch(rec.key)
        self._views.mark()
        self._requeue_no_slot()

    def _requeue_no_slot(self) -> None:
        """A slot may have freed: offer the tasks that waited for one again."""
        if not self._no_slot:
            return
        waiting, self._no_slot = self._no_slot, {}
        for key, task in waiting.items():
            current = self._book.get(key, task)
            if current.state is TaskState.READY and key not in self._by_task:
                self._enqueue(current)

    def _enqueue(self, task: Task) -> None:
        if task.key not in self.queue:
            self.queue.enqueue(task)
        self._sched_dirty = True
        self._views.touch(task.key)
        self._views.mark()

    # --- liveness, timeouts, fencing -------------------------------------------------------
    def _check_liveness(self, now: float) -> None:
        """Signs of life, task timeouts, lost heartbeats, stuck reporters.

        A sign of life is a heartbeat over the API or a new line in the runner's log. For pools
        whose liveness is ``process`` (the default of local-process pools, R8.1: supervised
        directly) a process that is still alive (checked just before, by the exit poll) counts
        as a sign of life too, so only the task's ``timeout`` catches a hang; a runner that sends
        heartbeats (the agent_runner wrapper) is judged by them. ``liveness: log`` asks for log
        growth or heartbeats (the rule of docker and kubernetes pools).
        """
        grace = self.config.runner_stop_grace
        for rec in list(self._runners.values()):
            if rec.stopping:
                continue
            if rec.heartbeats == 0 and liveness_mode(rec.pool) == "process":
                rec.last_sign = now
                rec.rev += 1
                self._views.touch(rec.key)
                self._views.mark()
                self.runner_monitor.touch(rec.runner_id, now)
            log_path = rec.runner.log_path
            if log_path:
                try:
                    size = os.stat(log_path).st_size
                except OSError:
                    size = rec.log_size
                if size != rec.log_size:
                    rec.log_size = size
                    rec.last_sign = now
                    rec.rev += 1
                    self.runner_monitor.touch(rec.runner_id, now)
                    self._views.touch(rec.key)
                    self._views.mark()
            if rec.reported_at is not None:  # it reported its result: only let it exit
                if now - rec.reported_at > grace:
                    self._fence(rec, FenceOutcome.REPORTED, "reported completion but did not exit")
                continue
            timeout = self._book.get(rec.key, rec.task).timeout
            if timeout and now - rec.started_at > timeout:
                self._fence(rec, FenceOutcome.TIMEOUT,
                            f"ran longer than its timeout of {timeout:g}s",
                            EventType.RUNNER_TIMED_OUT)
                continue
        for rid in self.runner_monitor.check_heartbeats():
            late = self._runners.get(rid)
            if late is None or late.stopping or late.reported_at is not None:
                continue
            self._counters["heartbeat_timeouts"] += 1
            self.metrics.record_heartbeat_timeout(late.pool.name)
            age = now - late.last_sign
            self._fence(late, FenceOutcome.LOST, f"no sign of life for {age:.1f}s "
                        f"(heartbeat_timeout {self.config.heartbeat_timeout:g}s)",
                        EventType.RUNNER_LOST)

    def _fence(self, rec: RunnerRecord, outcome: FenceOutcome, reason: str,
               event_type: EventType | None = None) -> None:
        """Stop a runner in a worker thread; the engine finishes it when it is gone."""
        if rec.stopping:
            return
        rec.stopping = True
        rec.fence_outcome = outcome
        rec.fence_reason = reason
        if outcome in (FenceOutcome.CANCELLED, FenceOutcome.SHUTDOWN):
            rec.state = RunnerState.CANCELLED
        elif outcome in (FenceOutcome.LOST, FenceOutcome.TIMEOUT, FenceOutcome.ORPHAN,
                         FenceOutcome.BUDGET):
            rec.state = RunnerState.LOST
        rec.rev += 1
        self._views.touch(rec.key)
        self._views.mark()
        if event_type is not None:
            self._event_log.record(TaskEvent(
                event_type=event_type, task_key=rec.key, message=reason, runner_id=rec.runner_id,
                slot_id=rec.slot.slot_id if rec.slot else None, pool=rec.pool.name,
                duration=max(0.0, time.time() - rec.started_at),
            ))
        logger.info("stopping runner %s of %s: %s", rec.runner_id, rec.key, reason,
                    extra=log_extra(task=rec.key, runner=rec.runner_id, pool=rec.pool))
        grace = self.config.runner_stop_grace
        stopper = self._stopper
        rid = rec.runner_id
        if stopper is None:  # not running: stop inline, once
            ok, result, _why = self._stop_now(rec, grace)
            if ok:
                self._fenced(rid, result)
            return
        abort = self._fence_abort

        def work() -> None:
            # A stop that fails (platform unreachable) is tried again, with a growing pause:
            # the runner is "gone" only when a stop succeeded, never on an error.
            delay = 0.2
            attempt = 0
            while True:
                attempt += 1
                ok, result, why = self._stop_now(rec, grace)
                if ok:
                    self._post(StopConfirmed(rid, result))
                    return
                self._post(StopUnconfirmed(rid, why, attempt, time.time() + delay))
                if abort.wait(delay):  # the engine is shutting down: the next start adopts it
                    return
                delay = min(delay * 2, 10.0)

        stopper.submit(work)

    @staticmethod
    def _stop_now(rec: RunnerRecord, grace: float) -> tuple[bool, RunnerExit | None, str]:
        """One stop of the runner: (confirmed gone, its exit, why not). An unconfirmed stop (or
        one that raised) keeps the runner, its slot and capacity; the fence tries again."""
        try:
            result = rec.launcher.stop(rec.runner, grace)
        except Exception as exc:
            logger.warning("stopping runner %s failed; it is kept (and fenced again): %s",
                           rec.runner_id, exc, exc_info=True,
                           extra=log_extra(task=rec.key, runner=rec.runner_id, pool=rec.pool))
            return False, None, f"{type(exc).__name__}: {exc}"
        if not result.confirmed:
            return False, None, result.reason or "the platform did not confirm the stop"
        return True, result.exit, ""

    def _stop_unconfirmed(self, note: StopUnconfirmed) -> None:
        """A stop was not confirmed: the runner keeps everything it holds; say so (a warning
        on the first try and when the reason changes, the reason in the snapshot)."""
        rec = self._runners.get(note.runner_id)
        if rec is None:
            return
        if note.reason != rec.stop_problem:
            logger.warning("stop of runner %s of %s not confirmed (try %d; again at %s): %s",
                           rec.runner_id, rec.key, note.attempt, _clock(note.retry_at),
                           note.reason, extra=log_extra(task=rec.key, runner=rec.runner_id,
                                                        pool=rec.pool))
        rec.stop_problem = note.reason
        rec.progress = f"stopping: not confirmed: {note.reason}"
        rec.rev += 1
        self._views.touch(rec.key)
        self._views.mark()

    def _fenced(self, runner_id: str, result: RunnerExit | None) -> None:
        """A fenced runner is known gone: release it and settle its task by the fence's
        outcome."""
        rec = self._runners.get(runner_id)
        if rec is None:
            return
        outcome = rec.fence_outcome or FenceOutcome.LOST
        task = self._book.get(rec.key, rec.task)
        self._release(rec)
        if not self._settler.fenced(run_facts(rec), task, outcome, rec.fence_reason):
            # an orphan: the task was changed by someone else; nothing to write, but it may
            # be READY again (reset by another tool): offer it as it is now
            current = self._book.get(rec.key)
            if current is not None:
                self._place(current, time.time())

    # --- queue placement and delayed (backoff) tasks ---------------------------------------
    def _place(self, task: Task, now: float) -> None:
        """Put a task without a runner where its state says: queued, in backoff, waiting for a
        slot, or nowhere (not READY)."""
        key = task.key
        if key in self._by_task:
            return
        if task.state is not TaskState.READY:
            if key in self.queue:
                self.queue.remove(key)
                self._sched_dirty = True
            self._no_slot.pop(key, None)
            return
        if key in self._no_slot:
            self._no_slot[key] = task
            return
        if task.next_attempt_at and task.next_attempt_at > now:
            if key in self.queue:
                self.queue.remove(key)
            self._push_delayed(task)
            return
        self.queue.enqueue(task)  # new, or replaces the queued copy (keeps its FIFO place)
        self._sched_dirty = True

    def _push_delayed(self, task: Task) -> None:
        heapq.heappush(self._delayed, (float(task.next_attempt_at or 0.0), task.key))
        self._views.touch(task.key)
        self._views.mark()

    def _release_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, key = heapq.heappop(self._delayed)
            task = self._book.get(key)
            if task is None or task.state is not TaskState.READY or key in self._by_task:
                continue
            if task.next_attempt_at and task.next_attempt_at > now:
                self._push_delayed(task)
                continue
            self._enqueue(task)
