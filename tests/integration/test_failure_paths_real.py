"""Failure paths with real processes: SQLite registry, local-process launcher.

A task never runs twice at the same time (the second attempt of a hung task checks, from inside,
that the first attempt's whole process tree is gone), a crash before any sign of life is one
failed attempt, a shutdown requeues without spending attempts, and a restart after
``stop(leave_running=True)`` adopts live runners, settles the ones that ended while no dispatcher
watched, and finishes each task exactly once.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import AgentPool, EventType, PoolType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.state_files import pid_alive
from support import wait_until

# An agent whose behaviour depends on its mode and attempt. It records its pid and its child's
# pid, and, on a later attempt, whether any process of the previous attempt is still alive.
AGENT = textwrap.dedent("""\
    import json, os, signal, subprocess, sys, time
    mode, work = sys.argv[1], sys.argv[2]
    attempt = int(os.environ["NECROCODE_ATTEMPT"])
    key = os.environ["NECROCODE_TASK_KEY"].replace("/", "_")
    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    prev = os.path.join(work, f"{key}.pids.{attempt - 1}")
    if os.path.exists(prev):
        with open(prev) as fh:
            old = json.load(fh)
        with open(os.path.join(work, f"{key}.overlap.{attempt}"), "w") as fh:
            json.dump([p for p in old if alive(p)], fh)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    with open(os.path.join(work, f"{key}.pids.{attempt}"), "w") as fh:
        json.dump([os.getpid(), child.pid], fh)
    def end(code):
        child.kill(); child.wait(); sys.exit(code)
    if mode == "crash" and attempt == 1:
        child.kill(); child.wait()
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang" and attempt == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)                     # silent, ignores TERM: only a KILL of the group ends it
    if mode == "wait":
        go = os.path.join(work, f"{key}.go")
        while not os.path.exists(go):       # silent until the test lets it finish
            time.sleep(0.02)
    print("done", flush=True)
    end(0)
    """)




def base_config(tmp_path: Path, **overrides: Any) -> DispatcherConfig:
    base: dict[str, Any] = dict(
        registry_path=str(tmp_path / "reg" / "registry.db"), state_dir=str(tmp_path / "st"),
        poll_interval=0.5, heartbeat_timeout=30.0, retry_max_attempts=3,
        retry_backoff_base=0.05, retry_jitter=0.0, runner_stop_grace=0.3, api_enabled=False,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=4)],
        skill_mapping={"default": ["local"]},
    )
    base.update(overrides)
    return DispatcherConfig(**base)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    (tmp_path / "agent.py").write_text(AGENT)
    return path


@pytest.fixture
def cores() -> Iterator[list[DispatcherCore]]:
    made: list[DispatcherCore] = []
    yield made
    for core in made:
        if core.is_running:
            core.stop(timeout=1)
        core.registry.close()


def start(cores: list[DispatcherCore], config: DispatcherConfig) -> DispatcherCore:
    """A started engine over its own connection to the config's SQLite registry (kept open
    after stop, so the test can read the registry afterwards)."""
    core = DispatcherCore(config, registry=open_registry(config.resolved_registry_path()))
    core.start()
    cores.append(core)
    return core


def cmd(tmp_path: Path, mode: str) -> list[str]:
    return [sys.executable, str(tmp_path / "agent.py"), mode, str(tmp_path / "work")]


def submit(core: DispatcherCore, *tasks: Task) -> list[str]:
    for t in tasks:
        t.taskset = "fp"
    core.submit(Taskset(name="fp", tasks=list(tasks)))
    return [f"fp/{t.id}" for t in tasks]


def pids(work: Path, key: str, attempt: int) -> list[int]:
    path = work / f"{key.replace('/', '_')}.pids.{attempt}"
    return list(wait_until(lambda: path.exists() and path.read_text()
                           and json.loads(path.read_text()), 30, f"pids of {key} #{attempt}"))


def state_of(core: DispatcherCore, key: str) -> TaskState:
    return core.registry.get_task(key).state


def kinds(core: DispatcherCore, key: str) -> list[EventType]:
    return [e.event_type for e in core.registry.get_events(task_key=key)]


def released(core: DispatcherCore) -> bool:
    return core.repo_pool.in_use_count() == 0 and \
        core.pool_manager.get_pool_status("local").running == 0


def test_hung_runner_tree_is_gone_before_its_next_attempt_starts(
        tmp_path: Path, work: Path, cores: list[DispatcherCore]) -> None:
    # liveness "log": a silent runner is lost after heartbeat_timeout (by default a live local
    # process counts as alive and only the task timeout would catch the hang)
    pools = [AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=4,
                       config={"liveness": "log"})]
    core = start(cores, base_config(tmp_path, heartbeat_timeout=1.0, agent_pools=pools))
    (key,) = submit(core, Task(id="hung", title="hangs", command=cmd(tmp_path, "hang")))
    first = pids(work, key, 1)
    wait_until(lambda: state_of(core, key) is TaskState.DONE, 40, "DONE after the retry")
    overlap = json.loads((work / "fp_hung.overlap.2").read_text())
    assert overlap == [], f"attempt 1 processes {overlap} alive when attempt 2 started"
    assert not any(pid_alive(p) for p in first)
    task = core.registry.get_task(key)
    assert task.attempts == 1
    k = kinds(core, key)
    assert k.count(EventType.RUNNER_LOST) == 1 and k.count(EventType.RUNNER_COMPLETED) == 1
    assert k.index(EventType.RUNNER_LOST) < k.index(EventType.TASK_RETRIED)
    wait_until(lambda: released(core), 10, "slot and capacity released")


def test_crash_before_any_sign_of_life_is_one_failed_attempt(
        tmp_path: Path, work: Path, cores: list[DispatcherCore]) -> None:
    core = start(cores, base_config(tmp_path))
    (key,) = submit(core, Task(id="crash", title="SIGKILLs itself",
                               command=cmd(tmp_path, "crash")))
    wait_until(lambda: state_of(core, key) is TaskState.DONE, 30, "DONE after the retry")
    assert json.loads((work / "fp_crash.overlap.2").read_text()) == []
    task = core.registry.get_task(key)
    assert task.attempts == 1
    k = kinds(core, key)
    assert k.count(EventType.RUNNER_FAILED) == 1 and k.count(EventType.TASK_RETRIED) == 1
    assert k.count(EventType.RUNNER_COMPLETED) == 1 and EventType.RUNNER_LOST not in k
    wait_until(lambda: released(core), 10, "slot and capacity released")


def test_stop_timeout_kills_every_tree_and_requeues_without_attempts(
        tmp_path: Path, work: Path, cores: list[DispatcherCore]) -> None:
    core = start(cores, base_config(tmp_path))
    keys = submit(core, *[Task(id=f"w{i}", title="waits", command=cmd(tmp_path, "wait"))
                          for i in range(3)])
    trees = [pids(work, k, 1) for k in keys]
    core.stop(timeout=0.2)
    assert not any(pid_alive(p) for tree in trees for p in tree)
    for key in keys:
        task = core.registry.get_task(key)
        assert task.state is TaskState.READY and task.attempts == 0 and task.runner_id is None
        assert EventType.TASK_REQUEUED in kinds(core, key)
    assert core.repo_pool.in_use_count() == 0


def test_leave_running_restart_adopts_settles_and_finishes_each_once(
        tmp_path: Path, work: Path, cores: list[DispatcherCore]) -> None:
    config = base_config(tmp_path)
    keys = [f"fp/w{i}" for i in range(3)]
    try:
        _leave_running_then_restart(tmp_path, work, cores, config, keys)
    finally:  # whatever failed, let every waiting agent end on its own
        for key in keys:
            (work / f"{key.replace('/', '_')}.go").touch()


def _leave_running_then_restart(tmp_path: Path, work: Path, cores: list[DispatcherCore],
                                config: DispatcherConfig, keys: list[str]) -> None:
    core1 = start(cores, config)
    submit(core1, *[Task(id=k.split("/")[1], title="waits", command=cmd(tmp_path, "wait"))
                    for k in keys])
    trees = {k: pids(work, k, 1) for k in keys}
    wait_until(lambda: len(core1.runner_records()) == 3, 10, "3 runners registered")
    core1.stop(timeout=5, leave_running=True)
    assert all(pid_alive(tree[0]) for tree in trees.values())
    assert all(state_of(core1, k) is TaskState.RUNNING for k in keys)
    # one finishes while no dispatcher watches; its exit status is on disk
    ended = keys[0]
    (work / f"{ended.replace('/', '_')}.go").touch()
    wait_until(lambda: not pid_alive(trees[ended][0]), 10, "the first runner's exit")
    core2 = start(cores, config)
    wait_until(lambda: state_of(core2, ended) is TaskState.DONE, 10, "recovered DONE")
    adopted = [k for k in keys if EventType.RUNNER_ADOPTED in kinds(core2, k)]
    assert sorted(adopted) == sorted(keys[1:])
    assert core2.pool_manager.get_pool_status("local").running == 2
    for key in keys[1:]:
        (work / f"{key.replace('/', '_')}.go").touch()
    for key in keys:
        wait_until(lambda k=key: state_of(core2, k) is TaskState.DONE, 30, f"{key} DONE")
    for key in keys:
        task = core2.registry.get_task(key)
        counts = Counter(kinds(core2, key))
        assert task.attempts == 0, key
        assert counts[EventType.TASK_ASSIGNED] == 1, (key, counts)
        assert counts[EventType.RUNNER_COMPLETED] == 1, (key, counts)
        assert not (work / f"{key.replace('/', '_')}.pids.2").exists()  # never relaunched
    wait_until(lambda: released(core2), 10, "slots and capacity released")
    assert not any(pid_alive(p) for tree in trees.values() for p in tree)
    core2.stop(timeout=2)
    assert os.path.isdir(config.resolved_state_dir())


def test_a_registry_deleted_mid_run_stops_the_dispatcher_loudly(tmp_path: Path) -> None:
    """necroui --no-tui whose registry file is deleted while it runs: it stops with an error
    naming the file (exit 2), instead of reporting every task DONE from an empty registry."""
    import subprocess
    import sys

    import yaml

    registry = tmp_path / "registry.db"
    config = tmp_path / "dispatcher.yaml"
    config.write_text(yaml.safe_dump({
        "dispatcher": {"registry_path": str(registry), "poll_interval": 0.2,
                       "api_enabled": False},
        "agent_pools": {"local": {"type": "local-process", "max_concurrency": 2}},
        "skill_mapping": {"default": ["local"]}}))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump({"taskset": "gone", "tasks": [
        {"id": "slow", "title": "slow", "command": [sys.executable, "-c",
                                                     "import time; time.sleep(30)"]}]}))
    necroui = [sys.executable, "-m", "necroui", "--config", str(config)]
    subprocess.run([*necroui, "submit", str(tasks)], check=True, capture_output=True,
                   timeout=60)
    proc = subprocess.Popen([*necroui, "--no-tui", "--until-done"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: any(p.name.startswith("attempt-") for p in
                               (tmp_path / "runs").rglob("attempt-*")), 30, "the run")
        registry.unlink()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out
    assert "was deleted or replaced" in out and str(registry) in out
    assert "all tasks DONE" not in out and "Traceback" not in out
