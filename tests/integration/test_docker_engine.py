"""DispatcherCore with a docker pool on a real Docker engine: runners run in containers through the
agent_runner wrapper, heartbeat to the Dispatcher's API, and are retried, fenced, OOM-killed and
adopted after a restart. Each test ends with no managed container and no volume left.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_support import docker_pool_config, wait_for
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolType,
    Resources,
    Task,
    Taskset,
    TaskState,
)

pytestmark = [pytest.mark.docker]

PY = sys.executable


def make_config(tmp_path: Path, **overrides: Any) -> DispatcherConfig:
    pool = AgentPool(name="docker", type=PoolType.DOCKER, max_concurrency=3, cpu_quota=2,
                     memory_quota=2048, config=docker_pool_config())
    base: dict[str, Any] = dict(
        registry_path=str(tmp_path / "registry.db"), state_dir=str(tmp_path / "state"),
        poll_interval=0.5, heartbeat_interval=0.5, heartbeat_timeout=4.0, retry_max_attempts=2,
        retry_backoff_base=0.1, retry_backoff_max=0.5, retry_jitter=0.0, runner_stop_grace=1.0,
        api_host="127.0.0.1", api_port=0, agent_pools=[pool],
        skill_mapping={"default": ["docker"]},
    )
    base.update(overrides)
    return DispatcherConfig(**base)


@pytest.fixture
def core_factory(docker_clean: Any, tmp_path: Path) -> Iterator[Callable[..., DispatcherCore]]:
    cores: list[DispatcherCore] = []

    def make(**overrides: Any) -> DispatcherCore:
        core = DispatcherCore(make_config(tmp_path, **overrides))
        cores.append(core)
        core.start()
        return core

    yield make
    for core in cores:
        if core.is_running:
            core.stop(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script(code: str) -> list[str]:
    return [PY, "-c", code]


def submit(core: DispatcherCore, *tasks: Task, name: str = "dock") -> None:
    for task in tasks:
        task.taskset = name
        task.tenant = name
    core.submit(Taskset(name=name, tasks=list(tasks)))


def wait_state(core: DispatcherCore, key: str, *states: TaskState, timeout: float = 60) -> Task:
    task: Task = wait_for(lambda: (t := core.registry.get_task(key)).state in states and t,
                          timeout, what=f"{key} in {[s.value for s in states]}")
    return task


def events(core: DispatcherCore, key: str) -> list[Any]:
    return list(core.registry.get_events(task_key=key))


def test_taskset_runs_to_completion_in_containers_with_heartbeats(
    core_factory: Callable[..., DispatcherCore], docker_clean: Any
) -> None:
    core = core_factory()
    write = ("import os, time, json\n"
             "time.sleep(1.2)\n"  # long enough for heartbeats through the wrapper
             "ctx = json.loads(os.environ['NECROCODE_TASK_CONTEXT'])\n"
             "open(os.path.join(os.getcwd(), 'done-' + ctx['task_id']), 'w').write('ok')\n"
             "print('finished', ctx['task'])\n")
    submit(core,
           Task(id="1", title="first", command=script(write)),
           Task(id="2", title="second", command=script(write), dependencies=["1"]),
           Task(id="3", title="third", command=script(write), dependencies=["1"]))
    for key in ("dock/1", "dock/2", "dock/3"):
        wait_state(core, key, TaskState.DONE)
    for key in ("dock/1", "dock/2", "dock/3"):
        evs = events(core, key)
        started = [e for e in evs if e.event_type is EventType.RUNNER_STARTED]
        assert len(started) == 1 and started[0].details["handle"]
        assert any(e.event_type is EventType.RUNNER_COMPLETED for e in evs)
        log = Path(started[0].details["log_path"]).read_text()
        assert f"finished {key}" in log
        # written by the wrapper through the attempt-dir mount; heartbeats the API accepted
        status = json.loads(Path(started[0].details["log_path"]).with_name(
            "exit_status.json").read_text())
        assert status["source"] == "wrapper" and status["exit_code"] == 0
        assert status["heartbeats"] >= 1


def test_non_zero_exit_is_retried_then_succeeds(
    core_factory: Callable[..., DispatcherCore]
) -> None:
    core = core_factory()
    flaky = "import os\nraise SystemExit(3 if os.environ['NECROCODE_ATTEMPT'] == '1' else 0)\n"
    submit(core, Task(id="flaky", command=script(flaky)))
    task = wait_state(core, "dock/flaky", TaskState.DONE)
    assert task.attempts == 1
    kinds = [e.event_type for e in events(core, "dock/flaky")]
    assert kinds.count(EventType.RUNNER_STARTED) == 2
    assert EventType.RUNNER_FAILED in kinds and EventType.TASK_RETRIED in kinds
    failed = next(e for e in events(core, "dock/flaky") if e.event_type is EventType.RUNNER_FAILED)
    assert failed.details["exit_code"] == 3


def test_hung_container_is_stopped_on_heartbeat_timeout(
    core_factory: Callable[..., DispatcherCore], docker_clean: Any
) -> None:
    core = core_factory()
    hang = ("import os, time\nprint('attempt', os.environ['NECROCODE_ATTEMPT'], flush=True)\n"
            "if os.environ['NECROCODE_ATTEMPT'] == '1':\n    time.sleep(600)\n")
    submit(core, Task(id="hang", command=script(hang)))
    wait_state(core, "dock/hang", TaskState.RUNNING)
    container = wait_for(lambda: docker_clean.containers.list(
        filters={"label": ["necrocode.managed=true", "necrocode.task=dock/hang"]}), 30,
        what="the first container")[0]
    wait_for(lambda: "attempt 1" in container.logs().decode(), 30, what="agent output")
    container.pause()  # frozen: neither the wrapper nor the agent can send anything
    task = wait_state(core, "dock/hang", TaskState.DONE, timeout=90)
    assert task.attempts == 1
    kinds = [e.event_type for e in events(core, "dock/hang")]
    assert EventType.RUNNER_LOST in kinds
    lost = next(e for e in events(core, "dock/hang") if e.event_type is EventType.RUNNER_LOST)
    assert "heartbeat_timeout" in lost.message
    import docker.errors

    with pytest.raises(docker.errors.NotFound):
        container.reload()  # fenced: stopped and removed before the retry


def test_memory_limit_is_enforced_with_a_clear_reason(
    core_factory: Callable[..., DispatcherCore]
) -> None:
    core = core_factory(retry_max_attempts=1)
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n"
    submit(core, Task(id="hog", command=script(hog), resources=Resources(cpu=1, memory_mb=64)))
    task = wait_state(core, "dock/hog", TaskState.FAILED)
    failed = next(e for e in events(core, "dock/hog") if e.event_type is EventType.RUNNER_FAILED)
    assert failed.details["oom_killed"] is True
    assert "OOMKilled" in failed.message and "64 MB" in failed.message
    assert "out of memory" in (task.last_error or "")


def test_restart_adopts_running_containers(
    core_factory: Callable[..., DispatcherCore], docker_clean: Any
) -> None:
    # the runner keeps heartbeating to the API URL it was given: the restarted Dispatcher must
    # serve the same port (as a real deployment does), or the adopted runner would be lost
    port = free_port()
    first = core_factory(api_port=port)
    slow = "import time\nprint('working', flush=True)\ntime.sleep(5)\nprint('done')\n"
    submit(first, Task(id="slow", command=script(slow)))
    wait_state(first, "dock/slow", TaskState.RUNNING)
    wait_for(lambda: docker_clean.containers.list(
        filters={"label": "necrocode.task=dock/slow"}), 30, what="container")
    first.stop(timeout=0, leave_running=True)
    running = docker_clean.containers.list(filters={"label": "necrocode.task=dock/slow"})
    assert len(running) == 1  # the Dispatcher went away; the container did not
    time.sleep(0.5)

    second = core_factory(api_port=port)
    task = wait_state(second, "dock/slow", TaskState.DONE)
    kinds = [e.event_type for e in events(second, "dock/slow")]
    assert EventType.RUNNER_ADOPTED in kinds
    assert kinds.count(EventType.RUNNER_STARTED) == 1, [  # never started twice
        (e.event_type.value, e.message) for e in events(second, "dock/slow")]
    assert task.attempts == 0
    started = next(e for e in events(second, "dock/slow")
                   if e.event_type is EventType.RUNNER_STARTED)
    log = Path(started.details["log_path"]).read_text()
    assert log.count("working") == 1 and "done" in log
