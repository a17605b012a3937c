"""Settler: the single writer of a run's outcome.

Every way a run ends — its runner exited, was fenced (lost, timed out, cancelled, shut down,
over budget), failed to launch, or was found ended after a restart — comes here once the runner
is known gone and its slot and capacity are released. The Settler decides what that means for
the task (**this is where a retry is decided**: :meth:`Settler.attempt_failed`), writes the
transition and its event, and counts it. A registry write that fails for any reason other than a
refusal is kept and tried again with backoff (flat, oldest first, a warning once per problem), so
a settlement is never lost and a task never stays RUNNING without a runner.

Runs that ended successfully in one engine iteration are written together (:meth:`batch`: one
registry transaction for all their DONE transitions); any other write first writes what the
batch holds, so the registry sees the settlements in the order they were decided.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..agents.supervisor import AttemptOutcome
from ..config import DispatcherConfig
from ..errors import InvalidTransitionError, TaskNotFoundError
from ..launchers.base import RunnerExit
from ..logging_setup import log_extra
from ..metrics import MetricsCollector
from ..models import AgentPool, EventType, Task, TaskEvent, TaskState, Usage
from ..registry._common import TransitionRequest
from ..retry import RetryManager
from .commands import FenceOutcome, WorkOutcome
from .event_log import EventLog

logger = logging.getLogger(__name__)

DEFERRED_FIRST_DELAY = 0.25  # seconds before a failed settlement write is tried again
DEFERRED_MAX_DELAY = 5.0


@dataclass(frozen=True)
class RunFacts:
    """What the Settler needs to know of one ended run."""

    key: str
    runner_id: str
    pool: AgentPool
    slot_id: str | None
    started_at: float
    attempt: int
    report: dict[str, Any] | None = None  # its completion report over the API, if any
    agent: AttemptOutcome | None = None  # what its coding agent said of it (None: no agent)

    def agent_updates(self, task: Task) -> dict[str, Any]:
        """The fields an agent's attempt adds to its task: usage summed over the attempts,
        its final message (for its dependents' prompts)."""
        if self.agent is None:
            return {}
        out: dict[str, Any] = {"usage": (task.usage or Usage()) + self.agent.usage}
        if self.agent.final_message:
            out["agent_summary"] = self.agent.final_message
        return out


@dataclass(frozen=True)
class _Queued:
    """A settlement held by an open :meth:`Settler.batch`."""

    what: str
    request: TransitionRequest
    write: Callable[[], Task]


@dataclass
class DeferredWrite:
    """A settlement write that failed and waits for another try."""

    what: str
    key: str | None
    write: Callable[[], Task]
    tries: int = 1
    next_try: float = 0.0
    problem: str = ""


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


class Settler:
    """Decides and writes how runs end (engine thread only)."""

    def __init__(self, config: DispatcherConfig, events: EventLog, retry: RetryManager,
                 metrics: MetricsCollector, on_written: Callable[[Task], None],
                 on_refused: Callable[[], None]) -> None:
        self._config = config
        self._events = events
        self._retry = retry
        self._metrics = metrics
        self._on_written = on_written
        self._on_refused = on_refused
        self._deferred: list[DeferredWrite] = []
        self._after: dict[str, Callable[[Task | None], None]] = {}  # see when_settled
        self._retried = 0
        self._batching = False
        self._queued: list[_Queued] = []  # DONE settlements of the open batch

    # --- counters and deferred writes ------------------------------------------------------
    @property
    def retried(self) -> int:
        """Attempts sent back for another try by this engine."""
        return self._retried

    @property
    def has_deferred(self) -> bool:
        return bool(self._deferred)

    def deferred(self) -> list[str]:
        """What the writes waiting for another try would record."""
        return [d.what for d in self._deferred]

    def next_deferred_at(self) -> float | None:
        return min((d.next_try for d in self._deferred), default=None)

    def drop_deferred(self) -> list[str]:
        """Stand down: forget the writes waiting for another try (the new owner reconciles
        those tasks); returns what they would have recorded."""
        dropped = [d.what for d in self._deferred]
        self._deferred = []
        for key in list(self._after):  # what waited for them is let go
            self._settled(key, None)
        return dropped

    def retry_deferred(self, now: float) -> None:
        """Try again the failed writes whose time has come (oldest first)."""
        due = [d for d in self._deferred if d.next_try <= now]
        if not due:
            return
        self._deferred = [d for d in self._deferred if d.next_try > now]
        for item in due:
            self._write(item.what, item.write, item.key, retry_of=item)

    def write(self, what: str, write: Callable[[], Task], key: str | None = None) -> Task | None:
        """Run one registry write that settles a task: refusals (the task moved on, or is gone)
        are logged and dropped; any other failure is kept and tried again."""
        return self._write(what, write, key)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the DONE settlements decided inside the block and write them in one
        transaction when it ends (the block's other writes write them first)."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            self.flush()

    def flush(self) -> None:
        """Write the settlements the batch holds: one transaction; should the registry refuse
        the whole of it, each is written on its own (with the usual retries)."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        if len(queued) == 1:  # alone: the usual write (and its fallbacks)
            self._write(queued[0].what, queued[0].write, queued[0].request.key)
            return
        try:
            results = self._events.transition_many([q.request for q in queued])
        except Exception:  # nothing was written: one by one, each kept for retry on failure
            for q in queued:
                self._write(q.what, q.write, q.request.key)
            return
        for q, result in zip(queued, results, strict=True):
            key = q.request.key
            if isinstance(result, Task):
                self._on_written(result)
                self._settled(key, result)
            else:
                logger.warning("%s refused: %s", q.what, result, extra=log_extra(task=key))
                self._on_refused()
                self._settled(key, None)

    def _write(self, what: str, write: Callable[[], Task], key: str | None,
               retry_of: DeferredWrite | None = None) -> Task | None:
        self.flush()
        try:
            task = write()
        except (InvalidTransitionError, TaskNotFoundError) as exc:
            logger.warning("%s refused: %s", what, exc, extra=log_extra(task=key))
            self._on_refused()
            self._settled(key, None)
            return None
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            item = retry_of or DeferredWrite(what, key, write, tries=0)
            item.tries += 1
            delay = min(DEFERRED_MAX_DELAY, DEFERRED_FIRST_DELAY * 2 ** min(item.tries - 1, 8))
            item.next_try = time.time() + delay
            if problem != item.problem:  # once per problem, not once per try
                logger.warning("%s failed (%s); trying again every few seconds", what, problem,
                               extra=log_extra(task=key))
                item.problem = problem
            self._deferred.append(item)
            return None
        if retry_of is not None:
            logger.info("%s done after %d tries", what, retry_of.tries + 1,
                        extra=log_extra(task=key))
        self._on_written(task)
        self._settled(key, task)
        return task

    def when_settled(self, key: str, then: Callable[[Task | None], None]) -> None:
        """Call ``then`` once the next settlement write of ``key`` has landed (with the task)
        or was refused (None), also when it lands only after retries."""
        self._after[key] = then

    def _settled(self, key: str | None, task: Task | None) -> None:
        then = self._after.pop(key, None) if key is not None else None
        if then is not None:
            then(task)

    # --- outcomes --------------------------------------------------------------------------
    @staticmethod
    def exit_code(run: RunFacts, result: RunnerExit) -> int | None:
        """The run's exit code: the platform's, else the one its completion report gave."""
        code = result.exit_code
        if code is None and run.report is not None:
            reported = run.report.get("exit_code")
            code = int(reported) if isinstance(reported, int | float) else None
        return code

    def succeeded(self, run: RunFacts, result: RunnerExit) -> bool:
        """**How success is judged**: by the coding agent's own result where it has one (a
        CLI may exit 0 when it failed), else the run exited 0 (its work is then committed
        before DONE, see :meth:`work_recorded`)."""
        agent = run.agent
        if agent is not None and (agent.budget_reason or agent.succeeded is False):
            return False
        return self.exit_code(run, result) == 0

    @staticmethod
    def reported_exit(run: RunFacts) -> RunnerExit:
        """The exit of a runner that reported its result and was then stopped."""
        code = (run.report or {}).get("exit_code")
        return RunnerExit(int(code) if isinstance(code, int | float) else None, "reported",
                          time.time())

    def runner_ended(self, run: RunFacts, task: Task, result: RunnerExit) -> None:
        """The platform says the runner is gone: DONE when it succeeded, else a failed
        attempt (a budget crossed: without retry)."""
        now = time.time()
        code = self.exit_code(run, result)
        duration = max(0.0, (result.finished_at or now) - run.started_at)
        common = self._common(run, duration)
        extra = run.agent_updates(task)
        if self.succeeded(run, result):
            event = TaskEvent(event_type=EventType.RUNNER_COMPLETED,
                              message=f"exited 0 after {duration:.1f}s",
                              details={"exit_code": 0, "attempt": run.attempt}, **common)
            updates = {"finished_at": now, "last_error": None, "next_attempt_at": None,
                       **extra}
            if self._batching:  # written with the other runs that ended meanwhile
                self._queued.append(_Queued(
                    f"moving {run.key} to done",
                    TransitionRequest(run.key, TaskState.DONE, TaskState.RUNNING, event, updates),
                    lambda: self._events.transition(run.key, TaskState.DONE,
                                                    expected=TaskState.RUNNING, event=event,
                                                    **updates)))
            else:
                self.settle(run.key, TaskState.DONE, event, **updates)
            self._metrics.record_finish(task, run.pool, "done", duration)
            return
        agent = run.agent
        if agent is not None and agent.budget_reason:
            message, reason, retryable = agent.budget_reason, "budget", False
        elif agent is not None and agent.succeeded is False:
            message = f"{agent.agent or 'agent'}: {agent.reason}" if agent.reason \
                else f"{agent.agent or 'agent'} reported failure"
            reason, retryable = "agent_failed", True
        else:
            message = f"exit code {code}" if code is not None else (result.reason or "killed")
            reason = "exit_code" if code is not None and code > 0 else "killed"
            retryable = True
        what = message if not result.reason or result.reason == "exited" \
            else f"{message} ({result.reason})" if code is not None else message
        if result.oom_killed:
            message += " (out of memory)"
        self._events.record(TaskEvent(
            event_type=EventType.RUNNER_FAILED, message=f"runner failed: {what}",
            details={"exit_code": code, "reason": what, "attempt": run.attempt,
                     "oom_killed": result.oom_killed}, **common))
        self._metrics.record_finish(task, run.pool, "failed", duration)
        self.attempt_failed(task, TaskState.RUNNING, code, reason, message,
                            retryable=retryable, updates=extra)

    def work_recorded(self, run: RunFacts, task: Task, result: RunnerExit,
                      outcome: WorkOutcome, *, recovered: bool = False,
                      summary: str = "") -> Task | None:
        """A successful run's work was committed (or could not be): DONE with the work, a
        failed attempt without retry when it changed nothing and ``work.on_no_changes`` is
        ``fail``, a retryable failed attempt when git could not record it. The DONE version,
        else None. ``summary``: the agent's final message, kept for its dependents' prompts."""
        from ..repo_pool.work import WorkVerdict

        now = time.time()
        duration = max(0.0, (result.finished_at or now) - run.started_at)
        work = outcome.result
        if outcome.error is not None:
            self._metrics.record_finish(task, run.pool, "failed", duration)
            self.attempt_failed(task, TaskState.RUNNING, None, "work_error",
                                f"its work could not be recorded: {outcome.error}",
                                updates=run.agent_updates(task))
            return None
        if work is not None:
            self._events.record(work.event())
        if work is not None and work.verdict is WorkVerdict.FAILED:
            self._metrics.record_finish(task, run.pool, "failed", duration)
            self.attempt_failed(task, TaskState.RUNNING, None, "no_changes",
                                f"its run {work.summary} (work.on_no_changes: fail)",
                                retryable=False,
                                updates={**work.task_updates(), **run.agent_updates(task)})
            return None
        how = "finished while the dispatcher was down (exit 0)" if recovered \
            else f"exited 0 after {duration:.1f}s"
        details: dict[str, Any] = {"exit_code": 0, "attempt": run.attempt}
        if recovered:
            details["recovered"] = True
        event = TaskEvent(event_type=EventType.RUNNER_COMPLETED,
                          message=how + (f"; {work.summary}" if work is not None else ""),
                          details=details, **self._common(run, duration))
        done = self.settle(run.key, TaskState.DONE, event, finished_at=now, last_error=None,
                           next_attempt_at=None, from_base=False,
                           **{**({"agent_summary": summary} if summary else {}),
                              **run.agent_updates(task)},
                           **(work.task_updates() if work else {}))
        self._metrics.record_finish(task, run.pool, "done", duration)
        return done

    def fenced(self, run: RunFacts, task: Task, outcome: FenceOutcome, reason: str) -> bool:
        """A fenced runner is known gone: settle its task by why it was stopped. False for an
        orphan (someone else settled the task: nothing is written)."""
        now = time.time()
        duration = max(0.0, now - run.started_at)
        if outcome is FenceOutcome.REPORTED:
            self.runner_ended(run, task, self.reported_exit(run))
            return True
        if outcome in (FenceOutcome.LOST, FenceOutcome.TIMEOUT, FenceOutcome.BUDGET):
            kind = {FenceOutcome.LOST: "heartbeat_timeout", FenceOutcome.TIMEOUT: "timeout",
                    FenceOutcome.BUDGET: "budget"}[outcome]
            self._metrics.record_finish(task, run.pool, outcome.value if outcome is not
                                        FenceOutcome.BUDGET else "failed", duration)
            self.attempt_failed(task, TaskState.RUNNING, None, kind, reason,
                                retryable=outcome is not FenceOutcome.BUDGET,
                                updates=run.agent_updates(task))
            return True
        if outcome is FenceOutcome.CANCELLED:
            self._metrics.record_finish(task, run.pool, "cancelled", duration)
            event = TaskEvent(event_type=EventType.TASK_CANCELLED, task_key=run.key,
                              message=f"cancelled; runner {run.runner_id} stopped",
                              runner_id=run.runner_id, pool=run.pool.name, duration=duration,
                              slot_id=run.slot_id)
            self.settle(run.key, TaskState.CANCELLED, event, finished_at=now, runner_id=None,
                        **run.agent_updates(task))
            return True
        if outcome is FenceOutcome.SHUTDOWN:
            event = TaskEvent(event_type=EventType.TASK_REQUEUED, task_key=run.key,
                              message="dispatcher stopping: runner stopped, task back to READY "
                                      "(no attempt spent)",
                              runner_id=run.runner_id, pool=run.pool.name, duration=duration)
            self.settle(run.key, TaskState.READY, event, runner_id=None, next_attempt_at=None,
                        **run.agent_updates(task))
            return True
        return False  # ORPHAN

    def launch_failed(self, task: Task, pool: AgentPool, slot_id: str | None, message: str,
                      *, retryable: bool) -> None:
        """The runner of an assigned (RUNNING) task could not start."""
        self._events.record(TaskEvent(
            event_type=EventType.RUNNER_LAUNCH_FAILED, task_key=task.key, message=message,
            slot_id=slot_id, pool=pool.name))
        self.attempt_failed(task, TaskState.RUNNING, None, "launch_error", message,
                            retryable=retryable)

    def attempt_failed(self, task: Task, current: TaskState, exit_code: int | None,
                       reason: str, message: str, *, retryable: bool = True,
                       updates: Mapping[str, Any] | None = None) -> Task | None:
        """Count one failed attempt and decide: back to READY after a backoff, or FAILED.

        ``current`` is the state the task is in (RUNNING after a run, READY when it failed
        before its assignment). Not retryable (a bad task definition, a budget) fails at once.
        """
        now = time.time()
        key = task.key
        attempts = task.attempts + 1
        spent = task.copy(attempts=attempts)
        retry = retryable and self._retry.should_retry(spent, exit_code=exit_code, reason=reason)
        self._metrics.record_failure(reason)
        clear: dict[str, Any] = {"runner_id": None} if current is TaskState.RUNNING else {}
        clear.update(updates or {})
        write: Callable[[], Task]
        if retry:
            at = float(self._retry.next_attempt_at(spent, now))
            event = TaskEvent(
                event_type=EventType.TASK_RETRIED, task_key=key, timestamp=now,
                message=f"attempt {attempts} failed ({message}); retry at {_clock(at)}",
                details={"attempt": attempts, "next_attempt_at": at,
                         "exit_code": exit_code, "reason": reason})
            if current is TaskState.READY:
                def write() -> Task:
                    return self._events.update(key, event=event, attempts=attempts,
                                               next_attempt_at=at, last_error=message)
            else:
                def write() -> Task:
                    return self._events.transition(
                        key, TaskState.READY, expected=current, event=event,
                        attempts=attempts, next_attempt_at=at, last_error=message,
                        finished_at=now, **clear)
            self._retried += 1
            self._metrics.record_retry(spent)
        else:
            why = "not retryable" if not retryable or attempts < self._retry.max_attempts_for(
                spent) else f"after {attempts} attempt(s)"
            failed = TaskEvent(
                event_type=EventType.TASK_FAILED, task_key=key, timestamp=now,
                message=f"failed {why}: {message}",
                details={"attempts": attempts, "exit_code": exit_code, "reason": reason})

            def write() -> Task:
                return self._events.transition(
                    key, TaskState.FAILED, expected=current, event=failed, attempts=attempts,
                    last_error=message, finished_at=now, next_attempt_at=None, **clear)
        return self._write(f"recording the failure of {key}", write, key)

    def settle(self, key: str, state: TaskState, event: TaskEvent,
               **updates: Any) -> Task | None:
        """Move a RUNNING task to ``state`` with ``event``; the new version (None when the
        write was refused or deferred)."""
        return self._write(f"moving {key} to {state.value}", lambda: self._events.transition(
            key, state, expected=TaskState.RUNNING, event=event, **updates), key)

    def requeue_unstarted(self, key: str) -> None:
        """An assignment committed but its runner never started: back to READY, no attempt."""
        event = TaskEvent(event_type=EventType.TASK_REQUEUED, task_key=key,
                          message="assignment committed but its runner was never started: "
                                  "back to READY (no attempt spent)")
        self._write(f"requeueing {key}", lambda: self._events.transition(
            key, TaskState.READY, expected=TaskState.RUNNING, runner_id=None, event=event), key)

    def cancel_unstarted(self, key: str, state: TaskState, message: str) -> None:
        """Cancel a task that has no runner (a cancel that came while it was launching)."""
        self._write(f"cancelling {key}", lambda: self._events.transition(
            key, TaskState.CANCELLED, expected=state, runner_id=None,
            event=TaskEvent(event_type=EventType.TASK_CANCELLED, task_key=key,
                            message=message)), key)

    @staticmethod
    def _common(run: RunFacts, duration: float) -> dict[str, Any]:
        return {"task_key": run.key, "runner_id": run.runner_id, "slot_id": run.slot_id,
                "pool": run.pool.name, "duration": duration}
