"""End to end through the command line: ``necroui --no-tui`` as a subprocess, real agents.

- the demo DAG runs to completion in a fresh folder, and the event log shows that every
  dependency and every concurrency limit held;
- ``kill -9`` of the headless Dispatcher while tasks run, then a restart: every task ends DONE,
  no task ran twice at the same time, every slot is released.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.models import EventType, TaskEvent, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry
from support import wait_until

REPO = Path(__file__).resolve().parents[2]
ENDS = (EventType.RUNNER_COMPLETED, EventType.RUNNER_FAILED, EventType.TASK_CANCELLED,
        EventType.TASK_REQUEUED, EventType.RUNNER_LAUNCH_FAILED)




def necroui_cmd() -> list[str]:
    script = Path(sys.executable).parent / "necroui"
    if script.exists():
        return [str(script)]
    found = shutil.which("necroui")
    if found:
        return [found]
    return [sys.executable, "-c", "from necroui.cli import main; main()"]


def child_env(tmp_path: Path, speed: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NECROCODE_")}
    env["NECROUI_DEMO_SPEED"] = str(speed)
    env["NECROUI_DEMO_TRACE"] = str(tmp_path / "trace.log")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def read_trace(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Per task key: (start, end) of every run; a run without an end lasts forever."""
    starts: dict[tuple[str, str, str], float] = {}
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        kind, key, attempt, ts, pid, *_ = line.split()
        if kind == "start":
            starts[(key, attempt, pid)] = float(ts)
        else:
            runs[key].append((starts.pop((key, attempt, pid)), float(ts)))
    for (key, _attempt, _pid), ts in starts.items():
        runs[key].append((ts, float("inf")))
    return runs


def assert_no_overlap(runs: dict[str, list[tuple[float, float]]]) -> None:
    for key, spans in runs.items():
        spans.sort()
        for (_s1, e1), (s2, _e2) in zip(spans, spans[1:], strict=False):
            assert s2 >= e1, f"{key} ran twice at the same time: {spans}"


def assert_slots_released(state_dir: Path) -> None:
    data = json.loads((state_dir / "workspaces" / "slots.json").read_text())
    held = {sid: s["task"] for sid, s in data["slots"].items() if s.get("task")}
    assert held == {}, f"slots still held: {held}"


def check_dependencies_and_limits(registry: SQLiteRegistry, limits: dict[str, int],
                                  global_limit: int) -> None:
    tasks = {t.key: t for t in registry.list_tasks()}
    events = sorted(registry.get_events(), key=lambda e: e.seq or 0)
    completed: dict[str, int] = {}
    for ev in events:
        if ev.event_type is EventType.RUNNER_COMPLETED and ev.task_key:
            completed[ev.task_key] = ev.seq or 0
    # every start comes after the completion of every dependency
    for ev in events:
        if ev.event_type is EventType.RUNNER_STARTED and ev.task_key:
            task = tasks[ev.task_key]
            for dep in task.dependencies:
                dep_key = f"{task.taskset}/{dep}"
                assert dep_key in completed and completed[dep_key] < (ev.seq or 0), \
                    f"{ev.task_key} started before its dependency {dep_key} completed"
    # concurrency never above the limits (capacity taken at TaskAssigned, given back at the end)
    per_pool: dict[str, int] = defaultdict(int)
    where: dict[str, str] = {}
    total = peak = 0
    peaks: dict[str, int] = defaultdict(int)
    for ev in events:
        key = ev.task_key or ""
        if ev.event_type is EventType.TASK_ASSIGNED:
            assert ev.pool is not None
            where[key] = ev.pool
            per_pool[ev.pool] += 1
            total += 1
        elif ev.event_type in ENDS and key in where:
            per_pool[where.pop(key)] -= 1
            total -= 1
        else:
            continue
        peak = max(peak, total)
        for pool, n in per_pool.items():
            peaks[pool] = max(peaks[pool], n)
            assert n <= limits[pool], f"pool {pool} ran {n} > {limits[pool]}"
        assert total <= global_limit
    assert peak >= 2, "the demo should run tasks in parallel"


def test_demo_dag_completes_headless(tmp_path: Path) -> None:
    proc = subprocess.run([*necroui_cmd(), "--no-tui", "--demo", "--until-done"],
                          cwd=tmp_path, env=child_env(tmp_path, 0.04), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all tasks DONE" in proc.stdout
    assert "RunnerStarted" in proc.stdout
    registry = SQLiteRegistry(tmp_path / ".necrocode" / "registry.db")
    try:
        tasks = registry.list_tasks()
        assert len(tasks) == 30
        assert all(t.state is TaskState.DONE for t in tasks)
        by_key = {t.key: t for t in tasks}
        assert by_key["demo/db.3"].attempts == 1  # fails on attempt 1, succeeds on retry
        assert by_key["demo/fe.7"].attempts == 2  # fails on attempts 1 and 2
        assert by_key["demo/db.1"].attempts == 0
        check_dependencies_and_limits(registry, {"database": 1, "backend": 3, "frontend": 2}, 6)
    finally:
        registry.close()
    assert_no_overlap(read_trace(tmp_path / "trace.log"))
    assert_slots_released(tmp_path / ".necrocode")
    assert (tmp_path / ".necrocode" / "workspaces").is_dir()
    assert not (tmp_path / ".necrocode" / "dispatcher.json").exists()


KILL_TASKSET = """\
taskset: crash
tasks:
{tasks}
  - id: "z1"
    title: after the first wave
    depends_on: ["a1", "a2"]
    command: ["python3", "-m", "necroui.demo.fake_agent", "--seconds", "0.5"]
  - id: "z2"
    title: last
    depends_on: ["z1"]
    command: ["python3", "-m", "necroui.demo.fake_agent", "--seconds", "0.5"]
"""


def test_kill_9_then_restart_finishes_everything_once(tmp_path: Path) -> None:
    items = "\n".join(
        f'  - id: "a{i}"\n    title: wave {i}\n'
        f'    command: ["python3", "-m", "necroui.demo.fake_agent", "--seconds", "1.5"]'
        for i in range(1, 7))
    taskset = tmp_path / "crash.yaml"
    taskset.write_text(KILL_TASKSET.format(tasks=items))
    env = child_env(tmp_path, 1.0)
    submit = subprocess.run([*necroui_cmd(), "submit", str(taskset)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    registry = SQLiteRegistry(tmp_path / ".necrocode" / "registry.db")
    try:
        first = subprocess.Popen([*necroui_cmd(), "--no-tui", "--until-done"], cwd=tmp_path,
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            trace = tmp_path / "trace.log"  # the agents write a start line once they run
            wait_until(lambda: registry.count_tasks()[TaskState.RUNNING] >= 4
                       and trace.exists() and trace.read_text().count("start ") >= 4, 60,
                       "4 tasks running with their agents started")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        running = registry.count_tasks()[TaskState.RUNNING]
        assert running >= 1  # the registry still says RUNNING: nobody settled them
        second = subprocess.run([*necroui_cmd(), "--no-tui", "--until-done"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        tasks = registry.list_tasks()
        assert len(tasks) == 8 and all(t.state is TaskState.DONE for t in tasks)
        kinds = [e.event_type for e in registry.get_events()]
        recovered = [e for e in registry.get_events() if _recovered(e)]
        assert EventType.RUNNER_ADOPTED in kinds or recovered, [
            (e.event_type.value, e.task_key, e.message) for e in registry.get_events()]
    finally:
        registry.close()
    assert_no_overlap(read_trace(tmp_path / "trace.log"))
    assert_slots_released(tmp_path / ".necrocode")


def _recovered(event: TaskEvent) -> bool:
    return event.event_type is EventType.RUNNER_COMPLETED and bool(event.details.get("recovered"))


@pytest.fixture(autouse=True)
def _no_leftover_agents(tmp_path: Path) -> Any:
    yield
    trace = tmp_path / "trace.log"
    if trace.exists():  # every agent that started has ended (or was killed) by now
        pids = {int(line.split()[4]) for line in trace.read_text().splitlines()}
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_gracefully_and_requeues(tmp_path: Path) -> None:
    config = tmp_path / "dispatcher.yaml"
    config.write_text("dispatcher:\n  graceful_shutdown_timeout: 0.5\n"
                      "  runner_stop_grace: 0.5\n")
    taskset = tmp_path / "slow.yaml"
    taskset.write_text(
        "taskset: slow\ntasks:\n" + "".join(
            f'  - id: "s{i}"\n    title: slow {i}\n'
            f'    command: ["python3", "-m", "necroui.demo.fake_agent", "--seconds", "60"]\n'
            for i in range(2)))
    env = child_env(tmp_path, 1.0)
    base = [*necroui_cmd(), "--config", str(config)]
    sub = subprocess.run([*base, "submit", str(taskset)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    registry = SQLiteRegistry(tmp_path / ".necrocode" / "registry.db")
    try:
        proc = subprocess.Popen([*base, "--no-tui"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: registry.count_tasks()[TaskState.RUNNING] == 2, 60,
                       "2 tasks running")
            wait_until(lambda: (tmp_path / "trace.log").exists()
                       and len((tmp_path / "trace.log").read_text().splitlines()) == 2, 30,
                       "both agents started")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 1, out[-2000:] + err[-2000:]
        assert "not DONE" in out
        tasks = registry.list_tasks()
        assert all(t.state is TaskState.READY and t.attempts == 0 for t in tasks)
        kinds = [e.event_type for e in registry.get_events()]
        assert kinds.count(EventType.TASK_REQUEUED) == 2
        assert kinds[-1] is EventType.DISPATCHER_STOPPED
    finally:
        registry.close()
    pids = {int(line.split()[4]) for line in (tmp_path / "trace.log").read_text().splitlines()}
    assert wait_until(lambda: all(not _alive(p) for p in pids), 10, "agents stopped")
    assert_slots_released(tmp_path / ".necrocode")


def _alive(pid: int) -> bool:
    from necrocode.dispatcher.state_files import pid_alive

    return pid_alive(pid)


def _event_seqs(out: str) -> list[tuple[int, str]]:
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [(r["seq"], r["event_type"]) for r in rows if r.get("type") == "event"]


@pytest.mark.parametrize("how", ["sigint", "until-done"])
def test_headless_prints_every_event_once(tmp_path: Path, how: str) -> None:
    """`necroui --no-tui --json` prints each event seq exactly once, DispatcherStopped once:
    after Ctrl-C (SIGINT while a runner runs) and at the end of an --until-done run."""
    config = tmp_path / "dispatcher.yaml"
    config.write_text("dispatcher:\n  graceful_shutdown_timeout: 0.5\n"
                      "  runner_stop_grace: 0.5\n")
    seconds = "60" if how == "sigint" else "0"
    taskset = tmp_path / "ts.yaml"
    taskset.write_text(
        "taskset: once\ntasks:\n" + "".join(
            f'  - id: "t{i}"\n    title: t{i}\n'
            f'    command: ["{sys.executable}", "-m", "necroui.demo.fake_agent", '
            f'"--seconds", "{seconds}"]\n' for i in range(2)))
    env = child_env(tmp_path, 1.0)
    base = [*necroui_cmd(), "--config", str(config)]
    sub = subprocess.run([*base, "submit", str(taskset)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    args = [*base, "--no-tui", "--json"] + (["--until-done"] if how == "until-done" else [])
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if how == "sigint":
            wait_until(lambda: (tmp_path / "trace.log").exists()
                       and len((tmp_path / "trace.log").read_text().splitlines()) == 2, 60,
                       "both agents started")
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = _event_seqs(out)
    seqs = [seq for seq, _ in events]
    assert seqs and len(seqs) == len(set(seqs)), out[-3000:] + err[-2000:]
    assert seqs == sorted(seqs)
    assert [kind for _, kind in events].count("DispatcherStopped") == 1
    assert [kind for _, kind in events].count("DispatcherStarted") == 1
    assert proc.returncode == (1 if how == "sigint" else 0), err[-2000:]
