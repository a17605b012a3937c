"""``kill -9`` of a headless Dispatcher between a run's exit and the commit of its work: the
next start commits it then settles the task, so the work is neither lost nor committed twice.

The dispatcher runs as ``necroui --no-tui`` with a real local-process agent and real git; a
``git`` on its PATH holds the Dispatcher's commit (before it, or after it and before DONE) so
that the kill lands in that window."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from flow_support import GitGate
from git_support import git, make_origin
from necrocode.dispatcher.models import EventType, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry
from support import wait_until

AGENT = 'echo "{task_id} by the agent" > "{task_id}.txt"'


def necroui() -> list[str]:
    script = Path(sys.executable).parent / "necroui"
    return [str(script)] if script.exists() else [sys.executable, "-m", "necroui.cli"]


def setup(tmp_path: Path) -> tuple[Path, Path]:
    origin = make_origin(tmp_path / "origin", {"README.md": "hello\n"})
    cfg = tmp_path / "dispatcher.yaml"
    cfg.write_text(
        "dispatcher:\n  poll_interval: 0.2\n  state_dir: ./state\n"
        "  registry_path: ./registry.db\n  api_port: 0\n"
        "agent_pools:\n  local:\n    type: local-process\n    max_concurrency: 2\n"
        f"    agent_command: [sh, -c, {json.dumps(AGENT)}]\n"
        "skill_mapping:\n  default: [local]\n")
    taskset = tmp_path / "flow.yaml"
    taskset.write_text(f"taskset: flow\nrepo: {origin}\ntasks:\n"
                       "  - id: a\n    title: Write a\n")
    return origin, cfg


def env_with(path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NECROCODE_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path or env["PATH"]])
    return env


def headless(tmp_path: Path, cfg: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*necroui(), "--config", str(cfg), "--no-tui", "--until-done"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def dispatcher_commits(mirror: Path, head: str, base: str, cwd: Path) -> list[str]:
    out = git("--git-dir", str(mirror), "log", "--format=%an", f"{base}..{head}", cwd=cwd)
    return [line for line in out.splitlines() if line]


@pytest.mark.parametrize("after", [False, True], ids=["before-the-commit", "after-the-commit"])
def test_kill_9_between_the_exit_and_done_loses_nothing_and_commits_once(
        tmp_path: Path, after: bool) -> None:
    origin, cfg = setup(tmp_path)
    sub = subprocess.run([*necroui(), "--config", str(cfg), "submit",
                          str(tmp_path / "flow.yaml")], cwd=tmp_path, env=env_with(),
                         capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    gate = GitGate.install(tmp_path / "gate", after=after)
    first = headless(tmp_path, cfg, env_with(gate.env_path()))
    try:
        wait_until(lambda: gate.entered() or first.poll() is not None, 60,
                   "the dispatcher's commit")
        assert first.poll() is None, first.communicate()[0][-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        os.kill(int((gate.folder / "pid").read_text()), signal.SIGKILL)  # its held git too
    finally:
        if first.poll() is None:
            first.kill()
    registry = SQLiteRegistry(tmp_path / "registry.db")
    try:
        left = registry.get_task("flow/a")
        assert left.state is TaskState.RUNNING and left.head is None  # ended, not recorded
    finally:
        registry.close()
    (tmp_path / "state" / "dispatcher.json").unlink(missing_ok=True)  # its pid is dead
    second = headless(tmp_path, cfg, env_with())
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out[-3000:]
    registry = SQLiteRegistry(tmp_path / "registry.db")
    try:
        done = registry.get_task("flow/a")
        events = [e.event_type for e in registry.get_events(task_key="flow/a")]
    finally:
        registry.close()
    assert done.state is TaskState.DONE and done.attempts == 0
    assert done.files_changed == ("a.txt",) and done.commits == 1
    assert events.count(EventType.WORK_RECORDED) == 1
    assert events.count(EventType.TASK_ASSIGNED) == 1  # it did not run again
    mirror = next((tmp_path / "state" / "workspaces").glob("*/repo.git"))
    assert git("--git-dir", str(mirror), "show", f"{done.head}:a.txt", cwd=tmp_path) \
        == "a by the agent"
    assert dispatcher_commits(mirror, str(done.head), str(done.base), tmp_path) == [
        "NecroCode Dispatcher"]
    slots = json.loads((tmp_path / "state" / "workspaces" / "slots.json").read_text())
    assert {s["task"] for s in slots["slots"].values()} == {None}
    assert origin.exists()
