"""WorkStep and the Settler's side of it: a successful run's work recorded before DONE, with a
fake finish_work (the real one runs in tests/integration/test_work_engine.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

from necrocode.dispatcher.config import DispatcherConfig, WorkConfig
from necrocode.dispatcher.engine.commands import Command, WorkCommitted, WorkOutcome
from necrocode.dispatcher.engine.event_log import EventLog
from necrocode.dispatcher.engine.settler import RunFacts, Settler
from necrocode.dispatcher.engine.work_step import CommitJob, WorkStep, agent_summary, records_work
from necrocode.dispatcher.events import EventRecorder
from necrocode.dispatcher.launchers.base import RunnerExit
from necrocode.dispatcher.metrics import MetricsCollector
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolType,
    Slot,
    Task,
    Taskset,
    TaskState,
)
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.repo_pool import RepoPoolError, WorkResult, WorkVerdict
from necrocode.dispatcher.retry import RetryManager

POOL = AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)
SLOT = Slot(slot_id="repo/0", slot_path="/nowhere", repo="/origin", branch="feature/task-ts-t",
            base="b" * 40)


def result(verdict: WorkVerdict = WorkVerdict.DONE, files: tuple[str, ...] = ("a.txt",)
           ) -> WorkResult:
    return WorkResult(task_key="ts/t", branch="feature/task-ts-t", base="b" * 40,
                      head="h" * 40, commits=len(files), files_changed=files, committed=True,
                      verdict=verdict)


def job(task: Task, finished_at: float | None = None) -> CommitJob:
    run = RunFacts(key=task.key, runner_id="r-1", pool=POOL, slot_id=SLOT.slot_id,
                   started_at=time.time() - 2, attempt=1, report={"summary": "did it"})
    return CommitJob(run=run, task=task, slot=SLOT, summary="did it", began_at=time.time(),
                     exit=RunnerExit(0, "exited", finished_at or time.time()))


def running(registry: MemoryRegistry) -> Task:
    registry.submit_taskset(Taskset(name="ts", tasks=[Task(id="t", title="t")]))
    return registry.transition("ts/t", TaskState.RUNNING, expected=TaskState.READY,
                               runner_id="r-1")


def settler(registry: MemoryRegistry) -> Settler:
    cfg = DispatcherConfig(retry_max_attempts=3, retry_backoff_base=2.0, retry_jitter=0.0)
    return Settler(cfg, EventLog(EventRecorder(registry)), RetryManager(cfg),
                   MetricsCollector(cfg), on_written=lambda t: None, on_refused=lambda: None)


def test_the_step_runs_finish_work_in_a_worker_and_posts_once() -> None:
    posted: list[Command] = []
    gate = threading.Event()
    seen: list[tuple[str, str]] = []

    def finish(slot: Slot, task: Task, summary: str, work: WorkConfig) -> WorkResult:
        gate.wait(10)
        seen.append((threading.current_thread().name, summary))
        return result()

    step = WorkStep(WorkConfig(), posted.append, finish)
    step.start()
    try:
        task = Task(id="t", taskset="ts", title="t", state=TaskState.RUNNING)
        step.begin(job(task))
        step.begin(job(task))  # a second begin of the same task is refused
        assert "ts/t" in step and len(step) == 1
        gate.set()
        deadline = time.monotonic() + 10
        while not posted and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        step.shutdown()
    assert len(posted) == 1 and isinstance(posted[0], WorkCommitted)
    assert posted[0].outcome.result == result()
    assert seen == [(seen[0][0], "did it")] and seen[0][0].startswith("necrocode-commit")
    done = step.finished("ts/t")
    assert done is not None and "ts/t" not in step and step.committed == 1
    assert step.finished("ts/t") is None  # never settled twice


def test_a_git_failure_is_an_outcome_not_an_exception() -> None:
    posted: list[Command] = []

    def broken(slot: Slot, task: Task, summary: str, work: WorkConfig) -> WorkResult:
        raise RepoPoolError("slot repo/0 of ts/t: /nowhere is not a git worktree any more")

    step = WorkStep(WorkConfig(), posted.append, broken)  # not started: runs on this thread
    step.begin(job(Task(id="t", taskset="ts", title="t")))
    assert isinstance(posted[0], WorkCommitted)
    assert "not a git worktree" in (posted[0].outcome.error or "")


def test_done_with_the_work_fields_and_its_event() -> None:
    reg = MemoryRegistry()
    task = running(reg)
    done = settler(reg).work_recorded(job(task).run, task, job(task).exit,
                                      WorkOutcome(result=result()))
    assert done is not None and done.state is TaskState.DONE
    assert (done.branch, done.head, done.commits, done.files_changed) == (
        "feature/task-ts-t", "h" * 40, 1, ("a.txt",))
    kinds = [e.event_type for e in reg.get_events(task_key="ts/t")]
    assert kinds[-2:] == [EventType.WORK_RECORDED, EventType.RUNNER_COMPLETED]


def test_changed_nothing_with_fail_is_failed_without_retry() -> None:
    reg = MemoryRegistry()
    task = running(reg)
    out = settler(reg).work_recorded(job(task).run, task, job(task).exit,
                                     WorkOutcome(result=result(WorkVerdict.FAILED, ())))
    assert out is None
    failed = reg.get_task("ts/t")
    assert failed.state is TaskState.FAILED and failed.attempts == 1
    assert failed.branch == "feature/task-ts-t"
    assert failed.last_error == ("its run changed nothing on feature/task-ts-t "
                                 "(work.on_no_changes: fail)")


def test_a_git_failure_is_a_retryable_failed_attempt() -> None:
    reg = MemoryRegistry()
    task = running(reg)
    s = settler(reg)
    assert s.work_recorded(job(task).run, task, job(task).exit,
                           WorkOutcome(error="git commit failed: disk full")) is None
    again = reg.get_task("ts/t")
    assert again.state is TaskState.READY and again.attempts == 1 and s.retried == 1
    assert "its work could not be recorded: git commit failed" in (again.last_error or "")


def test_a_scratch_slot_records_nothing() -> None:
    reg = MemoryRegistry()
    task = running(reg)
    done = settler(reg).work_recorded(job(task).run, task, job(task).exit, WorkOutcome())
    assert done is not None and done.state is TaskState.DONE and done.head is None
    assert records_work(Slot(slot_id="scratch/0", slot_path="/x")) is False
    assert records_work(SLOT) is True


def test_the_agents_summary_comes_from_its_report() -> None:
    assert agent_summary({"summary": " Added a.txt "}) == "Added a.txt"
    assert agent_summary({"agent": {"final_message": "Done."}}) == "Done."
    report: dict[str, Any] = {"exit_code": 0}
    assert agent_summary(report) == "" and agent_summary(None) == ""
