"""LocalProcessLauncher with real processes: log, env contract, no shell, exit file, stop, adopt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers import procfs
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import (
    EXIT_FILE,
    RUNNER_FILE,
    LocalProcessLauncher,
    read_exit_status,
)
from necrocode.dispatcher.models import AgentPool, Runner, Slot, Task

PY = sys.executable


def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Exits:
    """Collects on_exit calls (from the watcher thread)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, runner_id: str) -> None:
        with self.lock:
            self.ids.append(runner_id)


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def make_launcher(tmp_path: Path, exits: Exits) -> Iterator[Callable[..., LocalProcessLauncher]]:
    made: list[LocalProcessLauncher] = []

    def factory(**kwargs: object) -> LocalProcessLauncher:
        env = LaunchEnvironment(
            api_url="http://127.0.0.1:9", token_for=lambda rid: f"tok-{rid}",
            runs_dir=tmp_path / "runs", stop_grace=5.0, on_exit=exits,
        )
        launcher = LocalProcessLauncher(env, **kwargs)  # type: ignore[arg-type]
        made.append(launcher)
        return launcher

    yield factory
    for launcher in made:
        for t in list(launcher._tracked.values()):  # never leave processes behind
            procfs.kill_group(t.pgid, 0.0, reap=lambda t=t: t.proc and t.proc.poll())
        launcher.close()


@pytest.fixture
def slot(tmp_path: Path) -> Slot:
    path = tmp_path / "slot"
    path.mkdir()
    return Slot(slot_id="scratch/0", slot_path=str(path), branch="feature/task-s-1")


POOL = AgentPool(name="local", max_concurrency=4, config={"model": "m1"})


def py_task(code: str, task_id: str = "1", **kw: object) -> Task:
    return Task(id=task_id, taskset="s", title="t", command=[PY, "-c", textwrap.dedent(code)],
                **kw)  # type: ignore[arg-type]


def wait_exit(launcher: LocalProcessLauncher, runner: Runner, timeout: float = 20.0):  # noqa: ANN201
    wait_for(lambda: launcher.poll(runner) is not None, timeout, f"{runner.runner_id} to exit")
    return launcher.poll(runner)


def test_log_holds_stdout_and_stderr_and_env_contract(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot, exits: Exits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NECROCODE_ADMIN_SECRET", "must-not-leak")
    monkeypatch.setenv("KEEP_ME", "yes")
    launcher = make_launcher()
    runner = launcher.launch(py_task("""
        import json, os, sys
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        keys = ["NECROCODE_RUNNER_ID", "NECROCODE_TASK_CONTEXT", "NECROCODE_API_URL",
                "NECROCODE_RUNNER_TOKEN", "RUNNER_ID", "TASK_CONTEXT", "POOL_NAME",
                "RUNNER_MODEL", "NECROCODE_ATTEMPT_DIR", "KEEP_ME", "NECROCODE_ADMIN_SECRET"]
        print("ENV=" + json.dumps({k: os.environ.get(k) for k in keys}))
        print("CWD=" + os.getcwd())
    """), slot, POOL)
    assert wait_exit(launcher, runner).exit_code == 0
    wait_for(lambda: runner.runner_id in exits.ids, what="on_exit")
    log = Path(runner.log_path or "").read_text()
    assert "to stdout" in log and "to stderr" in log
    env = json.loads(log.split("ENV=")[1].splitlines()[0])
    ctx = json.loads(env["NECROCODE_TASK_CONTEXT"])
    assert ctx["task"] == "s/1" and ctx["slot_path"] == slot.slot_path
    assert env["NECROCODE_RUNNER_ID"] == env["RUNNER_ID"] == runner.runner_id
    assert env["NECROCODE_RUNNER_TOKEN"] == f"tok-{runner.runner_id}"
    assert env["POOL_NAME"] == "local" and env["RUNNER_MODEL"] == "m1"
    assert env["NECROCODE_ATTEMPT_DIR"] == runner.attempt_dir
    assert env["KEEP_ME"] == "yes" and env["NECROCODE_ADMIN_SECRET"] is None
    assert f"CWD={slot.slot_path}" in log
    record = json.loads((Path(runner.attempt_dir or "") / RUNNER_FILE).read_text())
    assert record["pid"] == int(runner.handle or 0) and record["start_ticks"] > 0
    assert record["task_key"] == "s/1"


def test_no_shell_interpolation(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    evil = [f"$(touch {pwned})", f"; touch {pwned}", f"`touch {pwned}`", "$HOME", "a b"]
    launcher = make_launcher()
    task = Task(id="1", taskset="s", title=f"$(touch {pwned})",
                command=[PY, "-c", "import sys; print('ARGV=' + repr(sys.argv[1:]))", *evil])
    runner = launcher.launch(task, slot, POOL)
    assert wait_exit(launcher, runner).exit_code == 0
    assert f"ARGV={evil!r}" in Path(runner.log_path or "").read_text()
    # the pool template path: fields are filled as argv items, not parsed either
    pool = AgentPool(name="local", agent_command=[PY, "-c", "import sys; print(sys.argv[1])",
                                                  "{title}"])
    task2 = Task(id="2", taskset="s", title=f"; touch {pwned} #")
    runner2 = launcher.launch(task2, slot, pool)
    assert wait_exit(launcher, runner2).exit_code == 0
    assert f"; touch {pwned} #" in Path(runner2.log_path or "").read_text()
    assert not pwned.exists()


def test_exit_code_and_exit_file(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot, exits: Exits
) -> None:
    launcher = make_launcher()
    runner = launcher.launch(py_task("import sys; sys.exit(3)"), slot, POOL)
    result = wait_exit(launcher, runner)
    assert result is not None and result.exit_code == 3 and not result.succeeded
    recorded = read_exit_status(runner.attempt_dir or "")
    assert recorded is not None and recorded.exit_code == 3
    wait_for(lambda: runner.runner_id in exits.ids, what="on_exit")
    assert launcher.log_activity(runner) is not None


@pytest.mark.parametrize("use_pidfd", [True, False])  # selector on pidfds / thread per process
def test_on_exit_wakes_engine(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot, exits: Exits,
    use_pidfd: bool,
) -> None:
    launcher = make_launcher(use_pidfd=use_pidfd)
    runners = [launcher.launch(py_task("pass", task_id=str(i)), slot, POOL) for i in range(3)]
    wait_for(lambda: len(exits.ids) >= 3, what="3 on_exit calls")
    assert sorted(exits.ids) == sorted(r.runner_id for r in runners)
    assert all(launcher.poll(r).exit_code == 0 for r in runners)  # type: ignore[union-attr]


def test_missing_command_is_not_retryable(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot
) -> None:
    launcher = make_launcher()
    with pytest.raises(RunnerLaunchError) as err:
        launcher.launch(Task(id="1", taskset="s", command=["no-such-agent-xyz"]), slot, POOL)
    assert not err.value.retryable and "no-such-agent-xyz" in str(err.value)
    with pytest.raises(RunnerLaunchError):
        launcher.launch(Task(id="1", taskset="s"), slot, POOL)  # no command, no template


TREE_AGENT = """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    with open("pids.tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.replace("pids.tmp", "pids")
    time.sleep(600)
"""


def test_stop_kills_whole_tree_even_when_term_is_ignored(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot
) -> None:
    launcher = make_launcher()
    runner = launcher.launch(py_task(TREE_AGENT), slot, POOL)
    pids_file = Path(slot.slot_path) / "pids"
    wait_for(pids_file.exists, what="agent to start its grandchild")
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(procfs.same_process(p, None) for p in pids)
    assert launcher.poll(runner) is None
    stopped = launcher.stop(runner, grace=0.3)
    assert stopped.confirmed
    result = stopped.exit
    assert result is not None and "SIGKILL" in result.reason
    assert not any(procfs.same_process(p, None) for p in pids)
    assert procfs.group_members(int(runner.handle or 0)) == []
    assert launcher.poll(runner) == result  # stays ended
    assert launcher.stop(runner).exit == result  # a second stop is harmless


def test_stop_with_cooperative_agent_uses_term(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot
) -> None:
    launcher = make_launcher()
    runner = launcher.launch(py_task("import time; print('up', flush=True); time.sleep(600)"),
                             slot, POOL)
    wait_for(lambda: "up" in Path(runner.log_path or "").read_text(), what="agent up")
    result = launcher.stop(runner, grace=10).exit
    assert result is not None and result.reason == "stopped (SIGTERM)"


def test_release_kills_leftovers_of_finished_runner(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot
) -> None:
    launcher = make_launcher()
    runner = launcher.launch(py_task("""
        import subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open("left", "w").write(str(p.pid))
    """), slot, POOL)
    assert wait_exit(launcher, runner).exit_code == 0
    left = int((Path(slot.slot_path) / "left").read_text())
    assert procfs.same_process(left, None)
    launcher.release(runner)
    assert not procfs.same_process(left, None)


LAUNCH_AND_LEAVE = """
import json, sys
from pathlib import Path
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher
from necrocode.dispatcher.models import AgentPool, Slot, Task
runs, slot_path, code = sys.argv[1], sys.argv[2], sys.argv[3]
env = LaunchEnvironment(api_url=None, token_for=lambda r: "", runs_dir=Path(runs))
launcher = LocalProcessLauncher(env)
task = Task(id="9", taskset="s", command=[sys.executable, "-c", code])
runner = launcher.launch(task, Slot("scratch/0", slot_path), AgentPool(name="local"))
print(json.dumps({"attempt_dir": runner.attempt_dir, "pid": runner.handle}))
"""


def launch_from_dying_parent(tmp_path: Path, slot: Slot, code: str) -> dict[str, str]:
    out = subprocess.run([PY, "-c", LAUNCH_AND_LEAVE, str(tmp_path / "runs"), slot.slot_path,
                          code], check=True, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def test_exit_file_written_after_launching_parent_died(tmp_path: Path, slot: Slot) -> None:
    info = launch_from_dying_parent(
        tmp_path, slot, "import time, sys; time.sleep(0.3); sys.exit(7)")
    exit_file = Path(info["attempt_dir"]) / EXIT_FILE
    wait_for(exit_file.exists, what="orphan's exit file")
    recorded = read_exit_status(info["attempt_dir"])
    assert recorded is not None and recorded.exit_code == 7


def test_reconcile_adopts_live_orphan_and_refuses_recycled_pid(
    tmp_path: Path, slot: Slot, make_launcher: Callable[..., LocalProcessLauncher],
    exits: Exits,
) -> None:
    info = launch_from_dying_parent(tmp_path, slot, "import time; time.sleep(600)")
    pid = int(info["pid"])
    try:
        launcher = make_launcher()
        adopted = launcher.reconcile(POOL)
        assert [r.handle for r in adopted] == [str(pid)]
        runner = adopted[0]
        assert runner.task_key == "s/9" and runner.details["start_ticks"] > 0
        assert launcher.poll(runner) is None and launcher.is_alive(runner)
        assert launcher.reconcile(AgentPool(name="other")) == []
        # the same record with another start time is a recycled pid: not adopted
        record_path = Path(info["attempt_dir"]) / RUNNER_FILE
        record = json.loads(record_path.read_text())
        record["start_ticks"] += 1
        record_path.write_text(json.dumps(record))
        assert make_launcher().reconcile(POOL) == []
        # the adopting launcher can fence the orphan and is told of its end
        result = launcher.stop(runner, grace=5).exit
        # the spawn server that started it records how it ended (128 + SIGTERM, as a shell
        # reports it); a trampoline shell ends with its group and records nothing
        assert result is not None and result.exit_code in (None, 128 + signal.SIGTERM)
        assert not procfs.same_process(pid, None)
        wait_for(lambda: runner.runner_id in exits.ids, what="on_exit of adopted runner")
    finally:
        if procfs.same_process(pid, None):
            os.killpg(pid, signal.SIGKILL)


def test_reconcile_reports_how_orphans_ended(
    tmp_path: Path, slot: Slot, make_launcher: Callable[..., LocalProcessLauncher]
) -> None:
    info = launch_from_dying_parent(tmp_path, slot, "import sys; sys.exit(4)")
    wait_for((Path(info["attempt_dir"]) / EXIT_FILE).exists, what="exit file")
    launcher = make_launcher()
    assert launcher.reconcile(POOL) == []
    record = json.loads((Path(info["attempt_dir"]) / RUNNER_FILE).read_text())
    recorded = launcher.recorded_exit(record["runner_id"])
    assert recorded is not None and recorded.exit_code == 4


def test_relaunch_of_same_attempt_clears_stale_exit_file(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot
) -> None:
    launcher = make_launcher()
    first = launcher.launch(py_task("print('first')"), slot, POOL)
    assert wait_exit(launcher, first).exit_code == 0
    second = launcher.launch(py_task("import time; time.sleep(600)"), slot, POOL)
    assert second.attempt_dir == first.attempt_dir
    assert read_exit_status(second.attempt_dir or "") is None
    assert launcher.poll(second) is None
    launcher.stop(second, grace=0.2)
    log = Path(second.log_path or "").read_text()
    assert "first" in log and f"runner {second.runner_id} started" in log


def test_uses_the_runner_id_the_engine_recorded(
    make_launcher: Callable[..., LocalProcessLauncher], slot: Slot
) -> None:
    launcher = make_launcher()
    recorded = "r-s-1-a2-abcdef"
    runner = launcher.launch(py_task("pass").copy(runner_id=recorded), slot, POOL, attempt=2)
    assert runner.runner_id == recorded
    stale = launcher.launch(py_task("pass").copy(runner_id=recorded), slot, POOL, attempt=3)
    assert stale.runner_id != recorded and "-a3-" in stale.runner_id
    for r in (runner, stale):
        wait_exit(launcher, r)


def test_relative_state_dir_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exits: Exits
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel-slot").mkdir()
    env = LaunchEnvironment(api_url=None, token_for=lambda r: "", runs_dir=Path("state/runs"),
                            on_exit=exits)
    launcher = LocalProcessLauncher(env)
    try:
        runner = launcher.launch(py_task("import os; print(os.environ['NECROCODE_SLOT_PATH'])"),
                                 Slot("scratch/0", "rel-slot"), POOL)
        assert wait_exit(launcher, runner).exit_code == 0
        assert Path(runner.attempt_dir or "").is_absolute()
        assert read_exit_status(runner.attempt_dir or "") is not None  # not under the slot
        assert str(tmp_path / "rel-slot") in Path(runner.log_path or "").read_text()
    finally:
        launcher.close()


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("", None),  # opened, not yet written: no status yet
        ('{"exit_code": 1', None),  # partial write: no status yet
        ('{"exit_code": 0, "source": "trampoline"}\n', 0),  # what the trampoline writes
        ('{"exit_code": 2, "reason": "self-fenced", "source": "wrapper"}', 2),  # the wrapper's
    ],
)
def test_read_exit_status_ignores_incomplete_files(
    tmp_path: Path, content: str, code: int | None
) -> None:
    (tmp_path / EXIT_FILE).write_text(content)
    status = read_exit_status(tmp_path)
    assert (status.exit_code if status else None) == code


@pytest.mark.parametrize("use_pidfd", [True, False])  # pidfd selector / polling thread
def test_adopted_runner_exit_is_seen(
    tmp_path: Path, slot: Slot, make_launcher: Callable[..., LocalProcessLauncher],
    exits: Exits, use_pidfd: bool,
) -> None:
    go = tmp_path / "go"  # the orphan ends once adopted (not after a time a busy machine
    info = launch_from_dying_parent(  # may take to get to the adoption)
        tmp_path, slot, "import os, sys, time\ndeadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\nsys.exit(6)")
    launcher = make_launcher(use_pidfd=use_pidfd)
    [runner] = launcher.reconcile(POOL)
    go.touch()
    wait_for(lambda: runner.runner_id in exits.ids, what="on_exit of the adopted runner")
    result = wait_exit(launcher, runner)
    assert result is not None and result.exit_code == 6
    assert info["pid"] == runner.handle
