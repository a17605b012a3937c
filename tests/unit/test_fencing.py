"""The stop contract: only a confirmed stop lets a task run again."""

from __future__ import annotations

import time
from pathlib import Path

from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import EventType, PoolType, Runner, RunnerState, Task, TaskState
from support import wait_until
from test_core import Harness


def test_unconfirmed_stop_keeps_slot_and_capacity_until_confirmed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    try:
        h.launcher.fail_next_stops(3, "docker engine could not confirm the stop")
        h.submit(Task(id="slow", title="S", timeout=0.3))
        first = h.runner_of("ts/slow")
        # timed out: the fence is answered "not confirmed" three times (the runner may still run)
        wait_until(lambda: len(h.launcher.unconfirmed) >= 2, 10, "two unconfirmed stops")
        assert len(h.launcher.launch_for("ts/slow")) == 1  # never relaunched meanwhile
        assert h.core.pool_manager.get_pool_status("local").running == 1  # capacity held
        assert h.state("ts/slow") is TaskState.RUNNING
        assert first in h.launcher.running()
        view = wait_until(lambda: next((v for v in h.core.snapshot().running
                                        if v.runner_id == first and v.progress), None), 5,
                          "the unconfirmed stop in the snapshot")
        assert view.progress == "stopping: not confirmed: docker engine could not confirm " \
                                "the stop"
        # the fourth stop is confirmed: only now is the attempt settled and the task retried
        wait_until(lambda: len(h.launcher.launch_for("ts/slow")) == 2, 15, "relaunch")
        assert h.launcher.unconfirmed == [first] * 3
        assert first not in h.launcher.running()
        time.sleep(0.1)
        assert h.registry.get_task("ts/slow").attempts == 1
    finally:
        h.core.stop(timeout=0.5)


# --- restart with a platform that cannot be asked -------------------------------------------
def _left_running(tmp_path: Path) -> tuple[Harness, str]:
    h = Harness(tmp_path)
    h.core.start()
    h.submit(Task(id="r", title="R"))
    rid = h.runner_of("ts/r")
    h.core.stop(timeout=5, leave_running=True)
    return h, rid


def test_restart_with_platform_down_keeps_task_running_until_it_answers(tmp_path: Path) -> None:
    h, rid = _left_running(tmp_path)
    runner = h.launcher.runner(rid)
    launcher2 = FakeLauncher()
    launcher2.fail_next_reconciles(1, "cannot reach the Docker engine")
    launcher2.add_adoptable(Runner(runner_id=rid, task_key="ts/r", pool_name="local",
                                   slot_id=runner.slot_id, state=RunnerState.RUNNING))
    core2 = DispatcherCore(h.config, registry=h.registry,
                           launchers={PoolType.LOCAL_PROCESS: launcher2})
    core2.start()
    try:
        assert h.state("ts/r") is TaskState.RUNNING  # not requeued blind
        view = wait_until(lambda: next(iter(core2.snapshot().running), None), 5, "a view")
        assert view.runner_state is RunnerState.UNKNOWN
        assert "cannot reach the Docker engine" in (view.progress or "")
        assert core2.pool_manager.get_pool_status("local").running == 1  # capacity held
        assert EventType.RUNNER_UNKNOWN in h.events("ts/r")
        # the platform answers a few seconds later: the runner is adopted, never relaunched
        wait_until(lambda: EventType.RUNNER_ADOPTED in h.events("ts/r"), 15, "adopted")
        assert launcher2.launches == [] and launcher2.reconcile_calls == 2
        assert core2.pool_manager.get_pool_status("local").running == 1
        launcher2.finish(rid, 0)
        h.wait_state("ts/r", TaskState.DONE)
        assert launcher2.launches == []
    finally:
        core2.stop(timeout=1)


def test_restart_with_platform_down_then_runner_gone_requeues_once(tmp_path: Path) -> None:
    h, _rid = _left_running(tmp_path)
    launcher2 = FakeLauncher()
    launcher2.fail_next_reconciles(1, "cluster unreachable")
    core2 = DispatcherCore(h.config, registry=h.registry,
                           launchers={PoolType.LOCAL_PROCESS: launcher2})
    core2.start()
    try:
        time.sleep(0.5)
        assert launcher2.launches == [] and h.state("ts/r") is TaskState.RUNNING
        # the answer shows no runner and no exit status: back to READY, then one launch
        wait_until(lambda: len(launcher2.launches) == 1, 15, "relaunch after the answer")
        kinds = h.events("ts/r")
        assert EventType.TASK_REQUEUED in kinds
        assert h.registry.get_task("ts/r").attempts == 0  # no attempt spent
    finally:
        core2.stop(timeout=1)


def test_a_lost_runner_started_event_is_written_at_the_restart(tmp_path: Path) -> None:
    """A kill -9 between a launch and the batched RunnerStarted write: the restart that adopts
    the runner records its start (once), so no run is missing its RunnerStarted."""
    from necrocode.dispatcher.models import TaskEvent, Taskset
    from necrocode.dispatcher.registry import MemoryRegistry
    from test_core import make_config

    registry = MemoryRegistry()
    registry.submit_taskset(Taskset(name="ts", tasks=[Task(id="r", title="R", taskset="ts")]))
    rid = "r-ts-r-a1-0a1b2c"
    registry.transition("ts/r", TaskState.RUNNING, expected=TaskState.READY, runner_id=rid,
                        started_at=time.time(), event=TaskEvent(
                            event_type=EventType.TASK_ASSIGNED, task_key="ts/r", runner_id=rid,
                            message="assigned"))
    for _ in range(2):  # a second restart does not write it again
        launcher = FakeLauncher()
        launcher.add_adoptable(Runner(runner_id=rid, task_key="ts/r", pool_name="local",
                                      state=RunnerState.RUNNING))
        core = DispatcherCore(make_config(tmp_path), registry=registry,
                              launchers={PoolType.LOCAL_PROCESS: launcher})
        core.start()
        core.stop(timeout=0, leave_running=True)
    started = [e for e in registry.get_events(task_key="ts/r")
               if e.event_type is EventType.RUNNER_STARTED]
    assert len(started) == 1 and started[0].runner_id == rid
    assert started[0].details.get("recovered") is True
