"""Every configuration mistake is reported with its file, line, key and a fix; all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from necrocode.dispatcher import ConfigError, DispatcherConfig, load_config
from necrocode.dispatcher.config_loader import validate_config
from necrocode.dispatcher.models import AgentPool, PoolType

GOOD_POOLS = """\
agent_pools:
  local:
    type: local-process
    max_concurrency: 2
"""


def load_problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dispatcher.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


CASES = [
    # unknown key in the dispatcher section, with a did-you-mean
    ("dispatcher:\n  poll_intervall: 5\n", 2, "dispatcher.poll_intervall",
     "did you mean 'poll_interval'"),
    # unknown top-level section
    ("dispatchr:\n  poll_interval: 5\n", 1, "dispatchr", "did you mean 'dispatcher'"),
    # a setting written outside its section
    ("poll_interval: 5\n", 1, "poll_interval", "move it under 'dispatcher:'"),
    # wrong type: says what was expected and what was given
    ("dispatcher:\n  max_global_concurrency: ten\n", 2, "dispatcher.max_global_concurrency",
     "expected an integer, got the string 'ten'"),
    ("dispatcher:\n  heartbeat_timeout: [60]\n", 2, "dispatcher.heartbeat_timeout",
     "expected a number, got a list"),
    ("dispatcher:\n  api_enabled: 1\n", 2, "dispatcher.api_enabled",
     "expected true or false, got the integer 1"),
    ("dispatcher:\n  non_retryable_exit_codes: [1, x]\n", 2,
     "dispatcher.non_retryable_exit_codes", "expected a list of integers"),
    # zero and negative limits
    ("dispatcher:\n  max_global_concurrency: 0\n", 2, "dispatcher.max_global_concurrency",
     "must be >= 1, got 0"),
    ("dispatcher:\n  poll_interval: 0\n", 2, "dispatcher.poll_interval", "must be > 0, got 0"),
    ("dispatcher:\n  heartbeat_timeout: -5\n", 2, "dispatcher.heartbeat_timeout",
     "must be > 0, got -5"),
    ("dispatcher:\n  retry_max_attempts: 0\n", 2, "dispatcher.retry_max_attempts",
     "must be >= 1, got 0"),
    ("dispatcher:\n  retry_jitter: 2\n", 2, "dispatcher.retry_jitter", "must be <= 1, got 2"),
    ("dispatcher:\n  api_port: 70000\n", 2, "dispatcher.api_port", "must be <= 65535"),
    ("dispatcher:\n  fair_share_weights: {a: 0}\n", 2, "dispatcher.fair_share_weights.a",
     "must be > 0"),
    # heartbeat interval must be shorter than the timeout
    ("dispatcher:\n  heartbeat_timeout: 30\n  heartbeat_interval: 30\n", 3,
     "dispatcher.heartbeat_interval", "must be shorter than heartbeat_timeout"),
    # bad policy name lists the valid ones
    ("dispatcher:\n  scheduling_policy: round-robin\n", 2, "dispatcher.scheduling_policy",
     "valid policies: fifo, priority, skill-based, fair-share"),
    ("dispatcher:\n  scheduling_policy: priorty\n", 2, "dispatcher.scheduling_policy",
     "did you mean 'priority'"),
    # pools
    (GOOD_POOLS + "    max_concurency: 3\n", 5, "agent_pools.local.max_concurency",
     "did you mean 'max_concurrency'"),
    (GOOD_POOLS.replace("2", "0"), 4, "agent_pools.local.max_concurrency", "must be >= 1"),
    (GOOD_POOLS.replace("2", "-2"), 4, "agent_pools.local.max_concurrency", "got -2"),
    (GOOD_POOLS.replace("2", "two"), 4, "agent_pools.local.max_concurrency",
     "expected an integer from 1 to 100000, got the string 'two'"),
    (GOOD_POOLS + "    cpu_quota: 0\n", 5, "agent_pools.local.cpu_quota", "must be > 0"),
    (GOOD_POOLS + "    memory_quota: -1\n", 5, "agent_pools.local.memory_quota", "must be > 0"),
    (GOOD_POOLS + "    memory_quota: 1.5\n", 5, "agent_pools.local.memory_quota",
     "expected an integer > 0 and <= 1099511627776 MB, got 1.5"),
    (GOOD_POOLS + "    enabled: yes please\n", 5, "agent_pools.local.enabled",
     "expected true or false"),
    (GOOD_POOLS + "    agent_command: python agent.py\n", 5, "agent_pools.local.agent_command",
     "expected a non-empty list of strings"),
    (GOOD_POOLS.replace("local-process", "lokal"), 3, "agent_pools.local.type",
     "unknown pool type 'lokal'"),
    ("agent_pools:\n  local: 4\n", 2, "agent_pools.local", "expected a pool definition"),
    ("agent_pools:\n  - local\n", 1, "agent_pools", "expected a mapping, got a list"),
    ("agent_pools:\n  k8s:\n    type: kubernetes\n    max_concurrency: 1\n", 2,
     "agent_pools.k8s.config.namespace", "needs config.namespace"),
    ("agent_pools:\n  k8s:\n    type: kubernetes\n    config:\n      job_template: j.yaml\n", 4,
     "agent_pools.k8s.config.namespace", "needs config.namespace"),
    ("agent_pools:\n  d:\n    type: docker\n    config: {mount_repo_pool: true}\n", 4,
     "agent_pools.d.config.image", "needs config.image"),
    # liveness is a closed set; a typo must not fall back to the default silently
    (GOOD_POOLS + "    config:\n      liveness: proces\n", 6, "agent_pools.local.config.liveness",
     "expected 'process' or 'log'"),
    # skill mapping
    (GOOD_POOLS + "skill_mapping:\n  backend: [docker]\n", 6, "skill_mapping.backend[0]",
     "undefined pool 'docker'"),
    (GOOD_POOLS + "skill_mapping:\n  default: [locl]\n", 6, "skill_mapping.default[0]",
     "did you mean 'local'"),
    (GOOD_POOLS + "skill_mapping:\n  default: local\n", 6, "skill_mapping.default",
     "expected a list of pool names"),
    (GOOD_POOLS + "skill_mapping:\n  default: []\n", 6, "skill_mapping.default",
     "empty list of pools"),
    # ui
    ("ui:\n  refresh_interval: 0\n", 2, "ui.refresh_interval", "must be > 0"),
    ("ui:\n  keymap: [p]\n", 2, "ui.keymap", "expected a mapping of binding id to keys"),
    ("ui:\n  theme: dark\n", 2, "ui.theme", "valid keys: refresh_interval, keymap"),
    # a section that is not a mapping; duplicate keys
    ("dispatcher: 5\n", 1, "dispatcher", "expected a mapping, got the integer 5"),
    ("dispatcher:\n  poll_interval: 5\n  poll_interval: 6\n", 3, "dispatcher.poll_interval",
     "key given twice"),
]


@pytest.mark.parametrize(("text", "line", "key", "message"), CASES)
def test_each_problem_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    problems = load_problems(tmp_path, text)
    expected_prefix = f"{tmp_path / 'dispatcher.yaml'}:{line}: {key}: "
    matching = [p for p in problems if p.startswith(expected_prefix)]
    assert matching, f"no problem starts with {expected_prefix!r}: {problems}"
    assert any(message in p for p in matching), problems


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    problems = load_problems(tmp_path, """\
        dispatcher:
          poll_intervall: 5
          scheduling_policy: nope
          max_global_concurrency: 0
        agent_pools:
          local:
            type: local-process
            max_concurrency: -1
          k8s:
            type: kubernetes
        skill_mapping:
          backend: [dockr]
        """)
    assert len(problems) == 6
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines)


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    problems = load_problems(tmp_path, "dispatcher:\n  poll_interval: 5\n bad: [\n")
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'dispatcher.yaml'}:")
    assert "YAML syntax error (column" in problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml: config file not found" in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a file"):
        load_config(tmp_path)


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    problems = load_problems(tmp_path, "- a\n- b\n")
    assert problems == [f"{tmp_path / 'dispatcher.yaml'}:1: expected a mapping of sections, got "
                        "a list (the file has the sections dispatcher, agent_pools, "
                        "skill_mapping, ui, work, ha, notify)"]


def test_validate_config_built_in_code() -> None:
    config = DispatcherConfig(max_global_concurrency=0, heartbeat_interval=100)
    config.agent_pools.append(AgentPool(name="d", type=PoolType.DOCKER, max_concurrency=0))
    config.agent_pools.append(AgentPool(name="d", max_concurrency=1))
    config.skill_mapping = {"default": ["x"]}
    problems = {p.key: p for p in validate_config(config)}
    assert set(problems) == {
        "dispatcher.max_global_concurrency", "dispatcher.heartbeat_interval",
        "agent_pools.d", "agent_pools.d.max_concurrency", "agent_pools.d.config.image",
        "skill_mapping.default[0]",
    }
    assert all(p.location == "DispatcherConfig" for p in problems.values())
    assert validate_config(DispatcherConfig()) == []
