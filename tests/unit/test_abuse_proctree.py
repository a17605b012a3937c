"""Grandchildren that leave the agent's process group (setsid) never outlive their task.

Through the CLI (a real headless Dispatcher running real agents): after a task's end, after its
timeout fence and before its retry, nothing it started is left. At the launcher level both ways
of finding a tree are tried (cgroup v2 where writable, and the environment scan), and a slot is
never handed out while a process of an earlier run still works in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from necrocode.dispatcher.launchers import procfs
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher
from necrocode.dispatcher.launchers.proctree import ProcessTrees, runner_processes
from necrocode.dispatcher.models import AgentPool, Slot, Task
from necrocode.dispatcher.repo_pool.manager import RepoPoolManager
from support import wait_until

from necroui.cli import main

PY = sys.executable

#: An agent that starts a grandchild in a session of its own (it ignores SIGTERM and writes its
#: pid to PIDFILE), then behaves as MODE says: exit 0, exit 1, or sleep.
AGENT = textwrap.dedent("""\
    import os, signal, sys, time
    pidfile, mode = sys.argv[1], sys.argv[2]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open(pidfile + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(pidfile + ".tmp", pidfile)
            time.sleep(300)
        os._exit(0)
    while not os.path.exists(pidfile):
        time.sleep(0.01)
    if mode == "sleep":
        time.sleep(300)
    sys.exit(1 if mode == "fail" else 0)
""")

#: Attempt 2 of a retried task: succeeds only if attempt 1's grandchild is gone.
CHECK = textwrap.dedent("""\
    import os, sys
    from pathlib import Path
    first = Path(sys.argv[1])
    if not first.exists():  # attempt 1: the agent above, failing
        code = open(sys.argv[2]).read()
        sys.argv = [sys.argv[2], str(first), "fail"]
        exec(code)
    pid = int(first.read_text())
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    sys.exit(0 if state in ("gone", "Z", "X") else 3)
""")


def gone(pid: int) -> bool:
    st = procfs.read_stat(pid)
    return st is None or st.zombie


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    yield {"NECROCODE_REGISTRY": str(tmp_path / "state" / "reg.db")}
    for pidfile in tmp_path.glob("*.pid"):  # never leave a process behind, even on failure
        try:
            os.kill(int(pidfile.read_text()), 9)
        except (OSError, ValueError):
            pass


def run_taskset(env: dict[str, str], tmp_path: Path, tasks: list[dict[str, object]]) -> str:
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "check.py").write_text(CHECK)
    path = tmp_path / "t.json.yaml"
    path.write_text(json.dumps({"taskset": "trees", "tasks": tasks}))
    result = CliRunner().invoke(main, ["submit", str(path)], env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["--no-tui", "--until-done"], env=env)
    assert "Traceback" not in result.output
    return result.output


def test_nothing_outlives_a_task_its_timeout_or_its_retry(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    agent, check = str(tmp_path / "agent.py"), str(tmp_path / "check.py")
    ended, fenced, first = (str(tmp_path / f"{n}.pid") for n in ("ended", "fenced", "first"))
    output = run_taskset(env, tmp_path, [
        {"id": "ends", "title": "exits 0, leaves a setsid grandchild",
         "command": [PY, agent, ended, "ok"]},
        {"id": "hangs", "title": "times out", "timeout": 1, "max_attempts": 1,
         "command": [PY, agent, fenced, "sleep"]},
        {"id": "retried", "title": "fails once, then checks attempt 1 left nothing",
         "max_attempts": 2, "command": [PY, check, first, agent]},
    ])
    assert "DONE            2" in output and "FAILED          1" in output, output
    for pidfile in (ended, fenced, first):
        assert gone(int(Path(pidfile).read_text())), f"{pidfile}: still running"


@pytest.fixture(params=["cgroup", "scan"])
def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalProcessLauncher]:
    mode = str(request.param)
    if mode == "cgroup" and ProcessTrees("cgroup").kind != "cgroup":
        pytest.skip("cgroup v2 is not writable on this host")
    env = LaunchEnvironment(api_url=None, token_for=lambda rid: "", runs_dir=tmp_path / "runs",
                            stop_grace=0.5)
    made = LocalProcessLauncher(env, process_tree=mode)
    assert made.trees.kind == mode
    yield made
    made.close()


def launch(launcher: LocalProcessLauncher, tmp_path: Path, mode: str, name: str):  # noqa: ANN201
    slot_dir = tmp_path / "slot"
    slot_dir.mkdir(exist_ok=True)
    (tmp_path / "agent.py").write_text(AGENT)
    pidfile = tmp_path / f"{name}.pid"
    task = Task(name, "t", taskset="s", command=[PY, str(tmp_path / "agent.py"), str(pidfile),
                                                mode])
    runner = launcher.launch(task, Slot("scratch/0", str(slot_dir)), AgentPool("local"))
    wait_until(pidfile.exists, what="the grandchild to start")
    return runner, int(pidfile.read_text())


def test_stop_is_confirmed_only_when_the_whole_tree_is_gone(launcher: LocalProcessLauncher,
                                                            tmp_path: Path) -> None:
    runner, grandchild = launch(launcher, tmp_path, "sleep", "stopped")
    assert procfs.read_stat(grandchild).sid != procfs.read_stat(runner.details["pid"]).sid
    result = launcher.stop(runner, 0.2)
    assert result.confirmed, result.reason
    assert gone(grandchild)
    assert runner_processes([runner.runner_id]) == {}


def test_release_kills_what_a_finished_runner_left(launcher: LocalProcessLauncher,
                                                   tmp_path: Path) -> None:
    runner, grandchild = launch(launcher, tmp_path, "ok", "ended")
    wait_until(lambda: launcher.poll(runner) is not None, what="the agent to exit")
    assert not gone(grandchild)  # the agent is done, its grandchild is not
    launcher.release(runner)
    wait_until(lambda: gone(grandchild), timeout=10, what="the grandchild to be killed")
    if runner.details.get("cgroup"):
        assert not Path(runner.details["cgroup"]).exists()  # its cgroup is removed


def test_a_slot_is_not_handed_out_while_an_earlier_run_works_in_it(tmp_path: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state")
    first = pool.allocate_slot(Task("a", "a", taskset="s"))
    assert first is not None
    # escaped everything: its own session, no NECROCODE_RUNNER_ID in its environment
    stray = subprocess.Popen(["sleep", "300"], cwd=first.slot_path, env={},
                             start_new_session=True)
    try:
        pool.release_slot(first.slot_id)
        again = pool.allocate_slot(Task("b", "b", taskset="s"))
        assert again is not None and again.slot_id == first.slot_id
        wait_until(lambda: stray.poll() is not None, timeout=10, what="the stray to be killed")
    finally:
        if stray.poll() is None:
            stray.kill()
        stray.wait()


def test_the_cost_of_tree_tracking_stays_small(launcher: LocalProcessLauncher,
                                               tmp_path: Path) -> None:
    """Not a timing assertion: a launch and release of `true` leaves no cgroup behind."""
    slot_dir = tmp_path / "slot"
    slot_dir.mkdir()
    runner = launcher.launch(Task("t", "t", taskset="s", command=["true"]),
                             Slot("scratch/0", str(slot_dir)), AgentPool("local"))
    deadline = time.monotonic() + 20
    while launcher.poll(runner) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    launcher.release(runner)
    cgroup = runner.details.get("cgroup")
    assert cgroup is None or not Path(cgroup).exists()
