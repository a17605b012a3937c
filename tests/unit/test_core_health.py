"""Pool platform health in the engine: an unreachable Docker engine or Kubernetes API is one
warning line per pool (no traceback), the pool is unhealthy in the snapshot and skipped in
favour of healthy mapped pools; a launch error caused by the task does not count against the
pool."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers.base import agent_argv
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import (
    AgentPool,
    PoolType,
    Runner,
    Slot,
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
        retry_max_attempts=3, retry_backoff_base=0.05, retry_jitter=0.0, api_enabled=False,
        runner_stop_grace=0.2, agent_pools=pools,
        skill_mapping={"default": [p.name for p in pools]})
    base.update(overrides)
    return DispatcherConfig(**base)

DOCKER_DOWN = ("cannot reach the Docker engine at unix:///var/run/docker.sock: is dockerd "
               "running? check DOCKER_HOST")


class UnreachableLauncher(FakeLauncher):
    """A docker launcher whose engine does not answer: reconcile raises, health says why."""

    def reconcile(self, pool: AgentPool) -> list[Runner]:
        raise FileNotFoundError(2, "No such file or directory")


class ArgvLauncher(FakeLauncher):
    """Builds the agent argv like the real launchers (a task without a command fails)."""

    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        agent_argv(task, slot, pool, "r-x", attempt)
        return super().launch(task, slot, pool, attempt=attempt)


def test_unreachable_platform_is_one_warning_and_an_unhealthy_skipped_pool(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pools = [AgentPool(name="docker", type=PoolType.DOCKER, max_concurrency=2,
                       config={"image": "x"}),
             AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)]
    config = make_config(tmp_path, agent_pools=pools)
    docker, local = UnreachableLauncher(), FakeLauncher()
    docker.set_health(False, DOCKER_DOWN)
    registry = MemoryRegistry()
    core = DispatcherCore(config, registry=registry,
                          launchers={PoolType.DOCKER: docker, PoolType.LOCAL_PROCESS: local})
    caplog.set_level(logging.DEBUG, logger="necrocode.dispatcher")
    core.start()
    try:
        snap = wait_until(lambda: (s := core.snapshot()) and not s.pools[0].healthy and s, 10,
                          "docker pool unhealthy in the snapshot")
        status = {p.pool_name: p for p in snap.pools}
        assert "DOCKER_HOST" in (status["docker"].last_error or "")
        assert status["local"].healthy
        core.submit(Taskset(name="ts", tasks=[Task(id="a", title="A", taskset="ts")]))
        wait_until(lambda: local.launch_for("ts/a"), 10, "launch in the healthy pool")
        assert docker.launches == []
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING
                    and "docker" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert warnings[0].exc_info is None
        assert "DOCKER_HOST" in warnings[0].getMessage()
        assert getattr(warnings[0], "pool", None) == "docker"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        docker.set_health(True, "")  # the engine answers again: the next check heals it
        core.check_platforms()
        wait_until(lambda: core.snapshot().pools[0].healthy, 10, "docker pool healthy again")
    finally:
        core.stop(timeout=0.5)


def test_an_unavailable_pool_takes_no_tasks_they_wait_with_the_reason(tmp_path: Path) -> None:
    # The only mapped pool's engine is down: launching would only burn attempts, so the task
    # waits, says why, and runs once the platform answers again.
    pools = [AgentPool(name="docker", type=PoolType.DOCKER, max_concurrency=2,
                       config={"image": "x"})]
    config = make_config(tmp_path, agent_pools=pools)
    docker = UnreachableLauncher()
    docker.set_health(False, DOCKER_DOWN)
    core = DispatcherCore(config, registry=MemoryRegistry(), launchers={PoolType.DOCKER: docker})
    core.start()
    try:
        wait_until(lambda: not core.snapshot().pools[0].healthy, 10, "docker pool unavailable")
        core.submit(Taskset(name="ts", tasks=[Task(id="a", title="A", taskset="ts")]))
        view = wait_until(
            lambda: next((q for q in core.snapshot().queued
                          if q.key == "ts/a" and "unavailable" in q.pending.message), None),
            10, "the pending reason naming the unavailable pool")
        assert "DOCKER_HOST" in view.pending.message
        assert docker.launches == []
        assert core.registry.get_task("ts/a").attempts == 0
        docker.set_health(True, "")
        core.check_platforms()
        wait_until(lambda: docker.launch_for("ts/a"), 10, "launch once the engine answers")
    finally:
        core.stop(timeout=0.5)


def test_task_without_command_fails_without_hurting_the_pool(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    launcher = ArgvLauncher()
    registry = MemoryRegistry()
    core = DispatcherCore(config, registry=registry,
                          launchers={PoolType.LOCAL_PROCESS: launcher})
    core.start()
    try:
        core.submit(Taskset(name="ts", tasks=[
            Task(id=f"n{i}", title="no command", taskset="ts") for i in range(4)]))
        for i in range(4):
            task = wait_until(lambda i=i: (t := registry.get_task(f"ts/n{i}")).state
                              is TaskState.FAILED and t, 10, "FAILED")
            assert task.attempts == 1 and "agent_command" in (task.last_error or "")
        pool = core.pool_manager.get_pool_status("local")
        assert pool.healthy and pool.recent_launch_errors == 0
    finally:
        core.stop(timeout=0.5)


def test_launch_errors_from_the_platform_still_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeLauncher):
        def launch(self, task: Task, slot: Slot, pool: AgentPool, *,
                   attempt: int = 1) -> Runner:
            raise RunnerLaunchError("fork failed", pool=pool.name)

    config = make_config(tmp_path, retry_max_attempts=1)
    core = DispatcherCore(config, registry=MemoryRegistry(),
                          launchers={PoolType.LOCAL_PROCESS: Broken()})
    core.start()
    try:
        core.submit(Taskset(name="ts", tasks=[Task(id="x", title="X", taskset="ts")]))
        wait_until(lambda: core.pool_manager.get_pool_status("local").recent_launch_errors, 10,
                   "a counted launch error")
        # the log line names its task and pool: --log-format json carries them (not null)
        from necrocode.dispatcher.logging_setup import JsonFormatter

        record = next(r for r in caplog.records if "launch of ts/x" in r.getMessage())
        line = json.loads(JsonFormatter().format(record))
        assert line["task"] == "ts/x" and line["pool"] == "local"
    finally:
        core.stop(timeout=0.5)


def test_invalid_config_in_code_raises_every_problem(tmp_path: Path) -> None:
    from necrocode.dispatcher.errors import ConfigError

    config = make_config(tmp_path, max_global_concurrency=0, heartbeat_timeout=-1.0,
                         skill_mapping={"default": ["nowhere"]})
    with pytest.raises(ConfigError) as err:
        DispatcherCore(config, registry=MemoryRegistry())
    keys = {p.key for p in err.value.problems}
    assert {"dispatcher.max_global_concurrency", "dispatcher.heartbeat_timeout"} <= keys
    assert any("nowhere" in str(p) for p in err.value.problems)
    # a fast shrinking backoff stays allowed from code (tests use it)
    DispatcherCore(make_config(tmp_path, retry_backoff_base=0.05), registry=MemoryRegistry())
