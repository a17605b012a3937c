"""The local launcher's spawn server, with real processes: one exec per task, the status
written before the child is reaped, the server outliving its Dispatcher, and what happens
when the server is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from necrocode.dispatcher.launchers import procfs
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import EXIT_FILE, LocalProcessLauncher
from necrocode.dispatcher.models import AgentPool, Runner, Slot, Task
from support import wait_until

PY = sys.executable
POOL = AgentPool(name="local")


def py_task(code: str, tid: str = "1") -> Task:
    return Task(id=tid, taskset="s", command=[PY, "-c", code])


def ppid_of(pid: int) -> int:
    st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(st[1])


@pytest.fixture
def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalProcessLauncher]:
    monkeypatch.delenv("NECROCODE_SPAWNER", raising=False)
    env = LaunchEnvironment(api_url=None, token_for=lambda rid: "", runs_dir=tmp_path / "runs",
                            stop_grace=2.0)
    made = LocalProcessLauncher(env)
    yield made
    made.close()


@pytest.fixture
def slot(tmp_path: Path) -> Slot:
    path = tmp_path / "slot"
    path.mkdir()
    return Slot(slot_id="scratch/0", slot_path=str(path))


def ended(launcher: LocalProcessLauncher, runner: Runner) -> bool:
    return launcher.poll(runner) is not None


def test_the_agent_is_the_servers_child_and_its_status_is_on_disk_when_it_ends(
        launcher: LocalProcessLauncher, slot: Slot) -> None:
    runner = launcher.launch(py_task("import time; time.sleep(0.3); raise SystemExit(3)"),
                             slot, POOL)
    pid = int(runner.handle or 0)
    server = launcher.spawn_server_pid
    assert server is not None and ppid_of(pid) == server  # one exec: no shell in between
    if runner.details.get("cgroup"):  # it started inside its runner's cgroup
        assert Path(f"/proc/{pid}/cgroup").read_text().strip().endswith(runner.runner_id)
    wait_until(lambda: ended(launcher, runner), what="the agent to end")
    result = launcher.poll(runner)
    assert result is not None and result.exit_code == 3
    status = json.loads((Path(runner.attempt_dir or "") / EXIT_FILE).read_text())
    assert status == {"exit_code": 3, "runner_id": runner.runner_id, "source": "spawn-server"}
    assert "agent" not in Path(runner.log_path or "").read_text()  # nothing else in the log


def test_a_command_that_cannot_start_is_a_launch_error(launcher: LocalProcessLauncher,
                                                       slot: Slot) -> None:
    from necrocode.dispatcher.errors import RunnerLaunchError

    script = Path(slot.slot_path) / "agent.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    launcher.launch(Task(id="2", taskset="s", command=["./agent.sh"]), slot, POOL)  # starts
    script.write_bytes(b"\x7fELF broken")  # executable, but not a program the kernel runs
    with pytest.raises(RunnerLaunchError, match="cannot start task 's/3'"):
        launcher.launch(Task(id="3", taskset="s", command=["./agent.sh"]), slot, POOL)
    assert launcher.spawn_server_pid is not None  # one bad command does not end the server


def test_the_server_outlives_its_dispatcher_and_records_what_ends_meanwhile(
        tmp_path: Path, slot: Slot) -> None:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from necrocode.dispatcher.launchers.base import LaunchEnvironment\n"
        "from necrocode.dispatcher.launchers.local import LocalProcessLauncher\n"
        "from necrocode.dispatcher.models import AgentPool, Slot, Task\n"
        "env = LaunchEnvironment(api_url=None, token_for=lambda r: '',\n"
        "                        runs_dir=Path(sys.argv[1]))\n"
        "launcher = LocalProcessLauncher(env)\n"
        "task = Task(id='9', taskset='s', command=[sys.executable, '-c',\n"
        "            'import time; time.sleep(1.0); raise SystemExit(5)'])\n"
        "runner = launcher.launch(task, Slot('scratch/0', sys.argv[2]), AgentPool(name='local'))\n"
        "print(json.dumps({'dir': runner.attempt_dir, 'server': launcher.spawn_server_pid}))\n"
        "import os; os._exit(0)  # as a Dispatcher killed -9 would: nothing closed\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NECROCODE_SPAWNER"}
    out = subprocess.run([PY, "-c", code, str(tmp_path / "runs"), slot.slot_path],
                         capture_output=True, timeout=60, env=env, check=True)
    info = json.loads(out.stdout)
    server = int(info["server"])
    assert procfs.same_process(server, None)  # the Dispatcher is gone, the server is not
    exit_file = Path(info["dir"]) / EXIT_FILE
    wait_until(exit_file.exists, what="the status of the run that ended meanwhile")
    assert json.loads(exit_file.read_text())["exit_code"] == 5
    wait_until(lambda: not procfs.same_process(server, None), what="the server to exit")


def test_when_the_server_is_gone_runs_are_still_watched_and_new_ones_start(
        launcher: LocalProcessLauncher, slot: Slot, tmp_path: Path) -> None:
    running = launcher.launch(py_task("import time; time.sleep(600)", "4"), slot, POOL)
    server = launcher.spawn_server_pid
    assert server is not None
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: launcher.spawn_server_pid is None, what="the launcher to see it gone")
    assert launcher.poll(running) is None  # still running, now watched as an adopted one
    other = tmp_path / "slot2"
    other.mkdir()
    later = launcher.launch(py_task("raise SystemExit(0)", "5"),
                            Slot("scratch/1", str(other)), POOL)
    wait_until(lambda: ended(launcher, later), what="the later run to end")
    assert launcher.poll(later).exit_code == 0  # type: ignore[union-attr]
    assert launcher.stop(running, grace=1.0).confirmed
    assert not procfs.same_process(int(running.handle or 0), None)


def test_the_server_exits_once_its_dispatcher_let_go_and_its_last_child_ended(
        launcher: LocalProcessLauncher, slot: Slot) -> None:
    runner = launcher.launch(py_task("import time; time.sleep(0.5)"), slot, POOL)
    server = launcher.spawn_server_pid
    assert server is not None
    launcher.close()  # the Dispatcher stops; its runner is left to end (or be adopted)
    assert procfs.same_process(server, None)
    wait_until(lambda: not procfs.same_process(int(runner.handle or 0), None),
             what="the runner to end")
    wait_until(lambda: not procfs.same_process(server, None), what="the server to exit")


def test_another_launchers_prune_leaves_an_open_launchers_spawn_cgroup_alone(
        tmp_path: Path) -> None:
    """A spawn server's cgroup is empty for the moment the server steps into a runner's
    cgroup to spawn; a prune by another launcher starting then (it removes empty spawn cgroups
    older than a few seconds) must leave it while its launcher is open, and may remove it once
    the launcher let go."""
    from necrocode.dispatcher.launchers.proctree import SPAWN_PRUNE_AGE, ProcessTrees

    trees = ProcessTrees("cgroup")
    if trees.kind != "cgroup":
        pytest.skip("cgroup v2 is not writable here")  # the scan mode has no spawn cgroups
    owner = object()
    home = trees.spawn_home(owner)
    assert home is not None
    os.mkdir(home)  # empty, as in the moment of a spawn
    try:
        old = os.stat(home).st_mtime - SPAWN_PRUNE_AGE - 60
        os.utime(home, (old, old))
        assert os.stat(home).st_mtime == old
        ProcessTrees("cgroup")  # another launcher starts: it prunes
        assert os.path.isdir(home)
        trees.release_spawn_home(owner)
        ProcessTrees("cgroup")
        assert not os.path.isdir(home)
    finally:
        trees.release_spawn_home(owner)
        if os.path.isdir(home):
            os.rmdir(home)
