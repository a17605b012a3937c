"""The live stream reader (its own thread) and the local launcher running a preset.

The agent here is a stand-in executable that writes recorded Claude Code / mini-swe-agent
output; the real CLIs run in tests/integration/test_agents_real.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from necrocode.dispatcher.agents import get_preset
from necrocode.dispatcher.agents.budget import Budget
from necrocode.dispatcher.agents.launch import watch_spec
from necrocode.dispatcher.agents.stream import RunUpdate, StreamReader, read_usage
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher
from necrocode.dispatcher.models import AgentPool, Slot, Task, Usage
from support import wait_until

RECORDED = Path(__file__).parent / "agent_output"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_incremental_reads_budget_idle_and_usage_json(tmp_path: Path) -> None:
    lines = (RECORDED / "claude-code-ok.log").read_bytes().splitlines(keepends=True)
    log = tmp_path / "output.log"
    log.write_bytes(b"")
    clock = Clock()
    seen: list[RunUpdate] = []
    reader = StreamReader(clock=clock, on_update=seen.append)
    reader.watch("r1", log, get_preset("claude-code"), budget=Budget(max_tokens=150),
                 usage_path=tmp_path / "usage.json")
    try:
        reader.poll_now()
        assert reader.latest("r1") is None and reader.idle_for("r1") == 0
        clock.now += 5
        assert reader.idle_for("r1") == 5  # no output yet: idle since watched
        with log.open("ab") as f:
            for line in lines[:3]:  # init + first assistant message (100 in, 1 out)
                f.write(line)
        reader.poll_now()
        first = reader.latest("r1")
        assert first is not None and first.budget is None and reader.idle_for("r1") == 0
        with log.open("ab") as f:
            f.write(b"".join(lines[3:]))
        reader.poll_now()
        latest = reader.latest("r1")
        assert latest is not None and latest.budget is not None
        assert latest.budget.reason.startswith("budget exceeded: ")
        assert latest.budget.reason.endswith("/150 tokens")
        assert [u.runner_id for u in reader.updates()] == ["r1"] and reader.updates() == []
        assert seen and seen[-1] == latest
        result = reader.finish("r1", 0)
        assert result is not None and result.judgement.succeeded
        assert result.budget == latest.budget
        usage = read_usage(tmp_path)
        assert usage is not None and usage["input_tokens"] == 330 and usage["agent"] == \
            "claude-code"
        assert reader.latest("r1") is None and reader.finish("r1", 0) is None
    finally:
        reader.close()


def test_reader_thread_calls_back_off_the_caller_thread(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes((RECORDED / "codex-ok.log").read_bytes())
    threads: list[str] = []
    reader = StreamReader(interval=0.01, on_update=lambda u: threads.append(
        threading.current_thread().name))
    reader.watch("r1", log, get_preset("codex"))
    try:
        wait_until(lambda: threads, what="a callback")
        assert threads[0] == "necrocode-streams"
    finally:
        reader.close()


def test_rewritten_result_file_is_read_whole(tmp_path: Path) -> None:
    traj = tmp_path / "traj.json"
    reader = StreamReader()
    reader.watch("r1", tmp_path / "output.log", get_preset("mini-swe-agent"), result_file=traj,
                 budget=Budget(max_turns=2))
    doc = json.loads((RECORDED / "mini-swe-agent-ok.traj.json").read_text())
    try:
        partial = {**doc, "messages": doc["messages"][:4], "info": {**doc["info"],
                                                                    "exit_status": ""}}
        traj.write_text(json.dumps(partial))
        reader.poll_now()
        latest = reader.latest("r1")
        assert latest is not None and latest.state.usage.turns == 1 and latest.budget is None
        traj.write_text(json.dumps(doc))
        reader.poll_now()
        latest = reader.latest("r1")
        assert latest is not None and latest.budget is not None
        assert latest.budget.reason == "budget exceeded: 3/2 turns"
        result = reader.finish("r1", 0)
        assert result is not None and result.judgement.succeeded
    finally:
        reader.close()


def test_local_launcher_runs_a_preset_with_prompt_md(tmp_path: Path) -> None:
    fake = tmp_path / "claude"
    fake.write_text(f"#!/bin/sh\n# arguments: $*\ncat '{RECORDED / 'claude-code-ok.log'}'\n")
    fake.chmod(0o755)
    wt = tmp_path / "wt"
    wt.mkdir()
    launcher = LocalProcessLauncher(
        LaunchEnvironment(api_url=None, token_for=lambda r: "", runs_dir=tmp_path / "runs",
                          prompt_template="Do {title} on {branch}."),
        extra_env={"THE_KEY": "k-123"})
    pool = AgentPool("coders", agent="claude-code",
                     agent_options={"executable": str(fake), "api_key_env": "THE_KEY"})
    task = Task(id="1", taskset="ts", title="the thing")
    try:
        runner = launcher.launch(task, Slot("s", str(wt), None, "feature/b"), pool)
        exit_ = wait_until(lambda: launcher.poll(runner), what="exit")
        assert exit_.exit_code == 0
        adir = Path(runner.attempt_dir or "")
        assert (adir / "prompt.md").read_text() == "Do the thing on feature/b."
        assert (adir / "claude-config").exists() is False  # the CLI creates it, not us
        spec = watch_spec(task, pool, adir, runner.log_path or "")
        assert spec is not None
        reader = StreamReader()
        reader.watch(runner.runner_id, spec.log_path, spec.preset, **spec.kwargs())
        result = reader.finish(runner.runner_id, exit_.exit_code)
        reader.close()
        assert result is not None and result.judgement.succeeded
        assert result.state.usage.total_tokens == 390
    finally:
        launcher.close()


def test_agent_runs_facade_for_the_engine(tmp_path: Path) -> None:
    from necrocode.dispatcher.agents.supervisor import AgentRuns
    from necrocode.dispatcher.models import Runner

    adir = tmp_path / "attempt-1"
    adir.mkdir()
    log = adir / "output.log"
    log.write_bytes((RECORDED / "claude-code-ok.log").read_bytes())
    pool = AgentPool("p", agent="claude-code")
    task = Task(id="1", max_turns=2)
    runs = AgentRuns()
    try:
        plain = Runner("r0", "ts/1", "p", log_path=str(log), attempt_dir=str(adir))
        assert not runs.started(Task(id="0", command=["x"]), pool, plain)
        runner = Runner("r1", "ts/1", "p", log_path=str(log), attempt_dir=str(adir))
        assert runs.started(task, pool, runner)
        update = wait_until(lambda: next(iter(runs.updates()), None), what="an update")
        assert update.runner_id == "r1"
        outcome = runs.ended("r1", 0)
        assert outcome is not None and outcome.succeeded is True and outcome.agent == \
            "claude-code"
        assert outcome.usage.input_tokens == 330
        assert outcome.budget_reason == "budget exceeded: 3/2 turns"
        assert runs.ended("r1", 0) is None and runs.ended("r0", 0) is None
    finally:
        runs.close()
    payload = {"exit_code": 0, "agent": {"agent": "codex", "usage": {"input_tokens": 5,
                                                                      "turns": 9},
                                         "judgement": {"verdict": "failed", "reason": "x"}}}
    got = AgentRuns.reported(Task(id="1", max_turns=3), AgentPool("p", agent="codex"), payload)
    assert got is not None and got.succeeded is False and got.reason == "x"
    assert got.budget_reason == "budget exceeded: 9/3 turns"
    assert AgentRuns.heartbeat_usage({"progress": "$ ls", "usage": {"output_tokens": 3}}) == (
        "$ ls", Usage(output_tokens=3))


def test_usage_reported_only_at_the_end_is_checked_at_finish(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes((RECORDED / "codex-ok.log").read_bytes())  # tokens in turn.completed only
    reader = StreamReader()
    reader.watch("r1", log, get_preset("codex"), budget=Budget(max_tokens=100))
    result = reader.finish("r1", 0)
    reader.close()
    assert result is not None and result.budget is not None
    assert result.budget.reason == "budget exceeded: 390/100 tokens"


def test_a_rerun_of_the_same_attempt_is_read_from_its_own_start(tmp_path: Path) -> None:
    from necrocode.dispatcher.agents.supervisor import run_start

    log = tmp_path / "output.log"
    earlier = (RECORDED / "claude-code-401.log").read_bytes()
    log.write_bytes(earlier + b"\n--- necrocode: runner r-2 started ---\n")
    assert run_start(log, "r-2") == len(earlier) + 39
    assert run_start(log, "r-other") == 0 and run_start(tmp_path / "none", "r-2") == 0
    with log.open("ab") as f:
        f.write((RECORDED / "claude-code-ok.log").read_bytes())
    reader = StreamReader()
    reader.watch("r-2", log, get_preset("claude-code"), offset=run_start(log, "r-2"))
    result = reader.finish("r-2", 0)
    reader.close()
    assert result is not None and result.judgement.succeeded  # not the earlier 401
