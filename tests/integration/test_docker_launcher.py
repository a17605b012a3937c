"""DockerLauncher against a real Docker engine: spec, exit codes, OOM, stop, logs, adoption."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_support import docker_pool_config, managed_containers, wait_for
from necrocode.dispatcher.launchers.base import LaunchEnvironment, RunnerExit
from necrocode.dispatcher.launchers.docker import DockerLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, Runner, Slot, Task

pytestmark = [pytest.mark.docker]

PY = sys.executable


class ExitRecorder:
    """on_exit callback that remembers which runners were reported."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.event = threading.Event()

    def __call__(self, runner_id: str) -> None:
        self.ids.append(runner_id)
        self.event.set()


@pytest.fixture
def exits() -> ExitRecorder:
    return ExitRecorder()


@pytest.fixture
def launch_env(tmp_path: Path, exits: ExitRecorder) -> LaunchEnvironment:
    return LaunchEnvironment(
        api_url=None, token_for=lambda rid: f"tok-{rid}", runs_dir=tmp_path / "runs",
        heartbeat_interval=0.5, heartbeat_timeout=5.0, stop_grace=2.0, on_exit=exits,
    )


@pytest.fixture
def launcher(docker_clean: Any, launch_env: LaunchEnvironment) -> Iterator[DockerLauncher]:
    launcher = DockerLauncher(launch_env)
    yield launcher
    launcher.close()


@pytest.fixture
def slot(tmp_path: Path) -> Slot:
    path = tmp_path / "slot"
    path.mkdir()
    return Slot(slot_id="repo-0", slot_path=str(path), repo=None, branch="necrocode/t")


def pool(**config: Any) -> AgentPool:
    return AgentPool(name="dock", type=PoolType.DOCKER, max_concurrency=4, cpu_quota=2.0,
                     memory_quota=1024, config=docker_pool_config(use_wrapper=False, **config))


def wait_exit(launcher: DockerLauncher, runner: Runner, timeout: float = 60.0) -> RunnerExit:
    result: RunnerExit = wait_for(lambda: launcher.poll(runner), timeout, what="container exit")
    return result


def script(code: str) -> list[str]:
    return [PY, "-c", code]


def test_container_runs_with_spec_env_mounts_and_logs(
    launcher: DockerLauncher, slot: Slot, task_factory: Callable[..., Task], docker_clean: Any,
    exits: ExitRecorder,
) -> None:
    code = (
        "import os, json, sys, time\n"
        "ctx = json.loads(os.environ['NECROCODE_TASK_CONTEXT'])\n"
        "print('runner', os.environ['NECROCODE_RUNNER_ID'], 'pool', os.environ['POOL_NAME'])\n"
        "print('slot', ctx['slot_path'], os.getcwd())\n"
        "print('to stderr', file=sys.stderr)\n"
        "open('/workspace/result.txt', 'w').write(ctx['task'])\n"
        "time.sleep(1.5)\n"
    )
    task = task_factory(id="1.1", taskset="My Set", command=script(code),
                        resources=Resources(cpu=0.5, memory_mb=256))
    runner = launcher.launch(task, slot, pool(), attempt=2)
    container = docker_clean.containers.get(runner.details["container_id"])
    # name and labels
    assert container.name == f"necrocode-{runner.runner_id}"
    labels = container.labels
    assert labels["necrocode.managed"] == "true"
    assert labels["necrocode.runner-id"] == runner.runner_id
    assert labels["necrocode.task"] == "My Set/1.1"
    assert labels["necrocode.taskset"] == "My Set"
    assert labels["necrocode.pool"] == "dock"
    assert labels["necrocode.attempt"] == "2"
    # limits from the task's resources (within the pool's quotas)
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["NetworkMode"] == "host"
    binds = host["Binds"]
    assert f"{slot.slot_path}:/workspace:rw" in binds
    assert runner.handle == container.id[:12] and runner.cpu == 0.5 and runner.memory_mb == 256
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["NECROCODE_SLOT_PATH"] == "/workspace"
    assert env["RUNNER_ID"] == runner.runner_id and "TASK_CONTEXT" in env
    assert launcher.poll(runner) is None
    result = wait_exit(launcher, runner)
    assert result == RunnerExit(0, "exited", finished_at=result.finished_at, oom_killed=False)
    assert runner.runner_id in exits.ids  # the events thread woke the engine
    out = Path(runner.log_path or "").read_text()
    assert f"runner {runner.runner_id} pool dock" in out
    assert "slot /workspace /workspace" in out and "to stderr" in out
    assert (Path(slot.slot_path) / "result.txt").read_text() == "My Set/1.1"
    # read before removal, removed after: nothing left
    assert not docker_clean.containers.list(all=True, filters={"id": container.id})
    launcher.release(runner)


def test_non_zero_exit_is_reported(
    launcher: DockerLauncher, slot: Slot, task_factory: Callable[..., Task]
) -> None:
    task = task_factory(command=script("print('failing'); raise SystemExit(3)"))
    runner = launcher.launch(task, slot, pool())
    result = wait_exit(launcher, runner)
    assert result.exit_code == 3 and result.reason == "exited" and not result.succeeded
    assert "failing" in Path(runner.log_path or "").read_text()


def test_memory_limit_is_enforced_and_reported_as_oom(
    launcher: DockerLauncher, slot: Slot, task_factory: Callable[..., Task]
) -> None:
    code = "import time\nblocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n"
    task = task_factory(command=script(code), resources=Resources(cpu=1.0, memory_mb=64))
    runner = launcher.launch(task, slot, pool())
    result = wait_exit(launcher, runner)
    assert result.oom_killed
    assert result.exit_code == 137
    assert result.reason.startswith("OOMKilled") and "64 MB" in result.reason


def test_stop_terminates_then_kills_and_removes(
    launcher: DockerLauncher, slot: Slot, task_factory: Callable[..., Task], docker_clean: Any,
    session_dir: str,
) -> None:
    # ignores SIGTERM, so stop must escalate to SIGKILL after the grace period
    code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(600)\n")
    task = task_factory(command=script(code))
    runner = launcher.launch(task, slot, pool())
    wait_for(lambda: "ready" in Path(runner.log_path or "").read_text(), 30, what="ready line")
    stopped = launcher.stop(runner, grace=1.0)
    assert stopped.confirmed, stopped.reason
    result = stopped.exit
    assert result is not None and result.exit_code == 137
    assert result.reason.startswith("stopped: ")
    assert not managed_containers(docker_clean, session_dir)
    assert launcher.poll(runner) == result


def test_restart_adopts_running_and_reports_exited_containers(
    docker_clean: Any, launch_env: LaunchEnvironment, slot: Slot, tmp_path: Path,
    task_factory: Callable[..., Task],
) -> None:
    first = DockerLauncher(launch_env)
    p = pool()
    long_task = task_factory(id="long", command=script(
        "import time\nprint('before restart', flush=True)\ntime.sleep(3)\nprint('after')\n"))
    quick_task = task_factory(id="quick", command=script("raise SystemExit(5)"))
    slot2 = Slot(slot_id="repo-1", slot_path=str(tmp_path))
    long_runner = first.launch(long_task, slot, p)
    quick_runner = first.launch(quick_task, slot2, p)
    first.close()  # the Dispatcher goes away; containers keep running
    wait_for(lambda: docker_clean.containers.get(
        quick_runner.details["container_id"]).status == "exited", 30, what="quick exit")

    second = DockerLauncher(launch_env)
    try:
        adopted = {r.runner_id: r for r in second.reconcile(p)}
        assert set(adopted) == {long_runner.runner_id, quick_runner.runner_id}
        again = adopted[long_runner.runner_id]
        assert again.task_key == long_task.key and again.slot_id == "repo-0"
        assert again.handle == long_runner.handle and again.details["adopted"]
        assert second.reconcile(AgentPool(name="other", type=PoolType.DOCKER)) == []
        quick = second.poll(adopted[quick_runner.runner_id])
        assert quick is not None and quick.exit_code == 5
        assert second.poll(again) is None
        done = wait_exit(second, again)
        assert done.exit_code == 0
        text = Path(again.log_path or "").read_text()
        assert text.count("before restart") == 1 and "after" in text
    finally:
        second.close()


def test_health_and_launch_error_when_engine_is_down(
    launch_env: LaunchEnvironment, slot: Slot, task_factory: Callable[..., Task],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from necrocode.dispatcher.errors import RunnerLaunchError

    sock = tmp_path / "nothing.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    down = DockerLauncher(launch_env)
    ok, why = down.health(pool())
    assert not ok and f"unix://{sock}" in why and "is dockerd running" in why
    with pytest.raises(RunnerLaunchError, match="cannot reach the Docker engine"):
        down.launch(task_factory(command=["true"]), slot, pool())
    down.close()
