"""Agent presets: invocations, parsers on recorded output, judgements, budgets, prompts.

``agent_output/*`` was recorded from the real CLIs against the scripted model server
(necroui/demo/model_server.py): a run that creates hello.txt in 3 steps (100/110/120 input
and 20 output tokens per step) and a run answered HTTP 401. aider is not installed by CI: its
two logs are written after aider 0.86's ``--no-pretty`` output (AGENTS.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from necrocode.dispatcher.agents import PRESETS, get_preset
from necrocode.dispatcher.agents.base import (
    AgentOptionError,
    AgentOptions,
    AttemptContext,
    StreamParser,
    Verdict,
)
from necrocode.dispatcher.agents.budget import (
    Budget,
    Price,
    check_budget,
    group_budget_reason,
    pending_budget_reason,
    usage_totals,
    with_cost,
)
from necrocode.dispatcher.agents.launch import (
    options_from_mapping,
    plan_attempt,
    resolve_agent,
    watch_spec,
)
from necrocode.dispatcher.agents.prompt import (
    MAX_ARGUMENT,
    DependencyResult,
    PromptInput,
    build_prompt,
    dependency_results,
    prompt_argument,
)
from necrocode.dispatcher.models import AgentPool, Slot, Task, Usage

RECORDED = Path(__file__).parent / "agent_output"


def parse(preset: str, name: str, chunk: int = 0) -> StreamParser:
    parser = get_preset(preset).parser()
    log = RECORDED / f"{name}.log"
    if log.exists():
        data = log.read_bytes()
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            parser.feed(data[i:i + step])
        parser.finish()
    traj = RECORDED / f"{name}.traj.json"
    if traj.exists():
        parser.load_document(traj.read_text())
    return parser


@pytest.mark.parametrize("preset", ["claude-code", "codex", "gemini", "mini-swe-agent"])
@pytest.mark.parametrize("chunk", [0, 7])
def test_recorded_success_usage_and_judgement(preset: str, chunk: int) -> None:
    parser = parse(preset, f"{preset}-ok", chunk)
    u = parser.state.usage
    assert (u.input_tokens, u.output_tokens, u.turns) == (330, 60, 3)
    assert "Created hello.txt" in parser.state.final_message
    judgement = get_preset(preset).judge(parser.state, 0)
    assert judgement.verdict is Verdict.SUCCEEDED, judgement.reason


def test_recorded_details_per_cli() -> None:
    assert parse("claude-code", "claude-code-ok").state.usage.cost_usd == pytest.approx(0.00189)
    assert parse("codex", "codex-ok").state.usage.cached_tokens == 90
    assert parse("codex", "codex-ok").state.usage.cost_usd is None
    assert parse("gemini", "gemini-ok").state.last_action == "Created hello.txt"
    mini = parse("mini-swe-agent", "mini-swe-agent-ok").state
    assert mini.result is not None and mini.result["exit_status"] == "Submitted"


@pytest.mark.parametrize("preset, words", [
    ("claude-code", "API status 401"),
    ("codex", "401 Unauthorized"),
    ("gemini", "401"),
    ("mini-swe-agent", "AuthenticationError"),
    ("aider", "AuthenticationError"),
])
def test_recorded_401_is_judged_failed_even_with_exit_0(preset: str, words: str) -> None:
    parser = parse(preset, f"{preset}-401")
    judgement = get_preset(preset).judge(parser.state, 0)
    assert judgement.verdict is Verdict.FAILED
    assert words in judgement.reason


def test_aider_text_usage_and_edits() -> None:
    parser = parse("aider", "aider-ok")
    assert parser.state.usage == Usage(1200, 45, 0, 0.0021, 1)
    judgement = get_preset("aider").judge(parser.state, 0)
    assert judgement.succeeded and judgement.reason == "edited hello.txt"


def test_no_result_is_a_failure_naming_the_exit_code() -> None:
    for name in ("claude-code", "codex", "gemini", "mini-swe-agent"):
        parser = get_preset(name).parser()
        parser.feed(b"noise that is not json\n{\"partial\": \n")
        judgement = get_preset(name).judge(parser.state, 0)
        assert judgement.verdict is Verdict.FAILED and "exit 0" in judgement.reason


def test_mini_half_written_trajectory_is_ignored() -> None:
    parser = get_preset("mini-swe-agent").parser()
    text = (RECORDED / "mini-swe-agent-ok.traj.json").read_text()
    assert parser.load_document(text[: len(text) // 2]) == []
    assert parser.load_document(text)
    assert parser.state.usage.turns == 3


def test_claude_counts_a_message_once_across_its_content_blocks() -> None:
    parser = get_preset("claude-code").parser()
    line = (b'{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"a"}],'
            b'"usage":{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":3}}}\n')
    parser.feed(line + line)
    assert parser.state.usage == Usage(8, 2, 3, None, 1)


# --- invocations ------------------------------------------------------------------------------

def ctx(tmp_path: Path, **opts: object) -> AttemptContext:
    options = options_from_mapping({"model": "m1", "base_url": "http://127.0.0.1:9/v1",
                                    "api_key_env": "MY_KEY", **opts})
    return AttemptContext("do it", str(tmp_path / "wt"), str(tmp_path / "attempt"), options,
                          {"MY_KEY": "secret-value"})


def test_codex_home_config_names_the_key_variable_not_the_key(tmp_path: Path) -> None:
    inv = get_preset("codex").invocation(ctx(tmp_path, sandbox="workspace-write"))
    config = inv.files[str(tmp_path / "attempt/codex-home/config.toml")]
    assert 'env_key = "MY_KEY"' in config and 'base_url = "http://127.0.0.1:9/v1"' in config
    assert 'sandbox_mode = "workspace-write"' in config and "request_max_retries = 0" in config
    assert "[analytics]\nenabled = false" in config and "plugins = false" in config
    assert "secret-value" not in config
    assert inv.env["MY_KEY"] == "secret-value" and inv.shown_env()["MY_KEY"] == "***"
    assert inv.argv[1:4] == ("exec", "--json", "--skip-git-repo-check")
    assert inv.argv[-1] == "do it"


@pytest.mark.parametrize("name, variable", [
    ("claude-code", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY"),
    ("mini-swe-agent", "OPENAI_API_KEY"), ("aider", "OPENAI_API_KEY"),
])
def test_key_is_mapped_to_the_cli_variable_and_never_in_argv(tmp_path: Path, name: str,
                                                             variable: str) -> None:
    inv = get_preset(name).invocation(ctx(tmp_path))
    assert inv.env[variable] == "secret-value"
    assert variable in inv.secret_env
    assert not any("secret-value" in a for a in inv.argv)
    assert not any("secret-value" in text for text in inv.files.values())


def test_offline_and_bounded_settings(tmp_path: Path) -> None:
    claude = get_preset("claude-code").invocation(ctx(tmp_path)).env
    assert claude["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert claude["CLAUDE_CODE_MAX_RETRIES"] == "0"
    gemini = get_preset("gemini").invocation(ctx(tmp_path))
    settings = next(iter(gemini.files.values()))
    assert '"maxAttempts": 1' in settings and '"usageStatisticsEnabled": false' in settings
    mini = get_preset("mini-swe-agent").invocation(ctx(tmp_path))
    assert mini.env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert mini.env["MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT"] == "1"
    assert mini.result_file == str(tmp_path / "attempt/traj.json")
    assert "openai/m1" in mini.argv


def test_long_prompt_goes_through_prompt_md(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    long = AttemptContext("x" * (MAX_ARGUMENT + 1), c.slot_path, c.agent_dir, c.options)
    assert "prompt.md" in prompt_argument(long)
    assert prompt_argument(c) == "do it"


def test_bad_options() -> None:
    with pytest.raises(AgentOptionError, match="extra_args"):
        options_from_mapping({"extra_args": "--fast"})
    with pytest.raises(AgentOptionError, match="model"):
        options_from_mapping({"model": 5})


# --- which preset, and the attempt's plan ------------------------------------------------------

def test_task_agent_over_command_over_pool_agent() -> None:
    pool = AgentPool("p", agent="codex", agent_options={"model": "a", "sandbox": "read-only"})
    preset, opts = resolve_agent(Task(id="1"), pool) or (None, None)
    assert preset is PRESETS["codex"] and opts is not None and opts.model == "a"
    assert resolve_agent(Task(id="1", command=["make"]), pool) is None
    preset, opts = resolve_agent(Task(id="1", command=["make"], agent="codex",
                                      agent_options={"model": "b"}), pool) or (None, None)
    assert opts is not None and opts.model == "b" and opts.extras["sandbox"] == "read-only"
    preset, opts = resolve_agent(Task(id="1", agent="gemini"), pool) or (None, None)
    assert preset is PRESETS["gemini"] and opts == AgentOptions()  # codex options not taken
    assert resolve_agent(Task(id="1", agent="command", command=["x"]), pool) is None
    assert resolve_agent(Task(id="1"), AgentPool("q")) is None
    with pytest.raises(AgentOptionError, match="unknown agent 'old-cli'; agents: claude-code"):
        resolve_agent(Task(id="1", agent="old-cli"), pool)


def test_plan_writes_prompt_md_and_refuses_an_unset_key_variable(tmp_path: Path) -> None:
    pool = AgentPool("p", agent="claude-code", agent_options={"api_key_env": "NOPE_KEY"})
    task = Task(id="1", taskset="ts", title="T")
    slot = Slot("s", str(tmp_path), None, "feature/x")
    with pytest.raises(AgentOptionError, match="NOPE_KEY"):
        plan_attempt(task, slot, pool, attempt=1, agent_dir=str(tmp_path), environ={})
    plan = plan_attempt(task, slot, pool, attempt=1, agent_dir=str(tmp_path),
                        environ={"NOPE_KEY": "k"})
    assert plan is not None and plan.env["NECROCODE_AGENT"] == "claude-code"
    assert "# Task ts/1: T" in plan.files[str(tmp_path / "prompt.md")]
    spec = watch_spec(task, pool, tmp_path, tmp_path / "output.log")
    assert spec is not None and spec.usage_path == tmp_path / "usage.json"


# --- budgets and prices -----------------------------------------------------------------------

def test_budget_reasons() -> None:
    assert check_budget(Usage(cost_usd=1.234), Budget(max_cost_usd=1.0)).reason \
        == "budget exceeded: 1.23/1.00 USD"  # type: ignore[union-attr]
    assert check_budget(Usage(600, 500), Budget(max_tokens=1000)).reason \
        == "budget exceeded: 1100/1000 tokens"  # type: ignore[union-attr]
    assert check_budget(Usage(turns=3), Budget(max_turns=3)) is None  # at the limit: within
    assert check_budget(Usage(cost_usd=None), Budget(max_cost_usd=0.0)) is None
    assert Budget(1.0, None, 5).tighter(Budget(2.0, 10, None)) == Budget(1.0, 10, 5)
    assert group_budget_reason("tenant", "team-a", Usage(cost_usd=51.2), Budget(50.0)) \
        == "tenant team-a over budget: 51.20/50.00 USD"
    assert group_budget_reason("taskset", "n", Usage(10, 10), Budget(max_tokens=20)) is None
    tasks = [Task(id="1", taskset="a", tenant="t", usage=Usage(10, 5, cost_usd=1.0)),
             Task(id="2", taskset="b", tenant="t", usage=Usage(1, 1, cost_usd=0.5)),
             Task(id="3", taskset="b", tenant="u")]
    tenants, tasksets = usage_totals(tasks)
    assert tenants == {"t": Usage(11, 6, 0, 1.5, 0)} and set(tasksets) == {"a", "b"}
    assert pending_budget_reason(tasks[2], tenants, tasksets, {"t": Budget(1.0)}, {}) is None
    assert pending_budget_reason(tasks[1], tenants, tasksets, {"t": Budget(1.0)}, {}) \
        == "tenant t over budget: 1.50/1.00 USD"
    assert pending_budget_reason(tasks[0], tenants, tasksets, {}, {"a": Budget(max_tokens=10)}) \
        == "taskset a over budget: 15/10 tokens"


def test_derived_cost_and_usage_sums() -> None:
    prices = {"gpt-x": Price(input=2.0, output=8.0, cached=0.5)}
    u = with_cost(Usage(1_000_000, 100_000, 400_000), "openai/gpt-x", prices)
    assert u.cost_usd == pytest.approx(1.2 + 0.2 + 0.8)
    assert with_cost(Usage(10, 10), "unknown", prices).cost_usd is None
    total = Usage(1, 2, 0, None, 1) + Usage(3, 4, 1, 0.5, 2)
    assert total == Usage(4, 6, 1, 0.5, 3) and Usage.from_dict(total.to_dict()) == total
    assert (Usage() + Usage()).cost_usd is None


# --- prompt -----------------------------------------------------------------------------------

def test_prompt_from_task_slot_and_dependencies() -> None:
    task = Task(id="2", taskset="app", title="Add the API", description="REST endpoints.",
                metadata={"requirements": ["1.1", "2.3"], "acceptance": "tests pass",
                          "owner": "team-a", "kiro_line": 7})
    deps = (DependencyResult("app/1", "Schema", "feature/task-app-1", "0123456789abcdef",
                             "Created the tables."),)
    text = build_prompt(PromptInput(task, "/ws/slot-1", "feature/task-app-2", 2, deps))
    assert text.startswith("# Task app/2: Add the API\n\nREST endpoints.")
    assert "## Requirements\n- 1.1\n- 2.3" in text and "## Acceptance\ntests pass" in text
    assert "- owner: team-a" in text and "kiro_line" not in text
    assert "- app/1 (Schema) — branch feature/task-app-1, head 0123456789ab" in text
    assert "Summary: Created the tables." in text
    assert "/ws/slot-1" in text and "Branch: feature/task-app-2" in text
    known = {"app/1": Task(id="1", taskset="app", title="Schema", branch="feature/task-app-1",
                           head="0123456789abcdef", agent_summary="Created the tables.")}
    assert dependency_results(Task(id="2", taskset="app", dependencies=["1", "9"]), known) \
        == deps
    custom = build_prompt(PromptInput(task, "/ws"), "{title} in {slot_path} {unknown} {{x}}")
    assert custom == "Add the API in /ws {unknown} {x}"


def test_agent_metrics_count_tokens_and_cost() -> None:
    from necrocode.dispatcher.metrics import MetricsCollector

    collector = MetricsCollector()
    collector.agents.record("codex", "team-a", Usage(100, 20, 30, 0.5, 3))
    collector.agents.record("codex", "team-a", Usage(1, 1, 0, None, 1))
    text = collector.export_prometheus()
    assert ('necrocode_dispatcher_agent_tokens_total{agent="codex",kind="input",'
            'tenant="team-a"} 101.0') in text
    assert 'necrocode_dispatcher_agent_tokens_total{agent="codex",kind="cached",' in text
    assert 'necrocode_dispatcher_agent_cost_usd_total{agent="codex",tenant="team-a"} 0.5' in text
