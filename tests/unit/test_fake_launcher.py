"""FakeLauncher: the in-memory launcher engine tests drive."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import AgentPool, Runner, RunnerState, Slot, Task

POOL = AgentPool(name="local", max_concurrency=2)
SLOT = Slot("scratch/0", "/tmp/nowhere")


def test_records_launches_and_ends_runners(tmp_path: Path) -> None:
    woken: list[str] = []
    launcher = FakeLauncher(LaunchEnvironment(api_url=None, token_for=lambda r: "",
                                              runs_dir=tmp_path, on_exit=woken.append))
    a = launcher.launch(Task(id="1", taskset="s", command=["agent"]), SLOT, POOL)
    b = launcher.launch(Task(id="2", taskset="s"), SLOT, POOL, attempt=2)
    assert a.state is RunnerState.RUNNING and b.attempt == 2
    assert [launch.argv for launch in launcher.launches] == [["agent"], None]
    assert launcher.running() == [a.runner_id, b.runner_id]
    assert launcher.poll(a) is None and launcher.is_alive(a)
    launcher.finish(a.runner_id, 0)
    launcher.crash(b.runner_id)
    assert woken == [a.runner_id, b.runner_id]
    assert launcher.poll(a).exit_code == 0  # type: ignore[union-attr]
    crashed = launcher.poll(b)
    assert crashed is not None and crashed.exit_code is None
    launcher.finish(a.runner_id, 1)  # ending twice changes nothing
    assert launcher.poll(a).exit_code == 0  # type: ignore[union-attr]
    assert launcher.launch_for("s/1")[0].runner is a


def test_hang_stop_and_launch_failures() -> None:
    launcher = FakeLauncher()
    runner = launcher.launch(Task(id="1", taskset="s"), SLOT, POOL)
    launcher.hang(runner.runner_id)
    result = launcher.stop(runner).exit
    assert result is not None and "SIGKILL" in result.reason
    assert launcher.stops == [runner.runner_id] and launcher.running() == []
    launcher.fail_next_launch("docker down", retryable=False)
    with pytest.raises(RunnerLaunchError) as err:
        launcher.launch(Task(id="2", taskset="s"), SLOT, POOL)
    assert not err.value.retryable
    launcher.launch(Task(id="2", taskset="s"), SLOT, POOL)
    with pytest.raises(KeyError):
        launcher.finish("unknown")


def test_waits_and_reconcile() -> None:
    launcher = FakeLauncher()
    threading.Timer(0.05, lambda: launcher.launch(Task(id="1", taskset="s"), SLOT, POOL)).start()
    assert len(launcher.wait_for_launches(1, timeout=10)) == 1
    assert len(launcher.wait_for_running(1, timeout=10)) == 1
    with pytest.raises(TimeoutError):
        launcher.wait_for_launches(5, timeout=0.05)
    live = Runner(runner_id="r-old", task_key="s/9", pool_name="local")
    launcher.add_adoptable(live)
    assert launcher.reconcile(AgentPool(name="other")) == []
    assert launcher.reconcile(POOL) == [live]
    assert launcher.poll(live) is None
    launcher.release(live)
    assert launcher.released == ["r-old"]
