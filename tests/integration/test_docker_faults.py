"""A real Docker engine that cannot be reached at the wrong moment: a stop that cannot be
confirmed, and a restart while the engine is unreachable. The engine keeps running what it runs;
the Dispatcher reaches it through a socket the test cuts. A task must never have two containers
running at once."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker_support import ContainerWatch, EngineProxy, docker_pool_config, wait_for
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.docker import DockerLauncher
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolType,
    RunnerState,
    Task,
    Taskset,
    TaskState,
)

pytestmark = [pytest.mark.docker]

PY = sys.executable


@pytest.fixture
def proxy(docker_clean: Any) -> Iterator[EngineProxy]:
    target = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    folder = Path(tempfile.mkdtemp(prefix="necro-proxy-"))
    engine = EngineProxy(target, folder / "docker.sock")
    yield engine
    engine.close()


def make_core(tmp_path: Path, proxy: EngineProxy, **overrides: Any) -> DispatcherCore:
    pool = AgentPool(name="docker", type=PoolType.DOCKER, max_concurrency=2,
                     config=docker_pool_config())
    base: dict[str, Any] = dict(
        registry_path=str(tmp_path / "registry.db"), state_dir=str(tmp_path / "state"),
        poll_interval=0.5, heartbeat_interval=0.5, heartbeat_timeout=30.0, retry_max_attempts=3,
        retry_backoff_base=0.1, retry_backoff_max=0.5, retry_jitter=0.0, runner_stop_grace=1.0,
        api_host="127.0.0.1", agent_pools=[pool], skill_mapping={"default": ["docker"]})
    base.update(overrides)
    launcher = DockerLauncher(
        LaunchEnvironment(api_url=None, token_for=lambda rid: "", runs_dir=tmp_path),
        client_factory=lambda: docker.DockerClient(base_url=proxy.url, timeout=5))
    return DispatcherCore(DispatcherConfig(**base), launchers={PoolType.DOCKER: launcher})


def submit(core: DispatcherCore, task: Task) -> None:
    task.taskset = "dock"
    core.submit(Taskset(name="dock", tasks=[task]))


def kinds(core: DispatcherCore, key: str) -> list[EventType]:
    return [e.event_type for e in core.registry.get_events(task_key=key)]


def test_a_stop_the_engine_cannot_confirm_never_relaunches_the_task(
        tmp_path: Path, proxy: EngineProxy, docker_clean: Any) -> None:
    core = make_core(tmp_path, proxy)
    watch = ContainerWatch(docker_clean, "dock/slow")
    core.start()
    try:
        code = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"
        submit(core, Task(id="slow", command=[PY, "-c", code], timeout=3))
        container = wait_for(lambda: docker_clean.containers.list(
            filters={"label": "necrocode.task=dock/slow"}), 60, what="the container")[0]
        proxy.cut()  # the engine's socket is gone before the timeout's stop
        stuck = wait_for(lambda: next((v for v in core.snapshot().running if v.progress
                                       and "not confirmed" in v.progress), None), 60,
                         what="an unconfirmed stop")
        assert "docker engine could not be asked" in (stuck.progress or "")
        container.reload()
        assert container.status == "running"  # it still runs: nothing may start again
        task = core.registry.get_task("dock/slow")
        assert task.state is TaskState.RUNNING and task.attempts == 0
        assert core.pool_manager.get_pool_status("docker").running == 1
        assert EventType.RUNNER_TIMED_OUT in kinds(core, "dock/slow")
        assert kinds(core, "dock/slow").count(EventType.TASK_ASSIGNED) == 1
        proxy.restore()  # the next try confirms the stop; only then is the task retried
        wait_for(lambda: kinds(core, "dock/slow").count(EventType.TASK_ASSIGNED) == 2, 60,
                 what="the retry after the confirmed stop")
        with pytest.raises(docker.errors.NotFound):
            container.reload()
        assert core.registry.get_task("dock/slow").attempts == 1
    finally:
        proxy.restore()
        core.stop(timeout=0)
        watch.stop()
    assert watch.most == 1, f"{watch.most} containers of one task ran at once"


def test_restart_with_the_engine_unreachable_keeps_the_task_until_it_answers(
        tmp_path: Path, proxy: EngineProxy, docker_clean: Any) -> None:
    code = "import time\nprint('working', flush=True)\ntime.sleep(6)\nprint('done')\n"
    first = make_core(tmp_path, proxy)
    watch = ContainerWatch(docker_clean, "dock/slow")
    first.start()
    port = int((first.api_url or "").rsplit(":", 1)[1])
    submit(first, Task(id="slow", command=[PY, "-c", code]))
    wait_for(lambda: docker_clean.containers.list(
        filters={"label": "necrocode.task=dock/slow"}), 60, what="the container")
    first.stop(timeout=0, leave_running=True)

    proxy.cut()  # the dispatcher restarts while the engine cannot be asked
    second = make_core(tmp_path, proxy, api_port=port)
    second.start()
    try:
        view = wait_for(lambda: next(iter(second.snapshot().running), None), 10, what="view")
        assert view.runner_state is RunnerState.UNKNOWN
        assert second.registry.get_task("dock/slow").state is TaskState.RUNNING
        assert EventType.RUNNER_UNKNOWN in kinds(second, "dock/slow")
        assert kinds(second, "dock/slow").count(EventType.TASK_ASSIGNED) == 1
        proxy.restore()  # asked again: the container is found and adopted, never run twice
        task = wait_for(lambda: (t := second.registry.get_task("dock/slow")).state
                        is TaskState.DONE and t, 90, what="dock/slow done")
        events = kinds(second, "dock/slow")
        assert EventType.RUNNER_ADOPTED in events
        assert events.count(EventType.TASK_ASSIGNED) == 1 and task.attempts == 0
    finally:
        proxy.restore()
        second.stop(timeout=0)
        watch.stop()
    assert watch.most == 1 and len(watch.ids) == 1, (watch.most, watch.ids)


def test_stop_reports_unconfirmed_when_the_engine_is_gone(
        tmp_path: Path, proxy: EngineProxy, docker_clean: Any) -> None:
    """The launcher alone: a stop while the socket is cut is not confirmed, never raises;
    after the socket is back the same stop is confirmed."""
    from necrocode.dispatcher.models import Slot

    launcher = DockerLauncher(
        LaunchEnvironment(api_url=None, token_for=lambda rid: "", runs_dir=tmp_path),
        client_factory=lambda: docker.DockerClient(base_url=proxy.url, timeout=5))
    pool = AgentPool(name="docker", type=PoolType.DOCKER, config=docker_pool_config())
    task = Task(id="t", taskset="dock", command=[PY, "-c", "import time; time.sleep(600)"])
    slot_dir = tmp_path / "slot"
    slot_dir.mkdir()
    runner = launcher.launch(task, Slot(slot_id="s", slot_path=str(slot_dir)), pool)
    try:
        proxy.cut()
        answer = launcher.stop(runner, grace=1.0)
        assert not answer.confirmed and "could not be asked" in answer.reason
        proxy.restore()
        answer = launcher.stop(runner, grace=1.0)
        assert answer.confirmed, answer.reason
    finally:
        proxy.restore()
        launcher.release(runner)
        launcher.close()
