"""DispatcherCore with a MemoryRegistry and a FakeLauncher: the engine loop's rules."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.engine.api_bridge import EngineApiHandler
from necrocode.dispatcher.errors import DispatcherError, TaskNotFoundError
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolType,
    Runner,
    RunnerState,
    Task,
    Taskset,
    TaskState,
)
from necrocode.dispatcher.registry import MemoryRegistry
from support import wait_until


def make_config(tmp_path: Path, **overrides: Any) -> DispatcherConfig:
    pools = overrides.pop("agent_pools", None) or [
        AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)]
    base: dict[str, Any] = dict(
        registry_path=":memory:", state_dir=str(tmp_path / "state"), poll_interval=0.2,
        max_global_concurrency=10, heartbeat_timeout=30.0, retry_max_attempts=3,
        retry_backoff_base=0.05, retry_jitter=0.0, api_enabled=False, runner_stop_grace=0.2,
        agent_pools=pools, skill_mapping={"default": [p.name for p in pools]},
    )
    base.update(overrides)
    return DispatcherConfig(**base)


class Harness:
    """A started DispatcherCore over a MemoryRegistry and a FakeLauncher."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.registry = MemoryRegistry()
        self.launcher = FakeLauncher()
        self.config = make_config(tmp_path, **overrides)
        self.core = DispatcherCore(self.config, registry=self.registry,
                                   launchers={PoolType.LOCAL_PROCESS: self.launcher})

    def submit(self, *tasks: Task, name: str = "ts") -> None:
        for t in tasks:
            t.taskset = name
            t.tenant = t.tenant if t.tenant != "default" else name
        self.core.submit(Taskset(name=name, tasks=list(tasks)))

    def state(self, key: str) -> TaskState:
        return self.registry.get_task(key).state

    def wait_state(self, key: str, state: TaskState, timeout: float = 10.0) -> Task:
        return wait_until(lambda: self.registry.get_task(key).state is state
                          and self.registry.get_task(key), timeout, f"{key} {state.value}")

    def runner_of(self, key: str, index: int = -1) -> str:
        launches = wait_until(lambda: self.launcher.launch_for(key), 10, f"launch of {key}")
        return launches[index].runner.runner_id

    def events(self, key: str | None = None) -> list[EventType]:
        return [e.event_type for e in self.registry.get_events(task_key=key)]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    h.core.start()
    yield h
    h.core.stop(timeout=0.5)


def test_dependencies_run_in_order_and_end_done(harness: Harness) -> None:
    harness.submit(Task(id="a", title="A"), Task(id="b", title="B", dependencies=["a"]))
    rid = harness.runner_of("ts/a")
    assert harness.launcher.launch_for("ts/b") == []
    assert harness.state("ts/b") is TaskState.BLOCKED
    harness.launcher.finish(rid, 0)
    harness.wait_state("ts/a", TaskState.DONE)
    harness.launcher.finish(harness.runner_of("ts/b"), 0)
    harness.wait_state("ts/b", TaskState.DONE)
    kinds = harness.events("ts/a")
    assert EventType.TASK_ASSIGNED in kinds
    assert EventType.RUNNER_COMPLETED in kinds
    wait_until(lambda: EventType.RUNNER_STARTED in harness.events("ts/a"), 5, "RunnerStarted")
    snap = wait_until(lambda: (s := harness.core.snapshot()).counters.done == 2 and s, 5,
                      "snapshot with 2 done")
    assert {v.key for v in snap.finished} == {"ts/a", "ts/b"}
    assert harness.core.repo_pool.in_use_count() == 0


def test_pool_limit_holds_and_completion_frees_capacity(harness: Harness) -> None:
    harness.submit(*[Task(id=f"t{i}", title=str(i)) for i in range(5)])
    running = harness.launcher.wait_for_running(2)
    time.sleep(0.2)  # give the engine a chance to over-commit (it must not)
    assert len(harness.launcher.running()) == 2
    harness.launcher.finish(running[0], 0)
    harness.launcher.wait_for_launches(3)
    assert len(harness.launcher.running()) == 2
    status = harness.core.pool_manager.get_pool_status("local")
    assert status.running == 2


def test_failure_is_retried_with_backoff_then_done(harness: Harness) -> None:
    harness.submit(Task(id="x", title="X"))
    harness.launcher.finish(harness.runner_of("ts/x"), 3)
    retried = wait_until(lambda: len(harness.launcher.launch_for("ts/x")) == 2, 10, "relaunch")
    assert retried
    task = harness.registry.get_task("ts/x")
    assert task.attempts == 1
    harness.launcher.finish(harness.runner_of("ts/x"), 0)
    done = harness.wait_state("ts/x", TaskState.DONE)
    assert done.attempts == 1
    kinds = harness.events("ts/x")
    assert kinds.count(EventType.RUNNER_FAILED) == 1
    assert kinds.count(EventType.TASK_RETRIED) == 1


def test_failed_after_max_attempts(harness: Harness) -> None:
    harness.submit(Task(id="x", title="X", max_attempts=2))
    harness.launcher.finish(harness.runner_of("ts/x", 0), 1)
    wait_until(lambda: len(harness.launcher.launch_for("ts/x")) == 2, 10, "relaunch")
    harness.launcher.finish(harness.runner_of("ts/x", 1), 1)
    failed = harness.wait_state("ts/x", TaskState.FAILED)
    assert failed.attempts == 2
    assert EventType.TASK_FAILED in harness.events("ts/x")
    assert harness.core.pool_manager.get_pool_status("local").running == 0


def test_launch_error_releases_and_retries(harness: Harness) -> None:
    harness.launcher.fail_next_launch("boom")
    harness.submit(Task(id="x", title="X"))
    rid = harness.runner_of("ts/x")
    assert harness.registry.get_task("ts/x").attempts == 1
    assert EventType.RUNNER_LAUNCH_FAILED in harness.events("ts/x")
    harness.launcher.finish(rid, 0)
    harness.wait_state("ts/x", TaskState.DONE)
    assert harness.core.repo_pool.in_use_count() == 0


def test_non_retryable_launch_error_fails_at_once(harness: Harness) -> None:
    harness.launcher.fail_next_launch("bad command", retryable=False)
    harness.submit(Task(id="x", title="X"))
    failed = harness.wait_state("ts/x", TaskState.FAILED)
    assert failed.attempts == 1
    assert harness.core.pool_manager.get_pool_status("local").running == 0


def test_cancel_running_stops_runner_and_reports_dependents(harness: Harness) -> None:
    harness.submit(Task(id="a", title="A"), Task(id="b", title="B", dependencies=["a"]))
    rid = harness.runner_of("ts/a")
    message = harness.core.cancel("ts/a")
    assert "cancel" in message
    harness.wait_state("ts/a", TaskState.CANCELLED)
    assert rid in harness.launcher.stops
    snap = wait_until(lambda: (s := harness.core.snapshot()) and any(
        q.key == "ts/b" and q.pending.reason.value == "blocked_by_failure" for q in s.queued)
        and s, 10, "b blocked by failure")
    assert snap.counters.cancelled == 1
    assert harness.core.pool_manager.get_pool_status("local").running == 0


def test_controls_pause_resume_priority_retry(harness: Harness) -> None:
    assert harness.core.pause() == "paused dispatching"
    harness.submit(Task(id="p", title="P"))
    wait_until(lambda: any(q.key == "ts/p" and q.pending.reason.value == "paused"
                           for q in harness.core.snapshot().queued), 5, "paused reason")
    assert harness.launcher.launches == []
    assert harness.core.set_priority("ts/p", 7) == "priority of ts/p: 0 -> 7"
    assert harness.registry.get_task("ts/p").priority == 7
    harness.core.resume()
    harness.launcher.finish(harness.runner_of("ts/p"), 0)
    harness.wait_state("ts/p", TaskState.DONE)
    with pytest.raises(DispatcherError):
        harness.core.retry("ts/p")  # DONE cannot be retried
    with pytest.raises(TaskNotFoundError):
        harness.core.set_priority("ts/nope", 1)


def log_liveness_pool() -> AgentPool:
    """A local pool that asks for log growth or heartbeats (``liveness: log``)."""
    return AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2,
                     config={"liveness": "log"})


def test_heartbeat_loss_fences_and_retries(tmp_path: Path) -> None:
    h = Harness(tmp_path, heartbeat_timeout=0.3, agent_pools=[log_liveness_pool()])
    h.core.start()
    try:
        h.submit(Task(id="h", title="H"))
        first = h.runner_of("ts/h")
        h.launcher.hang(first)
        wait_until(lambda: len(h.launcher.launch_for("ts/h")) >= 2, 10, "relaunch after loss")
        assert first in h.launcher.stops
        assert EventType.RUNNER_LOST in h.events("ts/h")
        assert h.registry.get_task("ts/h").attempts >= 1
    finally:
        h.core.stop(timeout=0.5)


def test_task_timeout_fences(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    try:
        h.submit(Task(id="t", title="T", timeout=0.2, max_attempts=1))
        first = h.runner_of("ts/t")
        h.wait_state("ts/t", TaskState.FAILED)
        assert first in h.launcher.stops
        assert EventType.RUNNER_TIMED_OUT in h.events("ts/t")
    finally:
        h.core.stop(timeout=0.5)


def test_stop_requeues_running_without_spending_an_attempt(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    h.submit(Task(id="s", title="S"))
    rid = h.runner_of("ts/s")
    h.core.stop(timeout=0.1)
    task = h.registry.get_task("ts/s")
    assert task.state is TaskState.READY
    assert task.attempts == 0
    assert rid in h.launcher.stops
    kinds = h.events("ts/s")
    assert EventType.TASK_REQUEUED in kinds
    assert EventType.DISPATCHER_STOPPED in h.events()


def test_restart_adopts_live_runner(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    h.submit(Task(id="r", title="R"))
    rid = h.runner_of("ts/r")
    h.core.stop(timeout=5, leave_running=True)
    assert h.registry.get_task("ts/r").state is TaskState.RUNNING
    runner = h.launcher.runner(rid)
    # a new engine on the same registry finds the runner alive
    launcher2 = FakeLauncher()
    launcher2.add_adoptable(Runner(runner_id=rid, task_key="ts/r", pool_name="local",
                                   slot_id=runner.slot_id, state=RunnerState.RUNNING))
    core2 = DispatcherCore(h.config, registry=h.registry,
                           launchers={PoolType.LOCAL_PROCESS: launcher2})
    core2.start()
    try:
        assert EventType.RUNNER_ADOPTED in h.events("ts/r")
        assert launcher2.launches == []
        assert core2.pool_manager.get_pool_status("local").running == 1
        launcher2.finish(rid, 0)
        h.wait_state("ts/r", TaskState.DONE)
    finally:
        core2.stop(timeout=1)


def test_restart_requeues_when_runner_gone(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    h.submit(Task(id="g", title="G"))
    h.runner_of("ts/g")
    h.core.stop(timeout=5, leave_running=True)
    launcher2 = FakeLauncher()
    core2 = DispatcherCore(h.config, registry=h.registry,
                           launchers={PoolType.LOCAL_PROCESS: launcher2})
    core2.start()
    try:
        launches = launcher2.wait_for_launches(1)
        assert launches[0].task.key == "ts/g"
        assert EventType.TASK_REQUEUED in h.events("ts/g")
        assert h.registry.get_task("ts/g").attempts == 0
    finally:
        core2.stop(timeout=0.5)


def test_status_dict_and_offline_controls(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.submit(Task(id="o", title="O"))
    status = h.core.get_status()
    assert status["state"] == "stopped"
    assert h.core.set_priority("ts/o", 3) == "priority of ts/o: 0 -> 3"
    assert h.core.cancel("ts/o").startswith("cancelled ts/o")
    assert h.state("ts/o") is TaskState.CANCELLED
    assert "ready" in h.core.retry("ts/o")
    assert h.state("ts/o") is TaskState.READY


def test_start_releases_slots_leaked_by_an_earlier_run(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.submit(Task(id="l", title="L"))
    leaked = h.core.repo_pool.allocate_slot(h.registry.get_task("ts/l"))
    assert leaked is not None and h.core.repo_pool.in_use_count() == 1
    h.core.pause()  # nothing launches: only the cleanup can free the slot
    h.core.start()
    try:
        assert h.core.repo_pool.in_use_count() == 0
    finally:
        h.core.stop(timeout=0.5)


def test_control_while_draining_goes_through_the_engine(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    h.submit(Task(id="d", title="D"), Task(id="e", title="E", dependencies=["d"]))
    rid = h.runner_of("ts/d")
    import threading

    stopper = threading.Thread(target=h.core.stop, kwargs={"timeout": 5})
    stopper.start()
    wait_until(lambda: h.core.snapshot().state == "draining", 5, "draining")
    assert h.core.set_priority("ts/e", 9) == "priority of ts/e: 0 -> 9"
    h.launcher.finish(rid, 0)
    stopper.join(10)
    assert not stopper.is_alive()
    assert h.state("ts/d") is TaskState.DONE
    assert h.launcher.launch_for("ts/e") == []  # draining: nothing new starts


def test_local_pool_default_liveness_is_the_process(tmp_path: Path) -> None:
    """A silent local agent (an LLM call, npm install) whose process lives is not lost: the
    default liveness of local-process pools is the process (R8.1); only its timeout ends it."""
    h = Harness(tmp_path, heartbeat_timeout=0.2)
    h.core.start()
    try:
        h.submit(Task(id="quiet", title="Q"))
        rid = h.runner_of("ts/quiet")
        time.sleep(0.8)  # several heartbeat timeouts without a heartbeat or a log line
        assert rid not in h.launcher.stops
        assert h.state("ts/quiet") is TaskState.RUNNING
        h.launcher.finish(rid, 0)
        h.wait_state("ts/quiet", TaskState.DONE)
    finally:
        h.core.stop(timeout=0.5)


def test_heartbeating_local_runner_is_judged_by_its_heartbeats(tmp_path: Path) -> None:
    """A runner that heartbeats (the agent_runner wrapper) is lost when they stop, even in a
    local pool whose default liveness is the process (a frozen wrapper is fenced)."""
    h = Harness(tmp_path, heartbeat_timeout=0.3)
    h.core.start()
    try:
        h.submit(Task(id="w", title="W"))
        first = h.runner_of("ts/w")
        h.core.heartbeat(first, "working")
        h.launcher.hang(first)  # alive, but no more heartbeats
        wait_until(lambda: len(h.launcher.launch_for("ts/w")) >= 2, 10, "relaunch after loss")
        assert first in h.launcher.stops
        assert EventType.RUNNER_LOST in h.events("ts/w")
    finally:
        h.core.stop(timeout=0.5)


def test_liveness_mode_defaults_by_pool_type() -> None:
    from necrocode.dispatcher.engine.runner_table import liveness_mode

    assert liveness_mode(AgentPool(name="l", type=PoolType.LOCAL_PROCESS)) == "process"
    assert liveness_mode(AgentPool(name="l", type=PoolType.LOCAL_PROCESS,
                                   config={"liveness": "log"})) == "log"
    assert liveness_mode(AgentPool(name="d", type=PoolType.DOCKER,
                                   config={"image": "x"})) == "log"
    assert liveness_mode(AgentPool(name="k", type=PoolType.KUBERNETES,
                                   config={"liveness": "process"})) == "process"


def test_run_numbers_never_go_back(tmp_path: Path) -> None:
    from necrocode.dispatcher.engine.runs import next_run_number, run_number_of
    from necrocode.dispatcher.launchers.base import attempt_dir

    task = Task(id="x", title="X", taskset="ts")
    assert next_run_number(tmp_path, task) == 1
    attempt_dir(tmp_path, task, 1).mkdir(parents=True)
    attempt_dir(tmp_path, task, 3).mkdir(parents=True)
    assert next_run_number(tmp_path, task) == 4  # reset by an operator: after the last run
    assert next_run_number(tmp_path, task.copy(attempts=5)) == 6
    assert run_number_of(task.copy(runner_id="r-ts-x-a4-0a1b2c")) == 4
    assert run_number_of(task.copy(attempts=2, runner_id=None)) == 3


def test_deadlock_cycle_reported_once_with_snapshot(tmp_path: Path) -> None:
    h = Harness(tmp_path, deadlock_check_interval=0.2)
    # written by "another tool": the registry takes it, the engine must find the cycle
    h.registry.submit_taskset(Taskset(name="cyc", tasks=[
        Task(id="a", title="a", taskset="cyc", dependencies=["b"]),
        Task(id="b", title="b", taskset="cyc", dependencies=["a"])]))
    h.core.start()
    try:
        snap = wait_until(lambda: (s := h.core.snapshot()).deadlocks and s, 10, "deadlock view")
        assert snap.deadlocks[0].kind == "cycle"
        assert set(snap.deadlocks[0].tasks) == {"cyc/a", "cyc/b"}
        wait_until(lambda: any(q.pending.reason.value == "deadlock"
                               for q in h.core.snapshot().queued), 10, "deadlock reason")
        time.sleep(0.5)  # a few more checks: still one event
        kinds = [e.event_type for e in h.registry.get_events()]
        assert kinds.count(EventType.DEADLOCK_DETECTED) == 1
    finally:
        h.core.stop(timeout=0.5)


def test_retry_of_a_blocked_task_retries_its_failed_root(harness: Harness) -> None:
    harness.submit(Task(id="root", title="R", max_attempts=1),
                   Task(id="mid", title="M", dependencies=["root"]),
                   Task(id="leaf", title="L", dependencies=["mid"]))
    harness.launcher.finish(harness.runner_of("ts/root"), 1)
    harness.wait_state("ts/root", TaskState.FAILED)
    wait_until(lambda: any(q.key == "ts/leaf" and q.pending.reason.value == "blocked_by_failure"
                           for q in harness.core.snapshot().queued), 10, "leaf blocked for good")
    message = harness.core.retry("ts/leaf")
    assert "ts/root" in message
    relaunch = wait_until(lambda: len(harness.launcher.launch_for("ts/root")) == 2 and
                          harness.launcher.launch_for("ts/root"), 10, "root relaunched")
    assert harness.registry.get_task("ts/root").attempts == 0  # a fresh set of attempts
    harness.launcher.finish(relaunch[-1].runner.runner_id, 0)
    harness.launcher.finish(harness.runner_of("ts/mid"), 0)
    harness.launcher.finish(harness.runner_of("ts/leaf"), 0)
    harness.wait_state("ts/leaf", TaskState.DONE)


def test_disabled_pool_takes_nothing_new(harness: Harness) -> None:
    assert harness.core.set_pool_enabled("local", False).startswith("pool local disabled")
    harness.submit(Task(id="w", title="W"))
    wait_until(lambda: any(q.key == "ts/w" and q.pending.reason.value == "pool_disabled"
                           for q in harness.core.snapshot().queued), 10, "pool disabled reason")
    assert harness.launcher.launches == []
    with pytest.raises(DispatcherError):
        harness.core.set_pool_enabled("nope", True)
    harness.core.set_pool_enabled("local", True)
    harness.launcher.finish(harness.runner_of("ts/w"), 0)
    harness.wait_state("ts/w", TaskState.DONE)
    kinds = harness.events()
    assert EventType.POOL_DISABLED in kinds and EventType.POOL_ENABLED in kinds


class _FlakyDone(MemoryRegistry):
    """Refuses (as a locked database would) the first ``fails`` transitions to DONE."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails

    def transition(self, key: str, to_state: TaskState, **kwargs: Any) -> Task:
        if to_state is TaskState.DONE and self.fails > 0:
            self.fails -= 1
            from necrocode.dispatcher.errors import RegistryError

            raise RegistryError("database is locked")
        return super().transition(key, to_state, **kwargs)


def test_a_failed_completion_write_is_retried_not_lost(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.registry = _FlakyDone(fails=2)
    h.core = DispatcherCore(h.config, registry=h.registry,
                            launchers={PoolType.LOCAL_PROCESS: h.launcher})
    h.core.start()
    try:
        h.submit(Task(id="c", title="C"))
        h.launcher.finish(h.runner_of("ts/c"), 0)
        done = h.wait_state("ts/c", TaskState.DONE)
        assert done.attempts == 0
        assert h.registry.fails == 0
        assert h.core.pool_manager.get_pool_status("local").running == 0
    finally:
        h.core.stop(timeout=0.5)


class _GatedLauncher(FakeLauncher):
    """A FakeLauncher whose launches wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.gate = threading.Event()
        self.entered = threading.Event()

    def launch(self, task: Task, slot: Any, pool: AgentPool, *, attempt: int = 1) -> Runner:
        self.entered.set()
        assert self.gate.wait(10), "gate never opened"
        return super().launch(task, slot, pool, attempt=attempt)


def _gated(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    h.launcher = _GatedLauncher()
    h.core = DispatcherCore(h.config, registry=h.registry,
                            launchers={PoolType.LOCAL_PROCESS: h.launcher})
    h.core.start()
    return h


def test_cancel_while_launching_stops_the_runner_once_started(tmp_path: Path) -> None:
    h = _gated(tmp_path)
    try:
        h.submit(Task(id="g", title="G"))
        assert h.launcher.entered.wait(10)
        snap = wait_until(lambda: (s := h.core.snapshot()).running and s, 5, "launching view")
        assert snap.running[0].runner_state is RunnerState.LAUNCHING
        assert "ts/g" not in {q.key for q in snap.queued}
        assert "once it has started" in h.core.cancel("ts/g")
        assert h.core.set_priority("ts/g", 3).endswith("0 -> 3")  # no orphaning
        h.launcher.gate.set()
        h.wait_state("ts/g", TaskState.CANCELLED)
        assert h.launcher.stops == [h.runner_of("ts/g")]
        assert h.core.pool_manager.get_pool_status("local").running == 0
    finally:
        h.launcher.gate.set()
        h.core.stop(timeout=0.5)


def test_cancel_while_a_launch_fails_still_cancels(tmp_path: Path) -> None:
    h = _gated(tmp_path)
    try:
        h.launcher.fail_next_launch("no luck")
        h.submit(Task(id="f", title="F"))
        assert h.launcher.entered.wait(10)
        h.core.cancel("ts/f")
        h.launcher.gate.set()
        h.wait_state("ts/f", TaskState.CANCELLED)
        assert h.launcher.launches == []
        assert h.core.repo_pool.in_use_count() == 0 or wait_until(
            lambda: h.core.repo_pool.in_use_count() == 0, 5, "slot released")
    finally:
        h.launcher.gate.set()
        h.core.stop(timeout=0.5)


class SlowToAnswer(FakeLauncher):
    """A platform that takes its time answering the restart's reconcile (held by ``gate``)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.asked = threading.Event()

    def reconcile(self, pool: AgentPool) -> list[Runner]:
        self.asked.set()
        self.gate.wait(10)
        return super().reconcile(pool)


def test_a_heartbeat_before_the_restart_has_adopted_its_runner_is_not_told_to_stop(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    h.submit(Task(id="r", title="R"))
    rid = h.runner_of("ts/r")
    h.core.stop(timeout=5, leave_running=True)
    runner = h.launcher.runner(rid)
    launcher2 = SlowToAnswer()
    launcher2.add_adoptable(Runner(runner_id=rid, task_key="ts/r", pool_name="local",
                                   slot_id=runner.slot_id, state=RunnerState.RUNNING))
    core2 = DispatcherCore(h.config, registry=h.registry,
                           launchers={PoolType.LOCAL_PROCESS: launcher2})
    starting = threading.Thread(target=core2.start)
    starting.start()
    try:
        assert launcher2.asked.wait(10)  # the restart is asking the platform what still runs
        answer = EngineApiHandler(core2).on_heartbeat(rid, {})
        assert answer == {"ok": True}  # the runner keeps going: it is about to be adopted
        other = EngineApiHandler(core2).on_heartbeat("r-nobody", {})
        assert other.get("action") == "stop"  # a runner no RUNNING task names is still told
        launcher2.gate.set()
        starting.join(10)
        assert EventType.RUNNER_ADOPTED in h.events("ts/r")
        assert EngineApiHandler(core2).on_heartbeat(rid, {}) == {"ok": True}
        launcher2.finish(rid, 0)
        h.wait_state("ts/r", TaskState.DONE)
        assert launcher2.launches == [] and launcher2.stops == []
        assert EngineApiHandler(core2).on_heartbeat(rid, {}).get("action") == "stop"
    finally:
        launcher2.gate.set()
        starting.join(10)
        core2.stop(timeout=1)
