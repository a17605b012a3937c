"""The real agent CLIs (Claude Code, Codex, Gemini CLI, mini-swe-agent) run through their
presets by the local launcher, against the scripted model server on 127.0.0.1.

Each CLI is installed by ``.ci/agents.sh`` (called from ``.ci/run``, which exports
``NECROCODE_AGENT_<NAME>`` and ``NECROCODE_AGENTS_REQUIRED=1``); elsewhere a CLI that is not
installed skips its tests with the reason. No request leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.agents.budget import Budget
from necrocode.dispatcher.agents.launch import watch_spec
from necrocode.dispatcher.agents.stream import AttemptResult, StreamReader
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher
from necrocode.dispatcher.models import AgentPool, Runner, Slot, Task
from support import wait_until

from necroui.demo.model_server import ModelServer, Script
from necroui.demo.real_agents import CLIS
from necroui.demo.real_agents import AgentCli as Cli
from necroui.demo.real_agents import find_executable as find_cli

pytestmark = pytest.mark.slow

KEY_ENV = "NECROCODE_TEST_MODEL_KEY"
KEY = "sk-scripted-test-key-0123456789"


def installed(name: str) -> tuple[Cli, str]:
    """The CLI of a preset and its executable; skips (fails in CI) when it is absent."""
    spec = CLIS[name]
    exe = find_cli(spec)
    if exe is None:
        why = (f"{spec.program} ({spec.preset}) is not installed: run `. .ci/agents.sh` "
               f"or set {spec.env}")
        if os.environ.get("NECROCODE_AGENTS_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return spec, exe


@pytest.fixture(params=list(CLIS))
def cli(request: pytest.FixtureRequest) -> tuple[Cli, str]:
    return installed(request.param)


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    with ModelServer() as s:
        yield s


class Harness:
    """A worktree, a local launcher with a preset pool, and a stream reader."""

    def __init__(self, root: Path, server: ModelServer) -> None:
        self.root = root
        self.server = server
        repo, self.worktree = root / "repo", root / "wt"
        git_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
        for args in (["init", "-q", "-b", "main", str(repo)],
                     ["-C", str(repo), "commit", "-q", "--allow-empty", "-m", "base"],
                     ["-C", str(repo), "worktree", "add", "-q", "-b", "feature/task-ts-1",
                      str(self.worktree)]):
            subprocess.run(["git", *args], check=True, env=git_env)
        self.launcher = LocalProcessLauncher(
            LaunchEnvironment(api_url=None, token_for=lambda r: "", runs_dir=root / "runs",
                              stop_grace=2.0),
            extra_env={KEY_ENV: KEY})
        self.reader = StreamReader(interval=0.1)
        self.runners: list[Runner] = []

    def start(self, cli: Cli, exe: str, script: Script, budget: Budget | None = None
              ) -> tuple[Runner, Task]:
        self.server.configure(script)
        pool = AgentPool(name="coders", agent=cli.preset, agent_options={
            "model": cli.model, "base_url": self.server.url + cli.url_suffix,
            "api_key_env": KEY_ENV, "executable": exe})
        task = Task(id="1", taskset="ts", title="Create hello.txt",
                    description="Create the file hello.txt containing the line hello.",
                    metadata={"acceptance": "hello.txt exists"})
        slot = Slot("s1", str(self.worktree), str(self.root / "repo"), "feature/task-ts-1")
        runner = self.launcher.launch(task, slot, pool, attempt=1)
        self.runners.append(runner)
        assert runner.log_path and runner.attempt_dir
        spec = watch_spec(task, pool, runner.attempt_dir, runner.log_path, budget=budget)
        assert spec is not None
        self.reader.watch(runner.runner_id, runner.log_path, spec.preset, **spec.kwargs())
        return runner, task

    def wait_exit(self, runner: Runner) -> AttemptResult:
        exit_ = wait_until(lambda: self.launcher.poll(runner), timeout=180, what="agent exit")
        result = self.reader.finish(runner.runner_id, exit_.exit_code)
        assert result is not None
        self.exit_code = exit_.exit_code
        return result

    def close(self) -> None:
        self.server.release()
        for runner in self.runners:
            if self.launcher.poll(runner) is None:
                assert self.launcher.stop(runner, grace=2.0).confirmed
        self.reader.close()
        self.launcher.close()


@pytest.fixture
def harness(tmp_path: Path, server: ModelServer) -> Iterator[Harness]:
    h = Harness(tmp_path, server)
    yield h
    h.close()


def _attempt_files(runner: Runner) -> dict[str, str]:
    assert runner.attempt_dir
    out = {}
    for path in Path(runner.attempt_dir).rglob("*"):
        if path.is_file():
            out[str(path)] = path.read_text(errors="replace")
    return out


def test_agent_edits_the_worktree_and_reports_tokens(cli: tuple[Cli, str],
                                                     harness: Harness) -> None:
    spec, exe = cli
    runner, task = harness.start(spec, exe, Script(
        commands=["printf 'hello\\n' > hello.txt", "cat hello.txt"], final="Created hello.txt"))
    result = harness.wait_exit(runner)
    assert result.judgement.succeeded, result.judgement.reason
    assert (harness.worktree / "hello.txt").read_text() == "hello\n"
    usage = result.state.usage
    # the server answers 100/110/120 input and 20 output tokens for steps 0, 1, 2
    assert (usage.input_tokens, usage.output_tokens, usage.turns) == (330, 60, 3)
    assert "Created hello.txt" in result.state.final_message
    files = _attempt_files(runner)
    adir = Path(runner.attempt_dir or "")
    assert "# Task ts/1: Create hello.txt" in files[str(adir / "prompt.md")]
    assert '"input_tokens": 330' in files[str(adir / "usage.json")]
    leaked = [p for p, text in files.items() if KEY in text]
    assert not leaked, f"the model key is written in {leaked}"


# mini-swe-agent's model error is covered by the exit-0 test (it takes ~10 s to start)
@pytest.mark.parametrize("name", ["claude-code", "codex", "gemini"])
def test_model_error_is_a_clear_failure(name: str, harness: Harness) -> None:
    spec, exe = installed(name)
    for status in (401, 500):
        runner, _ = harness.start(spec, exe, Script(commands=["true"], error_status=status))
        result = harness.wait_exit(runner)
        reason = result.judgement.reason
        assert not result.judgement.succeeded
        # Codex words a 500 its own way ("We're currently experiencing high demand")
        codex_500 = spec.preset == "codex" and status == 500 and "Codex turn failed" in reason
        assert str(status) in reason or codex_500, reason


def test_exit_zero_on_failure_is_judged_failed(cli: tuple[Cli, str], harness: Harness) -> None:
    spec, exe = cli
    liar = harness.root / "exits-0"
    liar.write_text(f'#!/bin/sh\n"{exe}" "$@"\nexit 0\n')
    liar.chmod(0o755)
    # Codex words a 500 its own way, mini-swe-agent retries it: a 401 for those two
    status = 401 if spec.preset in ("codex", "mini-swe-agent") else 500
    runner, _ = harness.start(spec, str(liar), Script(commands=["true"], error_status=status))
    result = harness.wait_exit(runner)
    assert harness.exit_code == 0
    assert not result.judgement.succeeded
    reason = result.judgement.reason
    assert str(status) in reason or "AuthenticationError" in reason, reason
    assert not (harness.worktree / "hello.txt").exists()


def test_budget_crossed_mid_run_then_a_stalled_model_leaves_it_idle(
        cli: tuple[Cli, str], harness: Harness) -> None:
    spec, exe = cli
    commands = [f"echo step {i} >> steps.txt" for i in range(6)]
    runner, _ = harness.start(spec, exe, Script(commands=commands, stall_from=4),
                              Budget(max_turns=2))
    update = wait_until(lambda: (u := harness.reader.latest(runner.runner_id)) and u.budget
                        and u, timeout=120, what="a budget verdict")
    assert update.budget is not None
    # read as it comes: the first read over the limit (one step, or two between two reads)
    assert update.budget.reason in ("budget exceeded: 3/2 turns", "budget exceeded: 4/2 turns")
    assert harness.launcher.poll(runner) is None, "the verdict came while the agent ran"
    # the model now stalls (step 4): the agent still runs, its output no longer grows
    wait_until(harness.server.stalled.is_set, timeout=60, what="the stalled request")
    wait_until(lambda: (harness.reader.idle_for(runner.runner_id) or 0) >= 1.0, timeout=30,
               what="no output growth")
    assert harness.launcher.poll(runner) is None
    stop = harness.launcher.stop(runner, grace=2.0)
    assert stop.confirmed


@pytest.mark.parametrize("name", ["claude-code", "codex"])
def test_a_taskset_runs_through_the_dispatcher_to_done(name: str, tmp_path: Path,
                                                      server: ModelServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The preset pool's CLI makes and commits the change; the run is DONE, the work is on
    the task branch, and the tokens the engine read from the CLI's stream are on the task."""
    from git_support import git, make_origin
    from necrocode.dispatcher import DispatcherCore
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.models import PoolType, Taskset, TaskState

    spec, exe = installed(name)
    monkeypatch.setenv(KEY_ENV, KEY)
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(var, "agent")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(var, "agent@example.com")
    origin = make_origin(tmp_path / "origin", {"README.md": "hi\n"})
    server.configure(Script(commands=["printf 'hello\\n' > hello.txt",
                                      "git add hello.txt && git commit -qm 'add hello.txt'"],
                            final="Created it"))
    pool = AgentPool(name="coders", type=PoolType.LOCAL_PROCESS, max_concurrency=1, agent=name,
                     agent_options={"model": spec.model, "executable": exe,
                                    "base_url": server.url + spec.url_suffix,
                                    "api_key_env": KEY_ENV})
    core = DispatcherCore(DispatcherConfig(
        registry_path=str(tmp_path / "reg" / "registry.db"), state_dir=str(tmp_path / "st"),
        poll_interval=0.5, retry_max_attempts=1, agent_pools=[pool],
        skill_mapping={"default": ["coders"]}))
    core.start()
    try:
        core.submit(Taskset(name="app", repo=str(origin), tasks=[
            Task(id="1", taskset="app", title="Create hello.txt", repo=str(origin))]))
        done = wait_until(lambda: (t := core.registry.get_task("app/1")).state in (
            TaskState.DONE, TaskState.FAILED) and t, timeout=180, what="app/1 settled")
        assert done.state is TaskState.DONE, done.last_error
        assert done.reserved_branch == "feature/task-app-1"
        mirror = next((tmp_path / "st").rglob("*.git"))
        assert git("--git-dir", str(mirror), "show", "feature/task-app-1:hello.txt",
                   cwd=tmp_path) == "hello"
        prompts = list((tmp_path / "st").rglob("prompt.md"))
        assert prompts and "# Task app/1: Create hello.txt" in prompts[0].read_text()
        assert done.usage is not None and done.usage.total_tokens > 0 and done.usage.turns > 0
        assert done.agent_summary == "Created it"
        snap = wait_until(lambda: (s := core.snapshot()).counters.usage.total_tokens and s,
                          10, "usage in the snapshot")
        assert snap.counters.usage.total_tokens == done.usage.total_tokens
        assert next(f for f in snap.finished if f.key == "app/1").usage == done.usage
        body = core.metrics.exposition()[0].decode()
        assert f'necrocode_dispatcher_agent_tokens_total{{agent="{name}",kind="input",' \
               f'tenant="app"}}' in body
    finally:
        core.stop(timeout=5)


def _agent_core(tmp_path: Path, spec: Cli, exe: str, server: ModelServer, name: str,
                **config: Any) -> Any:
    from necrocode.dispatcher import DispatcherCore
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.models import PoolType

    pool = AgentPool(name="coders", type=PoolType.LOCAL_PROCESS, max_concurrency=1,
                     agent=spec.preset, agent_options={
                         "model": spec.model, "executable": exe,
                         "base_url": server.url + spec.url_suffix, "api_key_env": KEY_ENV})
    base: dict[str, Any] = dict(
        registry_path=str(tmp_path / "registry.db"), state_dir=str(tmp_path / "st"),
        poll_interval=0.5, retry_max_attempts=2, retry_backoff_base=1.0, retry_jitter=0.0,
        agent_pools=[pool], skill_mapping={"default": ["coders"]})
    base.update(config)
    return DispatcherCore(DispatcherConfig(**base))


def test_the_dispatcher_stops_a_run_over_its_budget_and_fails_it_without_retry(
        tmp_path: Path, server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that crosses its task's max_turns is stopped mid-run by the engine (fenced) and
    FAILED at once with the budget as its reason; the model was asked no more after that."""
    from necrocode.dispatcher.models import EventType, Taskset, TaskState

    spec, exe = installed("claude-code")
    monkeypatch.setenv(KEY_ENV, KEY)
    server.configure(Script(commands=[f"echo step {i} >> steps.txt; sleep 1" for i in range(8)],
                            stall_from=6))
    core = _agent_core(tmp_path, spec, exe, server, "claude-code")
    core.start()
    try:
        core.submit(Taskset(name="b", tasks=[Task(id="1", taskset="b", title="Count steps",
                                                  max_turns=2)]))
        failed = wait_until(lambda: (t := core.registry.get_task("b/1")).state
                            is TaskState.FAILED and t, timeout=120, what="b/1 failed")
        assert (failed.last_error or "").startswith("budget exceeded: "), failed.last_error
        assert failed.attempts == 1  # not retried
        assert failed.usage is not None and failed.usage.turns >= 3
        kinds = [e.event_type for e in core.registry.get_events(task_key="b/1")]
        assert EventType.BUDGET_EXCEEDED in kinds and EventType.TASK_RETRIED not in kinds
        assert not server.stalled.is_set()  # stopped before it reached the stalling step
    finally:
        server.release()
        core.stop(timeout=5)


def test_an_agent_that_exits_0_on_failure_fails_its_attempt_and_is_retried(
        tmp_path: Path, server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """mini-swe-agent exits 0 when the model refuses it: the engine judges the attempt failed
    by its own result, retries it per policy, and names the agent's reason."""
    from necrocode.dispatcher.models import Taskset, TaskState

    spec, exe = installed("mini-swe-agent")
    monkeypatch.setenv(KEY_ENV, KEY)
    server.configure(Script(commands=["true"], error_status=401))
    core = _agent_core(tmp_path, spec, exe, server, "mini-swe-agent")
    core.start()
    try:
        core.submit(Taskset(name="m", tasks=[Task(id="1", taskset="m", title="Say hi")]))
        failed = wait_until(lambda: (t := core.registry.get_task("m/1")).state
                            is TaskState.FAILED and t, timeout=240, what="m/1 failed")
        assert failed.attempts == 2  # retried once, per retry_max_attempts
        assert "mini-swe-agent" in (failed.last_error or "") and (
            "401" in (failed.last_error or "") or "Authentication" in (failed.last_error or "")
        ), failed.last_error
    finally:
        core.stop(timeout=5)


def test_a_tenant_over_its_budget_waits_with_that_reason(
        tmp_path: Path, server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's budget bounds its runs (the first is stopped when the tenant's total
    crosses it) and then holds its other tasks, with that pending reason."""
    from necrocode.dispatcher.models import Taskset, TaskState
    from necrocode.dispatcher.snapshot import PendingReason

    spec, exe = installed("claude-code")
    monkeypatch.setenv(KEY_ENV, KEY)
    server.configure(Script(commands=["echo hi > hi.txt"], final="Done."))
    core = _agent_core(tmp_path, spec, exe, server, "claude-code",
                       tenant_budgets={"team": {"max_tokens": 10}})
    core.start()
    try:
        core.submit(Taskset(name="t", tenant="team", tasks=[
            Task(id="1", taskset="t", title="first", tenant="team", priority=1),
            Task(id="2", taskset="t", title="second", tenant="team")]))
        first = wait_until(lambda: (t := core.registry.get_task("t/1")).state
                           is TaskState.FAILED and t, 180, "the first task ran")
        assert (first.last_error or "").startswith("budget exceeded: ")
        view = wait_until(lambda: next((q for q in core.snapshot().queued if q.key == "t/2"
                                        and q.pending.reason is PendingReason.OVER_BUDGET),
                                       None), 30, "t/2 waits for budget")
        assert view.pending.message.startswith("tenant team over budget: ")
        assert core.registry.get_task("t/2").state is TaskState.READY
        assert len(core.registry.get_events(task_key="t/2")) and not [
            e for e in core.registry.get_events(task_key="t/2")
            if e.event_type.value == "TaskAssigned"]
    finally:
        core.stop(timeout=5)


def test_the_agents_demo_runs_the_real_cli_against_the_scripted_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``necroui --no-tui --demo --agents`` with Claude Code installed: every demo task is a
    real ``claude`` run against the demo's scripted model on 127.0.0.1 (tokens from the server,
    turns and cost as the CLI reports them), and the demo's budget task is stopped by its
    budget."""
    import json

    from click.testing import CliRunner

    from necroui.cli import main
    from necroui.demo import BUDGET_TASK

    installed("claude-code")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    monkeypatch.setenv("NECROUI_DEMO_AGENT", "claude-code")
    env = {"NECROCODE_REGISTRY": str(tmp_path / "reg.db")}
    result = CliRunner().invoke(main, ["--no-tui", "--demo", "--agents", "--until-done"],
                                env=env)
    assert "the real claude" in result.output and "scripted model at http://127.0.0.1:" \
        in result.output, result.output
    assert "DONE           29" in result.output and "FAILED          1" in result.output, \
        result.output
    listed = CliRunner().invoke(main, ["tasks", "--json"], env=env)
    tasks = {t["key"]: t for t in json.loads(listed.output)}
    done = [t for t in tasks.values() if t["state"] == "done"]
    assert all(t["agent"] == "claude-code" for t in tasks.values())
    assert all(t["usage"]["input_tokens"] > 0 and t["usage"]["turns"] >= 2 for t in done)
    assert all((t["usage"]["cost_usd"] or 0) > 0 for t in done)  # Claude Code prices its model
    stopped = tasks[f"demo/{BUDGET_TASK}"]
    assert stopped["state"] == "failed" and "budget exceeded" in stopped["last_error"]
