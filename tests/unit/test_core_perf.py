"""Engine work that must not grow with the square of the task count: the failure roots of
BLOCKED tasks are walked once per snapshot (one memo shared by every task), and the deadlock
check (a graph of every task) runs only after a change it reports on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher import pending
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.engine import snapshot_builder
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from support import wait_until


def make_core(tmp_path: Path, **overrides: Any) -> tuple[DispatcherCore, FakeLauncher]:
    pools = [AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)]
    base: dict[str, Any] = dict(
        registry_path=":memory:", state_dir=str(tmp_path / "state"), poll_interval=0.2,
        retry_max_attempts=1, retry_backoff_base=0.05, retry_jitter=0.0, api_enabled=False,
        runner_stop_grace=0.2, agent_pools=pools, skill_mapping={"default": ["local"]},
        deadlock_check_interval=0.1, snapshot_max_rate=1000.0)
    base.update(overrides)
    launcher = FakeLauncher()
    core = DispatcherCore(DispatcherConfig(**base), registry=MemoryRegistry(),
                          launchers={PoolType.LOCAL_PROCESS: launcher})
    return core, launcher


def chain(n: int) -> Taskset:
    return Taskset(name="c", tasks=[Task(id=f"t{i}", title=str(i), taskset="c",
                                         dependencies=[f"t{i - 1}"] if i else [])
                                    for i in range(n)])


def test_failure_roots_of_a_long_chain_share_one_memo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memos: list[int] = []
    real = pending.pending_for_blocked

    def spy(task: Task, deps: Any, *, memo: Any = None) -> Any:
        assert memo is not None, "pending_for_blocked called without a memo: O(n^2) walk"
        memos.append(id(memo))
        return real(task, deps, memo=memo)

    monkeypatch.setattr(snapshot_builder, "pending_for_blocked", spy)
    core, launcher = make_core(tmp_path)
    core.start()
    try:
        core.submit(chain(300))
        first = wait_until(lambda: launcher.launch_for("c/t0"), 10, "launch of the head")
        launcher.finish(first[0].runner.runner_id, 3)  # the head fails for good
        snap = wait_until(lambda: (s := core.snapshot()) and any(
            q.key == "c/t299" and "t0" in q.pending.message for q in s.queued) and s, 10,
            "the chain's end names the failed head")
        tail = next(q for q in snap.queued if q.key == "c/t299")
        assert tail.pending.reason.name == "BLOCKED_BY_FAILURE"
        assert memos
    finally:
        core.stop(timeout=0.5)


def test_deadlock_check_runs_only_after_a_change_it_reports_on(tmp_path: Path) -> None:
    core, launcher = make_core(tmp_path)
    calls: list[int] = []
    real = core.deadlock_detector.detect

    def counting(tasks: Any) -> Any:
        calls.append(len(tasks))
        return real(tasks)

    core.deadlock_detector.detect = counting  # type: ignore[method-assign]
    core.start()
    try:
        core.submit(chain(3))
        wait_until(lambda: calls and calls[-1] == 3, 10, "a check after the submit")
        rid = wait_until(lambda: launcher.launch_for("c/t0"), 10, "launch")[0].runner.runner_id
        seen = len(calls)
        launcher.finish(rid, 0)  # DONE: nothing the check reports on
        wait_until(lambda: core.registry.get_task("c/t0").state is TaskState.DONE, 10, "DONE")
        rid = wait_until(lambda: launcher.launch_for("c/t1"), 10, "launch")[0].runner.runner_id
        for _ in range(3):  # several check intervals pass
            v = core.snapshot().version
            core.wake()
            core.wait_for_snapshot(v, 0.3)
        assert len(calls) == seen
        launcher.finish(rid, 3)  # FAILED: its dependents are blocked by a failure
        wait_until(lambda: len(calls) > seen, 10, "a check after the failure")
        wait_until(lambda: any(d.kind == "failed_dependency" for d in core.snapshot().deadlocks),
                   10, "the blocked dependent reported")
    finally:
        core.stop(timeout=0.5)


def test_queued_layout_kept_by_changes_equals_one_built_from_scratch() -> None:
    """The queued views as a snapshot shows them, kept by the views that changed between full
    refreshes (places in the dispatch order kept, the rest placed by bisection or sorted anew
    after many changes), are exactly what assembling every view from scratch gives."""
    import random

    from necrocode.dispatcher.engine.queued_layout import QueuedLayout
    from necrocode.dispatcher.engine.queued_views import rest_order
    from necrocode.dispatcher.snapshot import Pending, PendingReason, QueuedTaskView

    def view(key: str, state: TaskState, priority: int, rev: int) -> QueuedTaskView:
        return QueuedTaskView(key=key, taskset="r", task_id=key, title="", state=state,
                              skill="", tenant="r", priority=priority, ready_at=None,
                              created_at=0.0, attempts=0,
                              pending=Pending(PendingReason.QUEUED, ""), rev=rev)

    rng = random.Random(7)
    layout = QueuedLayout()
    views: dict[str, QueuedTaskView] = {}
    order: list[str] = []
    states = (TaskState.READY, TaskState.BLOCKED)
    for step in range(400):
        if step % 50 == 0:  # a full refresh: a new dispatch order of some of the keys
            order = rng.sample(sorted(views), k=len(views) // 2) if views else []
            layout.reset(order, views)
        for _ in range(rng.choice((0, 1, 3, 40, 300))):
            key = f"r/{rng.randrange(400)}"
            if rng.random() < 0.25:
                views.pop(key, None)
                layout.drop(key)
            else:
                views[key] = view(key, rng.choice(states), rng.randrange(3), step)
                layout.put(key, views[key])
        placed = set(order)
        expected = [views[k] for k in order if k in views]
        expected += sorted((v for k, v in views.items() if k not in placed), key=rest_order)
        got = layout.queued()
        assert [v.key for v in got] == [v.key for v in expected]
        assert all(a is b for a, b in zip(got, expected, strict=True))

