"""The Settler: how runs end is decided and written once, and a failing write is kept."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.engine.commands import FenceOutcome
from necrocode.dispatcher.engine.event_log import EventLog
from necrocode.dispatcher.engine.settler import RunFacts, Settler
from necrocode.dispatcher.events import EventRecorder
from necrocode.dispatcher.launchers.base import RunnerExit
from necrocode.dispatcher.metrics import MetricsCollector
from necrocode.dispatcher.models import AgentPool, EventType, PoolType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.retry import RetryManager


class DiskFull(MemoryRegistry):
    """A registry whose writes fail with ENOSPC while ``full`` is set."""

    full = False

    def transition(self, *args: Any, **kwargs: Any) -> Task:
        if self.full:
            raise OSError(28, "No space left on device")
        return super().transition(*args, **kwargs)


POOL = AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)


def make(registry: MemoryRegistry, **config: Any) -> tuple[Settler, list[Task]]:
    cfg = DispatcherConfig(retry_max_attempts=2, retry_backoff_base=2.0, retry_jitter=0.0,
                           **config)
    written: list[Task] = []
    settler = Settler(cfg, EventLog(EventRecorder(registry)), RetryManager(cfg),
                      MetricsCollector(cfg), on_written=written.append, on_refused=lambda: None)
    return settler, written


def running(registry: MemoryRegistry, task_id: str = "t") -> Task:
    registry.submit_taskset(Taskset(name="ts", tasks=[Task(id=task_id, title=task_id)]))
    return registry.transition(f"ts/{task_id}", TaskState.RUNNING, expected=TaskState.READY,
                               runner_id="r-1")


def facts(task: Task) -> RunFacts:
    return RunFacts(key=task.key, runner_id="r-1", pool=POOL, slot_id=None,
                    started_at=time.time() - 1, attempt=1)


def test_exit_zero_is_done_and_a_failure_is_retried_then_failed() -> None:
    reg = MemoryRegistry()
    settler, written = make(reg)
    task = running(reg)
    settler.runner_ended(facts(task), task, RunnerExit(3, "exited", time.time()))
    assert reg.get_task(task.key).state is TaskState.READY
    assert reg.get_task(task.key).attempts == 1 and settler.retried == 1
    again = reg.transition(task.key, TaskState.RUNNING, expected=TaskState.READY,
                           runner_id="r-2")
    settler.runner_ended(facts(again), again, RunnerExit(3, "exited", time.time()))
    failed = reg.get_task(task.key)
    assert failed.state is TaskState.FAILED and failed.attempts == 2
    assert [t.state for t in written] == [TaskState.READY, TaskState.FAILED]


@pytest.mark.parametrize("outcome,state,retried", [
    (FenceOutcome.LOST, TaskState.READY, 1),  # a failed attempt, retried
    (FenceOutcome.TIMEOUT, TaskState.READY, 1),
    (FenceOutcome.BUDGET, TaskState.FAILED, 0),  # over budget: failed without retry
    (FenceOutcome.CANCELLED, TaskState.CANCELLED, 0),
    (FenceOutcome.SHUTDOWN, TaskState.READY, 0),  # no attempt spent
])
def test_fence_outcomes(outcome: FenceOutcome, state: TaskState, retried: int) -> None:
    reg = MemoryRegistry()
    settler, _ = make(reg)
    task = running(reg)
    assert settler.fenced(facts(task), task, outcome, "why")
    after = reg.get_task(task.key)
    assert after.state is state and settler.retried == retried
    assert after.attempts == (1 if outcome in (FenceOutcome.LOST, FenceOutcome.TIMEOUT,
                                               FenceOutcome.BUDGET) else 0)


def test_orphan_writes_nothing() -> None:
    reg = MemoryRegistry()
    settler, written = make(reg)
    task = running(reg)
    assert not settler.fenced(facts(task), task, FenceOutcome.ORPHAN, "moved")
    assert written == [] and reg.get_task(task.key).state is TaskState.RUNNING


def test_a_full_disk_keeps_the_write_flat_and_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """Thousands of failed tries (a disk full for a long time) neither nest nor flood the log;
    the write lands once space returns."""
    reg = DiskFull()
    settler, written = make(reg)
    task = running(reg)
    reg.full = True
    with caplog.at_level(logging.WARNING):
        settler.runner_ended(facts(task), task, RunnerExit(0, "exited", time.time()))
        now = time.time()
        for _i in range(3000):  # far more tries than Python's recursion limit
            now += 10.0
            settler.retry_deferred(now)
        assert settler.deferred() == [f"moving {task.key} to done"]
        reg.full = False
        settler.retry_deferred(now + 10.0)
    assert not settler.has_deferred
    assert reg.get_task(task.key).state is TaskState.DONE
    assert [t.state for t in written] == [TaskState.DONE]
    warnings = [r.name for r in caplog.records if "No space left" in r.getMessage()]
    assert sorted(warnings) == ["necrocode.dispatcher.engine.settler",  # once each, not per try
                                "necrocode.dispatcher.events"]
    kinds = [e.event_type for e in reg.get_events(task_key=task.key)]
    assert kinds.count(EventType.RUNNER_COMPLETED) == 1


def test_what_waits_for_a_settlement_waits_until_it_lands() -> None:
    """when_settled: the callback (e.g. releasing the run's slot) runs when the write is in the
    registry, not when it was first tried on a full disk."""
    reg = DiskFull()
    settler, _ = make(reg)
    task = running(reg)
    landed: list[TaskState | None] = []
    reg.full = True
    settler.when_settled(task.key, lambda t: landed.append(t.state if t else None))
    settler.runner_ended(facts(task), task, RunnerExit(0, "exited", time.time()))
    assert landed == [] and settler.has_deferred
    reg.full = False
    settler.retry_deferred(time.time() + 60)
    assert landed == [TaskState.DONE]


class BatchFails(MemoryRegistry):
    """A registry whose ``transition_many`` fails (nothing written) while ``broken`` is set,
    and counts how the settlements were written."""

    broken = False

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.singles = 0

    def transition_many(self, requests: Any) -> Any:
        if self.broken:
            raise OSError(28, "No space left on device")
        self.batches.append(len(requests))
        return super().transition_many(requests)

    def transition(self, *args: Any, **kwargs: Any) -> Task:
        self.singles += 1
        return super().transition(*args, **kwargs)


def three_running(reg: MemoryRegistry) -> list[Task]:
    reg.submit_taskset(Taskset(name="ts", tasks=[Task(id=i, title=i) for i in "abc"]))
    return [reg.transition(f"ts/{i}", TaskState.RUNNING, expected=TaskState.READY,
                           runner_id="r-1") for i in "abc"]


def test_runs_ended_together_are_done_in_one_transaction_in_order() -> None:
    reg = BatchFails()
    settler, written = make(reg)
    tasks = three_running(reg)
    reg.singles = 0
    settled: list[str] = []
    with settler.batch():
        for task in tasks:
            settler.when_settled(task.key, lambda t, k=task.key: settled.append(k))
            settler.runner_ended(facts(task), task, RunnerExit(0, "exited", time.time()))
        assert all(reg.get_task(t.key).state is TaskState.RUNNING for t in tasks)  # held
    assert reg.batches == [3] and reg.singles == 0
    assert [t.state for t in written] == [TaskState.DONE] * 3
    assert settled == ["ts/a", "ts/b", "ts/c"]  # slots are let go once each is written
    kinds = [e.event_type for e in reg.get_events() if e.task_key == "ts/b"]
    assert kinds.count(EventType.RUNNER_COMPLETED) == 1


def test_a_failure_in_a_batch_writes_what_the_batch_held_first() -> None:
    reg = BatchFails()
    settler, _ = make(reg)
    a, b, c = three_running(reg)
    with settler.batch():
        settler.runner_ended(facts(a), a, RunnerExit(0, "exited", time.time()))
        settler.runner_ended(facts(b), b, RunnerExit(0, "exited", time.time()))
        settler.runner_ended(facts(c), c, RunnerExit(3, "exited", time.time()))  # a retry
        assert reg.get_task(a.key).state is TaskState.DONE  # written before c's failure
    assert reg.batches == [2]
    assert reg.get_task(c.key).state is TaskState.READY


def test_a_batch_the_registry_cannot_take_is_written_one_by_one_or_kept() -> None:
    reg = BatchFails()
    settler, _ = make(reg)
    tasks = three_running(reg)
    reg.broken = True
    with settler.batch():
        for task in tasks:
            settler.runner_ended(facts(task), task, RunnerExit(0, "exited", time.time()))
    assert reg.batches == []  # the batch failed: each went on its own
    assert all(reg.get_task(t.key).state is TaskState.DONE for t in tasks)
    assert not settler.has_deferred


def test_a_refusal_in_a_batch_drops_that_settlement_only() -> None:
    reg = BatchFails()
    settler, written = make(reg)
    a, b, c = three_running(reg)
    reg.transition(b.key, TaskState.CANCELLED, expected=TaskState.RUNNING)  # moved on meanwhile
    refusals: list[str] = []
    settler.when_settled(b.key, lambda t: refusals.append(repr(t)))
    with settler.batch():
        for task in (a, b, c):
            settler.runner_ended(facts(task), task, RunnerExit(0, "exited", time.time()))
    assert reg.get_task(b.key).state is TaskState.CANCELLED
    assert {t.key for t in written} == {a.key, c.key}
    assert refusals == ["None"] and not settler.has_deferred
