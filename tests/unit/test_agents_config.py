"""Coding-agent keys of the config and of tasksets: errors with file:line and did-you-mean."""

from __future__ import annotations

from pathlib import Path

import pytest
from necrocode.dispatcher.agents.checks import budget_of, prices_of
from necrocode.dispatcher.config_loader import config_to_dict, load_config_file
from necrocode.dispatcher.errors import ConfigError, TasksetError
from necrocode.dispatcher.tasksets import load_taskset_file

GOOD_CONFIG = """\
dispatcher:
  agent_prompt_template: "{title}: {description} on {branch}"
  agent_prices:
    gpt-5-codex: {input: 1.25, output: 10, cached: 0.125}
  tenant_budgets:
    team-a: {max_cost_usd: 50, max_tokens: 2000000}
agent_pools:
  coders:
    type: local-process
    max_concurrency: 2
    agent: codex
    agent_options:
      model: gpt-5-codex
      base_url: http://127.0.0.1:8000/v1
      api_key_env: OPENAI_API_KEY
      extra_args: ["-c", "x=1"]
      sandbox: workspace-write
skill_mapping:
  default: [coders]
"""


def test_agent_config_loads_and_shows(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD_CONFIG)
    config = load_config_file(path)
    pool = config.agent_pools[0]
    assert pool.agent == "codex" and pool.agent_options["sandbox"] == "workspace-write"
    assert prices_of(config.agent_prices)["gpt-5-codex"].cached == 0.125
    assert budget_of(config.tenant_budgets["team-a"]).max_tokens == 2000000
    shown = config_to_dict(config)
    assert shown["agent_pools"]["coders"]["agent"] == "codex"
    assert shown["dispatcher"]["tenant_budgets"] == {"team-a": {"max_cost_usd": 50,
                                                                "max_tokens": 2000000}}


def test_agent_config_errors_name_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD_CONFIG.replace("agent: codex", "agent: codx")
                    .replace("      sandbox:", "      sandbx:")
                    .replace("{title}:", "{titel}:")
                    .replace("max_cost_usd: 50", "max_cost_usd: -1"))
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    text = str(err.value)
    assert f"{path}:2: dispatcher.agent_prompt_template: unknown placeholder {{titel}} " \
           "(did you mean 'title'?" in text
    assert f"{path}:6: dispatcher.tenant_budgets.team-a.max_cost_usd: expected a positive " \
           "number (USD), got -1" in text
    assert f"{path}:11: agent_pools.coders.agent: unknown agent 'codx' (did you mean " \
           "'codex'?" in text
    path.write_text(GOOD_CONFIG.replace("      sandbox:", "      sandbx:"))
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert f"{path}:17: agent_pools.coders.agent_options.sandbx: unknown option of agent " \
           "codex (did you mean 'sandbox'?" in str(err.value)


def test_taskset_agent_keys_defaults_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "ts.yaml"
    path.write_text("""\
taskset: app
agent: codex
agent_options: {model: m1}
max_cost_usd: 2
tasks:
  - id: "1"
    title: inherits the taskset's agent and budget
  - id: "2"
    title: its own agent and limits
    agent: claude-code
    max_turns: 30
    max_tokens: 100000
""")
    taskset, _ = load_taskset_file(path)
    one, two = taskset.tasks
    assert (one.agent, one.agent_options, one.max_cost_usd) == ("codex", {"model": "m1"}, 2.0)
    assert (two.agent, two.agent_options, two.max_turns, two.max_tokens) == (
        "claude-code", {}, 30, 100000)
    path.write_text(path.read_text().replace("claude-code", "gemeni")
                    .replace("max_turns: 30", "max_turns: 1.5"))
    with pytest.raises(TasksetError) as err:
        load_taskset_file(path)
    text = str(err.value)
    assert f"{path}:10: tasks[2].agent: unknown agent 'gemeni' (did you mean 'gemini'?" in text
    assert f"{path}:11: tasks[2].max_turns: expected a positive integer, got 1.5" in text


def test_tasks_json_shows_usage(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner
    from necrocode.dispatcher.models import Task, Taskset, Usage
    from necrocode.dispatcher.registry import open_registry

    from necroui.cli import main

    db = tmp_path / "registry.db"
    registry = open_registry(db)
    registry.submit_taskset(Taskset(name="app", tasks=[Task(id="1", title="t", agent="codex")]))
    registry.update_task("app/1", usage=Usage(1200, 300, 100, None, 7))
    registry.close()
    out = CliRunner().invoke(main, ["--registry", str(db), "tasks", "--json"])
    assert out.exit_code == 0, out.output
    [task] = json.loads(out.output)
    assert task["agent"] == "codex"
    assert task["usage"] == {"input_tokens": 1200, "output_tokens": 300, "cached_tokens": 100,
                             "cost_usd": None, "turns": 7}
