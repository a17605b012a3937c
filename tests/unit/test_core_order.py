"""Ordering guarantees of the engine: a runner's events in the registry come in lifecycle order
(TaskAssigned < RunnerStarted < RunnerCompleted/RunnerFailed), even for agents that exit at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolType,
    Runner,
    Slot,
    Task,
    Taskset,
    TaskState,
)
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.registry.base import TaskRegistry
from support import wait_until

ENDS = (EventType.RUNNER_COMPLETED, EventType.RUNNER_FAILED)




class InstantLauncher(FakeLauncher):
    """A FakeLauncher whose runners have already ended when ``launch`` returns (odd-numbered
    tasks fail, the others succeed)."""

    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        runner = super().launch(task, slot, pool, attempt=attempt)
        code = 1 if task.id.endswith(("1", "3", "5", "7", "9")) else 0
        self.finish(runner.runner_id, exit_code=code)
        return runner


def config(tmp_path: Path, **overrides: Any) -> DispatcherConfig:
    base: dict[str, Any] = dict(
        registry_path=":memory:", state_dir=str(tmp_path / "state"), poll_interval=0.2,
        max_global_concurrency=8, heartbeat_timeout=30.0, retry_max_attempts=1,
        retry_backoff_base=0.05, retry_jitter=0.0, api_enabled=False, runner_stop_grace=0.2,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=8)],
        skill_mapping={"default": ["local"]},
    )
    base.update(overrides)
    return DispatcherConfig(**base)


def assert_runner_event_order(registry: TaskRegistry, keys: list[str]) -> None:
    """For every runner of every task: TaskAssigned < RunnerStarted < its end event (by seq)."""
    for key in keys:
        events = registry.get_events(task_key=key)
        by_runner: dict[str, dict[EventType, int]] = {}
        for ev in events:
            if ev.runner_id is None or ev.seq is None:
                continue
            if ev.event_type in (EventType.TASK_ASSIGNED, EventType.RUNNER_STARTED, *ENDS):
                by_runner.setdefault(ev.runner_id, {}).setdefault(ev.event_type, ev.seq)
        assert by_runner, f"{key}: no runner events"
        for rid, seqs in by_runner.items():
            kinds = [e.event_type.value for e in events if e.runner_id == rid]
            assert EventType.RUNNER_STARTED in seqs, f"{rid}: {kinds}"
            end = min(seqs[k] for k in ENDS if k in seqs)
            assert seqs[EventType.TASK_ASSIGNED] < seqs[EventType.RUNNER_STARTED] < end, \
                f"{rid}: {kinds}"


def run_all(core: DispatcherCore, registry: TaskRegistry, tasks: list[Task]) -> list[str]:
    for t in tasks:
        t.taskset = "ord"
        t.tenant = "ord"
    core.submit(Taskset(name="ord", tasks=tasks))
    keys = [f"ord/{t.id}" for t in tasks]
    wait_until(lambda: all(registry.get_task(k).state.terminal for k in keys), 60,
               "all tasks finished")
    for key in keys:  # the end event is written with (or before) the terminal state
        wait_until(lambda key=key: any(e.event_type in ENDS
                                       for e in registry.get_events(task_key=key)),
                   10, f"end event of {key}")
    return keys


def test_instant_exits_keep_runner_started_first(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    launcher = InstantLauncher()
    core = DispatcherCore(config(tmp_path), registry=registry,
                          launchers={PoolType.LOCAL_PROCESS: launcher})
    core.start()
    try:
        keys = run_all(core, registry, [Task(id=f"t{i}", title=f"t{i}", command=["true"])
                                        for i in range(60)])
        assert_runner_event_order(registry, keys)
        states = {registry.get_task(k).state for k in keys}
        assert states == {TaskState.DONE, TaskState.FAILED}
    finally:
        core.stop(timeout=1)


def test_real_true_processes_keep_runner_started_first(tmp_path: Path) -> None:
    cfg = config(tmp_path, registry_path=str(tmp_path / "reg" / "registry.db"))
    core = DispatcherCore(cfg)
    core.start()
    try:
        tasks = [Task(id=f"r{i}", title=f"r{i}",
                      command=["true"] if i % 2 == 0 else ["false"]) for i in range(24)]
        keys = run_all(core, core.registry, tasks)
        assert_runner_event_order(core.registry, keys)
    finally:
        core.stop(timeout=1)


def check_queue_views(snap: Any) -> None:
    """Positions 1..k in order (None only for tasks that cannot be dispatched yet), and no
    "global limit reached (n/n)" reason while the same snapshot shows fewer runners."""
    positions = [p for v in snap.queued if (p := snap.position_of(v.key)) is not None]
    assert positions == list(range(1, len(positions) + 1)), \
        f"snapshot {snap.version}: positions {positions[:20]}..."
    ready = [v for v in snap.queued if v.state is TaskState.READY]
    assert all(snap.position_of(v.key) is not None for v in ready), f"snapshot {snap.version}"
    assert all(snap.position_of(v.key) is None for v in snap.queued
               if v.state is TaskState.BLOCKED)
    running = len(snap.running)
    limit = snap.max_global_concurrency
    if running < limit:
        bad = [v.key for v in ready if v.pending is not None
               and "global limit reached" in v.pending.message]
        assert not bad, f"snapshot {snap.version}: {running} running but {bad[:3]} say " \
                        f"{ready[0].pending}"


def test_queue_positions_and_reasons_follow_every_snapshot(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    launcher = FakeLauncher()
    cfg = config(tmp_path, max_global_concurrency=8, agent_pools=[
        AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=16)])
    core = DispatcherCore(cfg, registry=registry, launchers={PoolType.LOCAL_PROCESS: launcher})
    core.start()
    try:
        tasks = [Task(id=f"q{i:03d}", title=f"q{i}", command=["true"]) for i in range(300)]
        tasks += [Task(id=f"b{i}", title=f"b{i}", command=["true"], dependencies=["q299"])
                  for i in range(5)]
        for t in tasks:
            t.taskset = "pos"
            t.tenant = "pos"
        core.submit(Taskset(name="pos", tasks=tasks))
        launcher.wait_for_running(8)
        snap = core.wait_for_snapshot(0, timeout=10)
        seen = 0
        for _ in range(12):
            for rid in launcher.running()[:5]:
                launcher.finish(rid)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # every snapshot until 8 run again
                snap = core.wait_for_snapshot(snap.version, timeout=5)
                check_queue_views(snap)
                seen += 1
                if len(launcher.running()) == 8 and len(snap.running) == 8 \
                        and not any(v.key in {r.task.key for r in launcher.launches[-5:]}
                                    for v in snap.queued):
                    break
        assert seen >= 12
        first = next(v for v in snap.queued if snap.position_of(v.key) == 1)
        launched = {launch.task.key for launch in launcher.launches}
        assert first.key not in launched
    finally:
        core.stop(timeout=1)
