"""The demo taskset, its config and its fake agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.graph import build_graph, find_cycles
from necrocode.dispatcher.models import AgentPool
from necrocode.dispatcher.tasksets import load_taskset_file

from necroui.demo import demo_config, demo_taskset_path
from necroui.demo.fake_agent import main as fake_agent

REPO = Path(__file__).resolve().parents[2]


def test_examples_copy_is_identical() -> None:
    assert (REPO / "examples" / "tasksets" / "demo.yaml").read_bytes() == \
        demo_taskset_path().read_bytes()


def test_demo_taskset_shape() -> None:
    taskset, warnings = load_taskset_file(demo_taskset_path())
    assert warnings == []
    assert len(taskset.tasks) == 30
    assert {t.required_skill for t in taskset.tasks} == {"database", "backend", "frontend"}
    assert find_cycles(build_graph(taskset.tasks)) == []
    assert sum(1 for t in taskset.tasks if t.dependencies) >= 20
    limit = DispatcherConfig().retry_max_attempts
    for task in taskset.tasks:
        assert task.command and task.command[:3] == ["python3", "-m", "necroui.demo.fake_agent"]
        if "--fail-attempts" in task.command:
            fails = task.command[task.command.index("--fail-attempts") + 1].split(",")
            assert len(fails) < limit, f"{task.key} would never succeed"


def test_demo_config_gives_default_setups_three_pools() -> None:
    config = demo_config(DispatcherConfig())
    assert [p.name for p in config.agent_pools] == ["database", "backend", "frontend"]
    assert config.retry_backoff_base < 2
    own = DispatcherConfig(agent_pools=[AgentPool(name="mine", max_concurrency=9)],
                           skill_mapping={"default": ["mine"]}, retry_backoff_base=3.0)
    kept = demo_config(own)
    assert [p.name for p in kept.agent_pools] == ["mine"] and kept.retry_backoff_base == 3.0


@pytest.mark.parametrize(("attempt", "fails", "code"), [
    ("1", "1", 7),  # fails on the listed attempt with the given exit code
    ("2", "1", 0),  # and succeeds on the retry
    ("2", "1,2", 7),
])
def test_fake_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attempt: str, fails: str,
                    code: int) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NECROCODE_ATTEMPT", attempt)
    monkeypatch.setenv("NECROCODE_TASK_CONTEXT", '{"task": "demo/x.1", "task_id": "x.1"}')
    monkeypatch.setenv("NECROUI_DEMO_SPEED", "0")
    monkeypatch.setenv("NECROUI_DEMO_TRACE", str(tmp_path / "trace"))
    rc = fake_agent(["--seconds", "1", "--fail-attempts", fails, "--exit-code", "7"])
    assert rc == code
    assert (tmp_path / "x.1.txt").exists() is (code == 0)
    kinds = [line.split()[0] for line in (tmp_path / "trace").read_text().splitlines()]
    assert kinds == ["start", "end"]


def test_demo_submit_writes_this_python_and_hints_a_finished_demo(tmp_path: Path) -> None:
    """The registry gets the absolute interpreter (a restart without --demo from a shell
    without the venv still finds necroui); a second --demo on a finished demo says how to start
    afresh instead of showing 30/30 DONE with nothing moving."""
    import sys

    from necrocode.dispatcher.core import DispatcherCore
    from necrocode.dispatcher.models import TaskState

    from necroui.demo import demo_config, prepare_demo

    config = demo_config(DispatcherConfig(registry_path=str(tmp_path / "reg.db"),
                                          state_dir=str(tmp_path / "st"), api_enabled=False))
    core = DispatcherCore(config)
    try:
        first = prepare_demo(core)
        assert first.submitted == 30 and first.hint is None
        tasks = core.registry.list_tasks()
        assert all(t.command and t.command[0] == sys.executable for t in tasks)
        assert "python3" in demo_taskset_path().read_text()  # the file stays readable
        assert prepare_demo(core).hint is None  # tasks left to run: the demo continues
        for t in tasks:  # every task finished (cancelled here: nothing left to run)
            core.registry.transition(t.key, TaskState.CANCELLED, expected=t.state)
        again = prepare_demo(core)
        assert again.submitted == 0
        assert again.hint is not None and "reg.db" in again.hint and "--registry" in again.hint
    finally:
        core.close()


@pytest.mark.parametrize(("attempt", "ok"), [("1", False), ("2", True)])
def test_the_stand_in_for_claude_speaks_what_the_real_preset_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        attempt: str, ok: bool) -> None:
    from necrocode.dispatcher.agents import get_preset

    from necroui.demo.fake_claude import cost_of, turn_usage
    from necroui.demo.fake_claude import main as fake_claude

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NECROCODE_TASK_KEY", "demo/x.1")
    monkeypatch.setenv("NECROCODE_ATTEMPT", attempt)
    monkeypatch.setenv("NECROUI_DEMO_SPEED", "0")
    argv = ["-p", "the prompt", "--output-format", "stream-json", "--verbose",
            "--dangerously-skip-permissions", "--seconds", "1", "--turns", "4",
            "--fail-attempts", "1"]
    assert fake_claude(argv) == (0 if ok else 1)
    preset = get_preset("claude-code")
    parser = preset.parser()
    parser.feed(capsys.readouterr().out.encode())
    parser.finish()
    usage, turns = parser.state.usage, 4 if ok else 2
    spent = [turn_usage("demo/x.1", n) for n in range(1, turns + 1)]
    assert usage.turns == turns and usage.output_tokens == sum(u["output_tokens"] for u in spent)
    assert usage.cached_tokens == sum(u["cache_read_input_tokens"] for u in spent)
    assert usage.cost_usd == pytest.approx(sum(cost_of(u) for u in spent), abs=1e-5)
    assert preset.judge(parser.state, 0 if ok else 1).succeeded is ok
    assert (tmp_path / "x.1.txt").exists() is ok


def test_the_agents_demo_runs_every_task_on_the_claude_preset(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from necrocode.dispatcher.core import DispatcherCore

    from necroui.demo import BUDGET_TASK, BUDGET_TOKENS, prepare_demo

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NECROUI_DEMO_AGENT", "stand-in")
    config = demo_config(DispatcherConfig(registry_path=str(tmp_path / "reg.db"),
                                          state_dir=str(tmp_path / "st"), api_enabled=False))
    core = DispatcherCore(config)
    try:
        assert prepare_demo(core, agents=True).submitted == 30
        tasks = core.registry.list_tasks()
        claude = tmp_path / "cache" / "necrocode" / "demo" / "claude"
        assert claude.stat().st_mode & 0o111  # executable, for the preset's argv[0]
        assert {t.agent for t in tasks} == {"claude-code"} and not any(t.command for t in tasks)
        assert {t.agent_options["executable"] for t in tasks} == {str(claude)}
        budget = [t for t in tasks if t.max_tokens]
        assert [(t.id, t.max_tokens) for t in budget] == [(BUDGET_TASK, BUDGET_TOKENS)]
    finally:
        core.close()


@pytest.mark.parametrize("choice,said", [
    ("auto", "no coding-agent CLI is installed, so a stand-in plays Claude Code; install one"),
    ("codex", "NECROUI_DEMO_AGENT=codex: codex is not installed (npm install -g @openai/codex)"),
    ("bogus", "NECROUI_DEMO_AGENT='bogus': expected auto, stand-in or one of claude-code"),
])
def test_the_agents_demo_without_a_real_cli_says_how_to_get_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str, said: str) -> None:
    from necrocode.dispatcher.core import DispatcherCore

    from necroui.demo import prepare_demo
    from necroui.demo.real_agents import CLIS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NECROCODE_AGENTS_CACHE", str(tmp_path / "no-agents"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    for cli in CLIS.values():
        monkeypatch.delenv(cli.env, raising=False)
    monkeypatch.setenv("NECROUI_DEMO_AGENT", choice)
    config = demo_config(DispatcherConfig(registry_path=str(tmp_path / "reg.db"),
                                          state_dir=str(tmp_path / "st"), api_enabled=False))
    core = DispatcherCore(config)
    try:
        start = prepare_demo(core, agents=True)
        assert start.submitted == 30 and start.hint is not None and said in start.hint
        stand_in = str(tmp_path / "cache" / "necrocode" / "demo" / "claude")
        assert {t.agent_options["executable"] for t in core.registry.list_tasks()} == {stand_in}
    finally:
        core.close()
