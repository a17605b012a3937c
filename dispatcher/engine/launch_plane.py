"""LaunchPlane: turns a scheduling decision into a running runner. The only writer of
assignments.

A decision becomes a *launch*: a worker thread reserves the workspace slot, moves the task
READY -> RUNNING by compare-and-set with its TaskAssigned event, and starts the runner on its
platform; the engine thread then registers the runner (:meth:`LaunchPlane.finished`). Workers
touch no engine state: they call only the thread-safe registry, Repo Pool and launcher, and post
a :class:`~.commands.LaunchFinished`. Whatever goes wrong is settled here: no slot (the task
waits for one), a refused compare-and-set (the task moved on), a registry that failed (offered
again) or that may have committed (asked again until it answers), a launch error (slot and
capacity released, a failed attempt). A task is never left RUNNING without a runner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.supervisor import AgentRuns
from ..config import WorkConfig
from ..errors import InvalidTransitionError, RunnerLaunchError, TaskNotFoundError
from ..events import EventRecorder
from ..launchers.base import RunnerLauncher, new_runner_id
from ..logging_setup import log_extra
from ..metrics import MetricsCollector
from ..models import AgentPool, EventType, RunnerState, Slot, Task, TaskEvent, TaskState
from ..registry._common import TransitionRequest
from ..registry.base import TaskRegistry
from ..repo_pool.start import StartConflict, plan_start
from .admission import Admission
from .commands import Command, FenceOutcome, LaunchFinished, LaunchOutcome, LaunchResult
from .event_log import EventLog
from .group_commit import GroupCommit
from .runner_table import DirectoryState, RunnerDirectory, RunnerRecord, RunnerTable
from .runs import next_run_number
from .settler import Settler
from .taskbook import TaskBook, ViewChanges
from .usage import UsageLedger
from .workspaces import Workspaces

logger = logging.getLogger(__name__)

LAUNCH_WORKERS = 4  # threads that start runners in parallel (fork+exec, container create)


@dataclass
class PendingLaunch:
    """A runner being started in a launch worker (capacity held, not queued)."""

    task: Task  # as it was READY; the RUNNING version comes back in the LaunchOutcome
    pool: AgentPool
    launcher: RunnerLauncher
    attempt: int
    runner_id: str
    assigned_at: float
    ready_at: float
    stop_outcome: FenceOutcome | None = None  # cancelled / shutdown asked while launching
    stop_reason: str = ""
    early_report: dict[str, Any] | None = None  # completion report that came first


@dataclass(frozen=True)
class LaunchParts:
    """The components a launch works with."""

    registry: TaskRegistry
    recorder: EventRecorder  # thread-safe: the worker's TaskAssigned transition
    events: EventLog
    admission: Admission
    settler: Settler
    runners: RunnerTable
    directory: RunnerDirectory
    workspaces: Workspaces
    book: TaskBook
    views: ViewChanges
    metrics: MetricsCollector
    runs_dir: Path
    work: WorkConfig  # where a branch starts (its dependencies' work merged)
    agents: AgentRuns  # coding agents' streams, read from launch to exit
    usage: UsageLedger  # the budget a run starts with


class LaunchPlane:
    """Launches in flight and assignments not known to have committed (engine thread)."""

    def __init__(self, parts: LaunchParts, post: Callable[[Command], None],
                 launcher_for: Callable[[AgentPool], RunnerLauncher | None],
                 note: Callable[[Task], None], registry_changed: Callable[[], None],
                 fence: Callable[[RunnerRecord, FenceOutcome, str], None],
                 may_act: Callable[[], bool] = lambda: True) -> None:
        self._p = parts
        self._post = post
        self._launcher_for = launcher_for
        self._note = note  # a task version the registry returned
        self._registry_changed = registry_changed  # someone else moved a task: poll
        self._fence = fence
        self._may_act = may_act  # this replica owns the registry (thread-safe)
        self._commits = GroupCommit(parts.recorder)  # the workers' assignments, batched
        self._launching: dict[str, PendingLaunch] = {}  # task key -> launch
        self._ids: dict[str, str] = {}  # runner id -> task key
        self._unsure: dict[str, str] = {}  # task key -> runner id of an unknown assignment
        self._last_pool: dict[str, str] = {}  # task key -> pool of its last runner
        # task key -> updated_at of the RUNNING version a worker committed (set in the worker,
        # read and dropped on the engine thread): its echo in the change feed is ours
        self._committed: dict[str, float | None] = {}
        self._workers: ThreadPoolExecutor | None = None
        self.assigned = 0  # assignments made by this engine
        self.launch_errors = 0  # launches the platform refused

    def start(self) -> None:
        self._workers = ThreadPoolExecutor(max_workers=LAUNCH_WORKERS,
                                           thread_name_prefix="necrocode-launch")

    def shutdown(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None

    # --- questions -------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self._launching

    def __len__(self) -> int:
        return len(self._launching)

    def pending(self) -> Iterable[PendingLaunch]:
        return list(self._launching.values())

    def launching_keys(self) -> list[str]:
        return list(self._launching)

    @property
    def has_unsure(self) -> bool:
        return bool(self._unsure)

    def unsure(self) -> dict[str, str]:
        return dict(self._unsure)

    def last_pool(self, key: str) -> str | None:
        return self._last_pool.get(key)

    def own_echo(self, key: str, state: str, updated_at: float | None) -> bool:
        """Whether a change in the registry's feed is the echo of our own assignment, which
        the engine's ``_apply_change`` would do nothing with: the RUNNING version a launch
        worker of ours committed (the engine notes it when the launch is done), or the one the
        TaskBook holds while the runner is ours. A RUNNING written by anyone else (our
        compare-and-set was then refused), a retry's READY, a settlement or a cancel are not."""
        if state != "running" or updated_at is None:
            return False
        if key in self._committed:
            return self._committed[key] == updated_at
        task = self._p.book.get(key)
        return task is not None and task.updated_at == updated_at \
            and task.state is TaskState.RUNNING and self._p.runners.has_task(key)

    # --- requests while launching ----------------------------------------------------------
    def request_stop(self, key: str, outcome: FenceOutcome, reason: str, *,
                     only_if_unset: bool = False) -> PendingLaunch | None:
        """Stop the runner of a launch in flight as soon as it has started."""
        pending = self._launching.get(key)
        if pending is None or (only_if_unset and pending.stop_outcome is not None):
            return pending
        pending.stop_outcome, pending.stop_reason = outcome, reason
        return pending

    def early_report(self, runner_id: str, report: dict[str, Any]) -> bool:
        """A completion report that came before the launch was registered: keep it."""
        key = self._ids.get(runner_id)
        if key is None:
            return False
        self._launching[key].early_report = report
        return True

    # --- launching -------------------------------------------------------------------------
    def launch(self, task: Task, pool: AgentPool, now: float) -> bool:
        """Start one scheduled task (its capacity is already held); False when it did not
        go to a worker."""
        p = self._p
        key = task.key
        if p.workspaces.releasing(key):  # its previous slot is still being cleaned
            p.admission.give_back(pool.name, task)
            p.admission.wait_for_slot(task)
            return False
        launcher = self._launcher_for(pool)
        if launcher is None:
            p.admission.give_back(pool.name, task)
            p.admission.launch_failed(pool.name, "no launcher")
            p.settler.attempt_failed(task, TaskState.READY, None, "launch_error",
                                     f"no launcher for pool {pool.name!r} of type "
                                     f"{pool.type.value}; is its platform available (docker "
                                     "SDK, kubernetes client)?")
            return False
        attempt = next_run_number(p.runs_dir, task)
        pending = PendingLaunch(task=task, pool=pool, launcher=launcher, attempt=attempt,
                                runner_id=new_runner_id(task, attempt), assigned_at=now,
                                ready_at=task.ready_at or task.created_at)
        self._launching[key] = pending
        self._ids[pending.runner_id] = key
        p.directory.set(pending.runner_id, DirectoryState.LAUNCHING)
        p.views.touch(key)  # leaves the queued views, shows as launching
        if self._workers is None:
            self.finished(key, self._prepare_and_launch(pending))
        else:  # fork+exec, container create, git worktrees overlap in worker threads
            self._workers.submit(self._launch_in_worker, pending)
        return True

    def _launch_in_worker(self, pending: PendingLaunch) -> None:
        try:
            outcome = self._prepare_and_launch(pending)
        except BaseException as exc:  # never leave the engine waiting for this launch
            outcome = LaunchOutcome(LaunchResult.REGISTRY_ERROR, error=exc)
        self._post(LaunchFinished(pending.task.key, outcome))

    def _prepare_and_launch(self, pending: PendingLaunch) -> LaunchOutcome:
        """Slot, compare-and-set, launch (in a launch worker; touches no engine state)."""
        p = self._p
        task, pool = pending.task, pending.pool
        key = task.key
        try:
            plan = plan_start(task, p.registry.get_tasks, p.work, from_base=task.from_base) \
                if task.repo else None
            slot = p.workspaces.pool.allocate_slot(task, plan)
        except Exception as exc:
            return LaunchOutcome(LaunchResult.SLOT_ERROR, error=exc)
        if isinstance(slot, StartConflict):  # its dependencies' work does not merge
            return LaunchOutcome(LaunchResult.START_CONFLICT, conflict=slot)
        if not isinstance(slot, Slot):
            return LaunchOutcome(LaunchResult.NO_SLOT)
        if not self._may_act():  # read right before the write: a lost Lease assigns nothing
            p.workspaces.release_now(slot.slot_id, key)
            return LaunchOutcome(LaunchResult.NOT_OWNER)
        now = time.time()
        assigned = TaskEvent(
            event_type=EventType.TASK_ASSIGNED, task_key=key, timestamp=now,
            message=f"assigned to pool {pool.name}, slot {slot.slot_id} "
                    f"(attempt {pending.attempt})",
            runner_id=pending.runner_id, slot_id=slot.slot_id, pool=pool.name,
            details={"attempt": pending.attempt, "branch": slot.branch})
        try:
            running = self._commits.transition(TransitionRequest(
                key, TaskState.RUNNING, TaskState.READY, assigned, {
                    "runner_id": pending.runner_id, "assigned_slot": slot.slot_id,
                    "reserved_branch": slot.branch, "started_at": now,
                    "next_attempt_at": None}))
        except Exception as exc:
            found = self._committed_anyway(pending, exc)
            if isinstance(found, LaunchResult):
                p.workspaces.release_now(slot.slot_id, key)
                return LaunchOutcome(found, error=exc)
            running = found
        self._committed[key] = running.updated_at
        try:
            runner = pending.launcher.launch(running, slot, pool, attempt=pending.attempt)
        except Exception as exc:
            return LaunchOutcome(LaunchResult.LAUNCH_ERROR, running=running, slot=slot,
                                 error=exc)
        return LaunchOutcome(LaunchResult.RUNNER, running=running, slot=slot, runner=runner)

    def _committed_anyway(self, pending: PendingLaunch, exc: Exception) -> Task | LaunchResult:
        """The assignment raised: did it commit before the error came back (an answer lost
        after the commit, then a retry refused because the task had moved)? RUNNING with our
        runner id is ours to launch; otherwise it was refused or failed; no answer: unknown."""
        key = pending.task.key
        refused = isinstance(exc, InvalidTransitionError | TaskNotFoundError)
        try:
            current: Task | None = self._p.registry.get_task(key)
        except TaskNotFoundError:
            return LaunchResult.REFUSED  # gone: nothing to launch
        except Exception:
            current = None
        if current is not None and current.state is TaskState.RUNNING \
                and current.runner_id == pending.runner_id:
            logger.warning("assignment of %s committed although the registry reported %s", key,
                           exc, extra=log_extra(task=key, runner=pending.runner_id,
                                                pool=pending.pool))
            return current
        if refused or (current is not None and current.state is not TaskState.READY):
            return LaunchResult.REFUSED
        return LaunchResult.REGISTRY_ERROR if current is not None \
            else LaunchResult.REGISTRY_UNKNOWN

    def finished(self, key: str, outcome: LaunchOutcome) -> None:
        """A launch worker is done: register the runner, or settle what went wrong."""
        pending = self._launching.pop(key, None)
        if pending is None:
            return
        p = self._p
        self._ids.pop(pending.runner_id, None)
        self._committed.pop(key, None)
        p.directory.drop(pending.runner_id)
        p.views.touch(key)
        if outcome.result in (LaunchResult.RUNNER, LaunchResult.LAUNCH_ERROR):
            self._assigned(pending, outcome)
        else:
            self._not_assigned(pending, outcome)

    def _not_assigned(self, pending: PendingLaunch, outcome: LaunchOutcome) -> None:
        p = self._p
        task, pool = pending.task, pending.pool
        key = task.key
        extra = log_extra(task=key, runner=pending.runner_id, pool=pool)
        p.admission.give_back(pool.name, task)
        result = outcome.result
        if pending.stop_outcome is FenceOutcome.CANCELLED and result is not LaunchResult.REFUSED:
            self.cancel_unstarted(key, "cancelled by an operator before it started")
        elif result is LaunchResult.NO_SLOT:
            p.admission.wait_for_slot(task)
        elif result is LaunchResult.START_CONFLICT and outcome.conflict is not None:
            # a state, not a failure: no attempt spent; it waits for the operator
            if p.admission.hold_conflict(task, outcome.conflict.reason):
                logger.warning("%s cannot start: %s", key, outcome.conflict.reason, extra=extra)
                p.events.record(outcome.conflict.event())
        elif result is LaunchResult.SLOT_ERROR:
            logger.warning("no workspace for %s: %s", key, outcome.error, extra=extra)
            p.settler.attempt_failed(task, TaskState.READY, None, "launch_error",
                                     f"workspace slot could not be prepared: {outcome.error}",
                                     retryable=bool(getattr(outcome.error, "retryable", True)))
        elif result is LaunchResult.REFUSED:  # it moved on: place it as it is now
            logger.info("not launching %s: %s", key, outcome.error, extra=extra)
            self._registry_changed()
            current = p.book.get(key)
            if current is not None and current.state is not TaskState.READY:
                p.admission.place(current, time.time())
        elif result is LaunchResult.NOT_OWNER:  # a standby now: the leader will run it
            logger.info("not launching %s: this dispatcher is no longer the leader", key,
                        extra=extra)
            p.admission.enqueue(task)
        elif result is LaunchResult.REGISTRY_ERROR:  # still READY there: offer it again
            logger.error("not launching %s: %s", key, outcome.error, extra=extra)
            p.admission.enqueue(task)
        else:  # unknown whether the assignment committed: find out when the registry answers
            logger.error("not launching %s: %s (its assignment may have committed)", key,
                         outcome.error, extra=extra)
            self._unsure[key] = pending.runner_id

    def _assigned(self, pending: PendingLaunch, outcome: LaunchOutcome) -> None:
        p = self._p
        pool = pending.pool
        key = pending.task.key
        running, slot = outcome.running, outcome.slot
        assert running is not None and slot is not None
        self._note(running)
        self._last_pool[key] = pool.name
        self.assigned += 1
        p.metrics.record_assignment(running, pool)
        if outcome.result is LaunchResult.LAUNCH_ERROR or outcome.runner is None:
            err = outcome.error
            self._launch_error(running, pool, slot, err if isinstance(err, RunnerLaunchError)
                               else RunnerLaunchError(f"{type(err).__name__}: {err}",
                                                      pool=pool.name))
            if pending.stop_outcome is FenceOutcome.CANCELLED:
                self.cancel_unstarted(key, "cancelled by an operator; its launch had failed")
            return
        runner = outcome.runner
        if not self._may_act():  # the Lease was lost meanwhile: the new leader adopts it
            logger.warning("runner %s of %s started as the Lease was lost; left to the new "
                           "leader", runner.runner_id, key, extra=log_extra(task=key))
            p.admission.give_back(pool.name, pending.task)
            return
        if runner.runner_id != pending.runner_id:  # the launcher named it itself
            rid = runner.runner_id
            named = p.settler.write(f"recording runner {rid} of {key}",
                                    lambda: p.registry.update_task(key, runner_id=rid), key)
            if named is not None:
                running = named
        started = runner.started_at or pending.assigned_at
        rec = RunnerRecord(runner=runner, task=running, pool=pool, launcher=pending.launcher,
                           slot=slot, started_at=started, last_sign=time.time(),
                           attempt=pending.attempt)
        runner.state = RunnerState.RUNNING
        p.runners.add(rec)
        p.agents.started(running, pool, runner, budget=p.usage.budget_for(running))
        p.admission.launch_succeeded(pool.name)
        p.events.defer(TaskEvent(
            event_type=EventType.RUNNER_STARTED, task_key=key, timestamp=started,
            message=f"runner {runner.runner_id} started ({runner.handle or '?'})",
            runner_id=runner.runner_id, slot_id=slot.slot_id, pool=pool.name,
            details={"attempt": pending.attempt, "handle": runner.handle,
                     "log_path": runner.log_path}))
        p.metrics.record_start(running, pool, max(0.0, started - pending.ready_at))
        p.runners.flag_exit(runner.runner_id)  # it may have ended before we knew it
        if pending.early_report is not None:
            p.runners.report(runner.runner_id, pending.early_report, time.time())
        if pending.stop_outcome is not None:
            self._fence(rec, pending.stop_outcome, pending.stop_reason)

    def _launch_error(self, task: Task, pool: AgentPool, slot: Slot | None,
                      exc: RunnerLaunchError) -> None:
        """A runner could not start: release everything, then retry with backoff or fail."""
        p = self._p
        if slot is not None:
            p.workspaces.release(task.key, slot)
        p.admission.give_back(pool.name, task)
        extra = log_extra(task=task.key, pool=pool.name)
        if _task_fault(task, pool, exc):  # the task's mistake: the pool stays healthy
            logger.warning("task %s cannot run in pool %s: %s", task.key, pool.name, exc,
                           extra=extra)
        else:
            p.admission.launch_failed(pool.name, str(exc))
            p.metrics.record_launch_error(pool.name)
            self.launch_errors += 1
            logger.warning("launch of %s in pool %s failed: %s", task.key, pool.name, exc,
                           extra=extra)
        p.settler.launch_failed(task, pool, slot.slot_id if slot else None, str(exc),
                                retryable=exc.retryable)
        p.admission.slot_may_have_freed()

    # --- follow-ups ------------------------------------------------------------------------
    def cancel_unstarted(self, key: str, message: str) -> None:
        """Cancel a task that has no runner (a cancel that came while it was launching)."""
        p = self._p
        task = p.book.get(key)
        if task is None or task.state.terminal or task.state is TaskState.RUNNING:
            return
        p.admission.remove(key)
        p.settler.cancel_unstarted(key, task.state, message)

    def resolve_unsure(self, has_runner: Callable[[str], bool]) -> None:
        """Assignments whose commit is unknown: a RUNNING task with that runner id goes back to
        READY (no runner was started; no attempt spent); a READY one is queued again."""
        p = self._p
        for key, runner_id in list(self._unsure.items()):
            try:
                task = p.registry.get_task(key)
            except TaskNotFoundError:
                del self._unsure[key]
                continue
            except Exception:
                continue  # still no answer: try again later
            del self._unsure[key]
            if task.state is TaskState.RUNNING and task.runner_id == runner_id \
                    and not has_runner(key):
                p.settler.requeue_unstarted(key)
            elif task.state is TaskState.READY:
                self._note(task)
                p.admission.enqueue(task)


def _task_fault(task: Task, pool: AgentPool, exc: RunnerLaunchError) -> bool:
    """A launch error caused by the task itself (no command, and the pool has no
    agent_command): it fails the task and does not count against the pool's health."""
    return not exc.retryable and not task.command and not (
        pool.agent_command or (pool.config or {}).get("agent_command"))
