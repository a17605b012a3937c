"""The engine with real processes: SQLite registry, local-process launcher, HTTP API.

Retries with backoff, non-retryable exit codes, hung runners fenced (process tree gone), runners
that ignore SIGTERM killed, cancel of a running task, and token checks of the runner API.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import AgentPool, EventType, PoolType, Task, Taskset, TaskState
from necrocode.dispatcher.snapshot import PendingReason
from necrocode.dispatcher.state_files import pid_alive
from support import wait_until

# An agent that starts a child (a process tree), records both pids, then behaves by attempt.
AGENT = textwrap.dedent("""\
    import json, os, signal, subprocess, sys, time
    mode = sys.argv[1]
    pids_file = sys.argv[2]
    attempt = int(os.environ["NECROCODE_ATTEMPT"])
    if mode.endswith("-noterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    with open(pids_file + f".{attempt}", "w") as fh:
        json.dump([os.getpid(), child.pid], fh)
    print("started", flush=True)
    if mode.startswith("hang") and attempt == 1:
        time.sleep(120)   # silent: no log lines, no heartbeats
    if mode.startswith("sleep"):
        time.sleep(120)
    child.kill()
    child.wait()
    print("done", flush=True)
    """)


def log_liveness_pool() -> AgentPool:
    """A local pool that asks for log growth or heartbeats (``liveness: log``)."""
    return AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=4,
                     config={"liveness": "log"})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Callable[..., DispatcherCore]]:
    made: list[DispatcherCore] = []

    def make(**overrides: Any) -> DispatcherCore:
        base: dict[str, Any] = dict(
            registry_path=str(tmp_path / "reg" / "registry.db"), state_dir=str(tmp_path / "st"),
            poll_interval=0.5, heartbeat_timeout=30.0, retry_max_attempts=3,
            retry_backoff_base=0.1, retry_jitter=0.0, runner_stop_grace=0.5,
            agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS,
                                   max_concurrency=4)],
            skill_mapping={"default": ["local"]},
        )
        base.update(overrides)
        core = DispatcherCore(DispatcherConfig(**base))
        core.start()
        made.append(core)
        return core

    yield make
    for core in made:
        core.stop(timeout=1)


def submit(core: DispatcherCore, *tasks: Task) -> None:
    for t in tasks:
        t.taskset = "it"
        t.tenant = "it"
    core.submit(Taskset(name="it", tasks=list(tasks)))


def agent_cmd(tmp_path: Path, mode: str) -> list[str]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    return [sys.executable, str(script), mode, str(tmp_path / f"pids-{mode}")]


def read_pids(tmp_path: Path, mode: str, attempt: int) -> list[int]:
    path = tmp_path / f"pids-{mode}.{attempt}"
    return wait_until(lambda: path.exists() and path.read_text() and json.loads(path.read_text()),
                      20, f"pids of {mode} attempt {attempt}")


def all_gone(pids: list[int]) -> bool:
    return not any(pid_alive(p) for p in pids)


def test_nonzero_exit_retried_with_backoff_then_failed(engine: Callable[..., DispatcherCore]
                                                       ) -> None:
    core = engine()
    submit(core, Task(id="bad", title="exits 3", command=["sh", "-c", "echo oops; exit 3"]))
    task = wait_until(lambda: (t := core.registry.get_task("it/bad")).state is TaskState.FAILED
                      and t, 20, "FAILED")
    assert task.attempts == 3
    assert task.last_error and "exit code 3" in task.last_error
    events = core.registry.get_events(task_key="it/bad")
    kinds = [e.event_type for e in events]
    assert kinds.count(EventType.RUNNER_FAILED) == 3
    assert kinds.count(EventType.TASK_RETRIED) == 2
    assert kinds.count(EventType.TASK_FAILED) == 1
    retried = [e for e in events if e.event_type is EventType.TASK_RETRIED]
    for ev in retried:  # the backoff is real: the next attempt waits until next_attempt_at
        at = ev.details["next_attempt_at"]
        assert at > ev.timestamp
        later = [e for e in events if e.event_type is EventType.TASK_ASSIGNED
                 and (e.seq or 0) > (ev.seq or 0)]
        assert later and later[0].timestamp >= at - 0.01
    assert core.pool_manager.get_pool_status("local").running == 0


def test_non_retryable_exit_code_fails_at_once(engine: Callable[..., DispatcherCore]) -> None:
    core = engine(non_retryable_exit_codes=[42])
    submit(core, Task(id="fatal", title="exits 42", command=["sh", "-c", "exit 42"]))
    task = wait_until(lambda: (t := core.registry.get_task("it/fatal")).state
                      is TaskState.FAILED and t, 20, "FAILED")
    assert task.attempts == 1
    kinds = [e.event_type for e in core.registry.get_events(task_key="it/fatal")]
    assert EventType.TASK_RETRIED not in kinds


def test_hung_runner_is_fenced_tree_gone_and_retried(tmp_path: Path,
                                                     engine: Callable[..., DispatcherCore]
                                                     ) -> None:
    core = engine(heartbeat_timeout=1.0, agent_pools=[log_liveness_pool()])
    submit(core, Task(id="hung", title="hangs silently", command=agent_cmd(tmp_path, "hang")))
    first = read_pids(tmp_path, "hang", 1)
    done = wait_until(lambda: (t := core.registry.get_task("it/hung")).state is TaskState.DONE
                      and t, 30, "DONE after the retry")
    assert done.attempts == 1
    assert wait_until(lambda: all_gone(first), 10, "process tree of attempt 1 gone")
    kinds = [e.event_type for e in core.registry.get_events(task_key="it/hung")]
    assert EventType.RUNNER_LOST in kinds
    assert kinds.index(EventType.RUNNER_LOST) < kinds.index(EventType.TASK_RETRIED)


def test_runner_ignoring_sigterm_is_killed(tmp_path: Path,
                                           engine: Callable[..., DispatcherCore]) -> None:
    core = engine(heartbeat_timeout=1.0, runner_stop_grace=0.3,
                  agent_pools=[log_liveness_pool()])
    submit(core, Task(id="stubborn", title="ignores TERM",
                      command=agent_cmd(tmp_path, "hang-noterm")))
    first = read_pids(tmp_path, "hang-noterm", 1)
    wait_until(lambda: core.registry.get_task("it/stubborn").state is TaskState.DONE, 30,
               "DONE after the retry")
    assert wait_until(lambda: all_gone(first), 10, "the TERM-ignoring tree killed")


def test_task_timeout_fences_the_tree(tmp_path: Path,
                                      engine: Callable[..., DispatcherCore]) -> None:
    core = engine()
    submit(core, Task(id="slow", title="too slow", timeout=0.8, max_attempts=1,
                      command=agent_cmd(tmp_path, "sleep")))
    pids = read_pids(tmp_path, "sleep", 1)
    task = wait_until(lambda: (t := core.registry.get_task("it/slow")).state
                      is TaskState.FAILED and t, 20, "FAILED by timeout")
    assert "timeout" in (task.last_error or "")
    assert wait_until(lambda: all_gone(pids), 10, "tree gone")


def test_cancel_running_task_stops_tree_and_blocks_dependents(
        tmp_path: Path, engine: Callable[..., DispatcherCore]) -> None:
    core = engine()
    submit(core, Task(id="long", title="long", command=agent_cmd(tmp_path, "sleep")),
           Task(id="after", title="after", dependencies=["long"], command=["true"]))
    pids = read_pids(tmp_path, "sleep", 1)
    message = core.cancel("it/long")
    assert "it/long" in message
    wait_until(lambda: core.registry.get_task("it/long").state is TaskState.CANCELLED, 20,
               "CANCELLED")
    assert wait_until(lambda: all_gone(pids), 10, "tree gone")
    snap = wait_until(lambda: (s := core.snapshot()) and any(
        q.key == "it/after" and q.pending.reason is PendingReason.BLOCKED_BY_FAILURE
        for q in s.queued) and s, 10, "dependent reported blocked")
    view = next(q for q in snap.queued if q.key == "it/after")
    assert "it/long" in view.pending.message
    assert core.pool_manager.get_pool_status("local").running == 0
    assert core.repo_pool.in_use_count() == 0


TOKEN_AGENT = textwrap.dedent("""\
    import json, os, sys, urllib.error, urllib.request
    url = os.environ["NECROCODE_API_URL"]
    me = os.environ["NECROCODE_RUNNER_ID"]
    token = os.environ["NECROCODE_RUNNER_TOKEN"]
    def post(runner, tok, what="heartbeat"):
        req = urllib.request.Request(f"{url}/v1/runners/{runner}/{what}", method="POST",
            data=json.dumps({"progress": "hi"}).encode(), headers={"Content-Type":
            "application/json", **({"Authorization": f"Bearer {tok}"} if tok else {})})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
    codes = {"own": post(me, token), "other": post("r-someone-else-a1-abcdef", token),
             "wrong": post(me, "0" * 64), "none": post(me, None),
             "other_complete": post("r-someone-else-a1-abcdef", token, "complete")}
    with open(sys.argv[1], "w") as fh:
        json.dump(codes, fh)
    """)


def test_runner_api_rejects_wrong_and_cross_runner_tokens(
        tmp_path: Path, engine: Callable[..., DispatcherCore]) -> None:
    core = engine()
    assert core.api_url is not None
    script = tmp_path / "token_agent.py"
    script.write_text(TOKEN_AGENT)
    out = tmp_path / "codes.json"
    submit(core, Task(id="tok", title="token checks",
                      command=[sys.executable, str(script), str(out)]))
    wait_until(lambda: core.registry.get_task("it/tok").state is TaskState.DONE, 20, "DONE")
    codes = json.loads(out.read_text())
    assert codes == {"own": 200, "other": 401, "wrong": 401, "none": 401,
                     "other_complete": 401}
    state_dir = Path(core.config.resolved_state_dir())
    assert (state_dir / "admin.token").stat().st_mode & 0o777 == 0o600
    info = json.loads((state_dir / "dispatcher.json").read_text())
    assert info["url"] == core.api_url and info["pid"] == os.getpid()


def test_wrapped_runner_heartbeats_keep_a_silent_agent_alive_and_report(
        tmp_path: Path, engine: Callable[..., DispatcherCore]) -> None:
    core = engine(heartbeat_timeout=1.0, heartbeat_interval=0.2)
    wrapper = [sys.executable, "-m", "necrocode.dispatcher.agent_runner", "--"]
    submit(core, Task(id="wrapped", title="silent but wrapped",
                      command=[*wrapper, "sh", "-c", "sleep 2.5; exit 0"]))
    beat = wait_until(lambda: [r for r in core.snapshot().running if r.key == "it/wrapped"
                               and r.last_sign_of_life > r.started_at + 0.5], 20,
                      "heartbeats reaching the engine")
    assert beat
    task = wait_until(lambda: (t := core.registry.get_task("it/wrapped")).state
                      is TaskState.DONE and t, 30, "DONE")
    assert task.attempts == 0
    kinds = [e.event_type for e in core.registry.get_events(task_key="it/wrapped")]
    assert EventType.RUNNER_LOST not in kinds


def test_silent_local_agent_with_a_live_process_is_not_lost(
        tmp_path: Path, engine: Callable[..., DispatcherCore]) -> None:
    """Default liveness of a local pool: a live process is a sign of life (R8.1)."""
    core = engine(heartbeat_timeout=0.5)
    submit(core, Task(id="quiet", title="silent", command=["sh", "-c", "sleep 2; exit 0"]))
    task = wait_until(lambda: (t := core.registry.get_task("it/quiet")).state
                      is TaskState.DONE and t, 30, "DONE")
    assert task.attempts == 0
    kinds = [e.event_type for e in core.registry.get_events(task_key="it/quiet")]
    assert EventType.RUNNER_LOST not in kinds


def test_frozen_wrapper_is_fenced_by_its_missing_heartbeats(
        tmp_path: Path, engine: Callable[..., DispatcherCore]) -> None:
    """A wrapped local runner is judged by its heartbeats: frozen with SIGSTOP (process alive,
    no heartbeats) it is lost, stopped and retried."""
    import signal

    core = engine(heartbeat_timeout=1.0, heartbeat_interval=0.2)
    wrapper = [sys.executable, "-m", "necrocode.dispatcher.agent_runner", "--"]
    submit(core, Task(id="frozen", title="frozen wrapper", command=[
        *wrapper, "sh", "-c", 'if [ "$NECROCODE_ATTEMPT" = 1 ]; then sleep 60; fi']))
    rec = wait_until(lambda: [r for r in core.runner_records()
                              if r.key == "it/frozen" and r.heartbeats > 0], 20,
                     "a first heartbeat")[0]
    os.killpg(os.getpgid(int(rec.runner.handle or 0)), signal.SIGSTOP)
    task = wait_until(lambda: (t := core.registry.get_task("it/frozen")).state
                      is TaskState.DONE and t, 30, "DONE after the retry")
    assert task.attempts == 1
    kinds = [e.event_type for e in core.registry.get_events(task_key="it/frozen")]
    assert EventType.RUNNER_LOST in kinds


def test_operator_retry_keeps_the_failed_runs_log(
        tmp_path: Path, engine: Callable[..., DispatcherCore]) -> None:
    """A retry of a FAILED task (attempts reset) runs in a new attempt directory: the log of
    the failure stays, and NECROCODE_ATTEMPT counts the runs."""
    core = engine()
    flag = tmp_path / "fixed"
    submit(core, Task(id="redo", title="fails once", max_attempts=1, command=[
        "sh", "-c", f'echo "run $NECROCODE_ATTEMPT"; test -e {flag}']))
    wait_until(lambda: core.registry.get_task("it/redo").state is TaskState.FAILED, 20,
               "FAILED")
    flag.touch()
    core.retry("it/redo")
    wait_until(lambda: core.registry.get_task("it/redo").state is TaskState.DONE, 20, "DONE")
    runs = Path(core.config.resolved_state_dir()) / "runs" / "it" / "redo"
    assert "run 1" in (runs / "attempt-1" / "output.log").read_text()
    assert "run 2" in (runs / "attempt-2" / "output.log").read_text()
    assert json.loads((runs / "attempt-1" / "exit_status.json").read_text())["exit_code"] == 1


def test_missing_agent_fails_at_once_and_releases_everything(
        engine: Callable[..., DispatcherCore]) -> None:
    core = engine()
    submit(core, Task(id="nocmd", title="no such agent", command=["/nonexistent/agent"]))
    task = wait_until(lambda: (t := core.registry.get_task("it/nocmd")).state
                      is TaskState.FAILED and t, 20, "FAILED")
    assert task.attempts == 1 and "not found" in (task.last_error or "")
    kinds = [e.event_type for e in core.registry.get_events(task_key="it/nocmd")]
    assert EventType.RUNNER_LAUNCH_FAILED in kinds
    assert core.pool_manager.get_pool_status("local").running == 0
    wait_until(lambda: core.repo_pool.in_use_count() == 0, 10, "slot released")
    wait_until(lambda: core.snapshot().pools[0].recent_launch_errors >= 1, 10,
               "launch error visible in the pool status")


def test_restart_stops_an_unrecorded_runner_before_requeueing(tmp_path: Path) -> None:
    """The dispatcher died after starting a runner but before writing its record: the next
    start finds the process by its NECROCODE_RUNNER_ID, stops it, then runs the task anew."""
    import subprocess

    config = DispatcherConfig(
        registry_path=str(tmp_path / "reg" / "registry.db"), state_dir=str(tmp_path / "st"),
        retry_backoff_base=0.1, retry_jitter=0.0, runner_stop_grace=0.5,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)],
        skill_mapping={"default": ["local"]})
    from necrocode.dispatcher.registry import open_registry

    registry = open_registry(config.resolved_registry_path())
    registry.submit_taskset(Taskset(name="it", tasks=[
        Task(id="u", title="unrecorded", taskset="it", command=["true"])]))
    registry.transition("it/u", TaskState.RUNNING, expected=TaskState.READY,
                        runner_id="r-it-u-a1-abcdef")
    env = {**os.environ, "NECROCODE_RUNNER_ID": "r-it-u-a1-abcdef"}
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                             start_new_session=True)
    core = DispatcherCore(config, registry=registry)
    try:
        core.start()
        assert stray.wait(timeout=20) is not None  # stopped by the reconcile
        task = wait_until(lambda: (t := registry.get_task("it/u")).state is TaskState.DONE
                          and t, 20, "DONE after the requeue")
        assert task.attempts == 0
        kinds = [e.event_type for e in registry.get_events(task_key="it/u")]
        assert EventType.TASK_REQUEUED in kinds
    finally:
        core.stop(timeout=1)
        if stray.poll() is None:
            stray.kill()
            stray.wait()
        registry.close()
