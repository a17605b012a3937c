"""The seed's configuration examples load unchanged; defaults; round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from necrocode.dispatcher import DispatcherConfig, load_config
from necrocode.dispatcher.config import config_from_dict
from necrocode.dispatcher.config_loader import (
    config_to_dict,
    default_config,
    dispatcher_keys,
    validate_config,
)
from necrocode.dispatcher.models import AgentPool, PoolType, SchedulingPolicy

ROOT = Path(__file__).resolve().parents[2]
SEED_YAML = ROOT / "config" / "dispatcher.yaml"
SEED_README = Path("/work/shared/seed/dispatcher-README.ja.md")


def test_seed_yaml_loads_with_every_value() -> None:
    config = load_config(SEED_YAML)
    assert config.poll_interval == 5
    assert config.scheduling_policy is SchedulingPolicy.PRIORITY
    assert config.max_global_concurrency == 10
    assert config.heartbeat_timeout == 60
    assert config.retry_max_attempts == 3
    assert config.retry_backoff_base == 2.0
    assert config.graceful_shutdown_timeout == 300
    pools = {p.name: p for p in config.agent_pools}
    assert list(pools) == ["local", "docker", "k8s"]
    local, docker, k8s = pools["local"], pools["docker"], pools["k8s"]
    assert (local.type, local.max_concurrency, local.enabled) == (PoolType.LOCAL_PROCESS, 2, True)
    assert local.cpu_quota is None and local.memory_quota is None
    assert docker.type is PoolType.DOCKER
    assert (docker.max_concurrency, docker.cpu_quota, docker.memory_quota) == (4, 4, 8192)
    assert docker.config == {"image": "necrocode/runner:latest", "mount_repo_pool": True}
    assert k8s.type is PoolType.KUBERNETES
    assert (k8s.max_concurrency, k8s.cpu_quota, k8s.memory_quota) == (10, 10, 20480)
    assert k8s.config["namespace"] == "necrocode-agents"
    # relative to the config file's folder, not to the current directory
    assert Path(k8s.config["job_template"]) == SEED_YAML.parent / "manifests" / "runner-job.yaml"
    assert config.skill_mapping == {
        "backend": ["docker", "k8s"],
        "frontend": ["docker", "k8s"],
        "database": ["docker"],
        "devops": ["k8s"],
        "default": ["local"],
    }
    # everything else keeps its default
    assert config.heartbeat_interval == DispatcherConfig().heartbeat_interval
    assert config.ui.refresh_interval == DispatcherConfig().ui.refresh_interval


@pytest.mark.skipif(not SEED_README.exists(),
                    reason="the seed design document (../shared/seed/) is not beside this checkout")
def test_shipped_yaml_is_the_seed_example_verbatim() -> None:
    text = SEED_README.read_text(encoding="utf-8")
    start = text.index("```yaml\n# config/dispatcher.yaml") + len("```yaml\n")
    assert SEED_YAML.read_text(encoding="utf-8") == text[start:text.index("```", start)]


def test_seed_programmatic_example_verbatim() -> None:
    # --- as written in the seed README ---
    config = DispatcherConfig(
        poll_interval=5,
        scheduling_policy=SchedulingPolicy.PRIORITY,
        max_global_concurrency=10,
        heartbeat_timeout=60,
        retry_max_attempts=3,
        retry_backoff_base=2.0
    )

    # Agent Poolを追加
    local_pool = AgentPool(
        name="local",
        type=PoolType.LOCAL_PROCESS,
        max_concurrency=2,
        enabled=True
    )
    config.agent_pools.append(local_pool)

    # スキルマッピングを設定
    config.skill_mapping = {
        "backend": ["docker", "k8s"],
        "frontend": ["docker", "k8s"],
        "default": ["local"]
    }
    # --- end of the seed's example ---
    assert config.get_pool("local") is local_pool
    problems = validate_config(config)
    # the seed's snippet maps skills to pools it never defines: validation says so, by key
    assert {p.key for p in problems} == {
        "skill_mapping.backend[0]", "skill_mapping.backend[1]",
        "skill_mapping.frontend[0]", "skill_mapping.frontend[1]",
    }
    assert all("undefined pool" in p.message for p in problems)


def test_quick_start_example() -> None:
    config = DispatcherConfig(
        poll_interval=5,
        scheduling_policy=SchedulingPolicy.PRIORITY,
        max_global_concurrency=10
    )
    assert validate_config(config) == []


def test_default_config_has_one_local_pool() -> None:
    config = default_config()
    assert [(p.name, p.type, p.max_concurrency) for p in config.agent_pools] == [
        ("local", PoolType.LOCAL_PROCESS, 4)
    ]
    assert config.skill_mapping == {"default": ["local"]}
    assert validate_config(config) == []


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    assert load_config(path) == DispatcherConfig()


def test_every_scalar_field_is_accepted_in_the_dispatcher_section() -> None:
    defaults = config_to_dict(DispatcherConfig())["dispatcher"]
    assert set(defaults) == set(dispatcher_keys())
    config = config_from_dict({"dispatcher": defaults})
    assert config == DispatcherConfig()


def test_round_trip_through_yaml() -> None:
    config = load_config(SEED_YAML)
    config.fair_share_weights = {"team-a": 2.0}
    config.ui.keymap = {"pause": "P"}
    config.agent_pools[0].agent_command = ["python", "agent.py", "{task_id}"]
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    assert config_from_dict(yaml.safe_load(text)) == config


def test_policy_strings_and_added_sections() -> None:
    config = config_from_dict({
        "dispatcher": {"scheduling_policy": "fair-share", "fair_share_weights": {"a": 3}},
        "agent_pools": {"p": {"type": "local-process", "max_concurrency": 1,
                              "agent_command": ["echo", "{task_id}"]}},
        "skill_mapping": {"default": ["p"]},
        "ui": {"refresh_interval": 1, "keymap": {"pause": "P"}},
    })
    assert config.scheduling_policy is SchedulingPolicy.FAIR_SHARE
    assert config.fair_share_weights == {"a": 3}
    assert config.agent_pools[0].agent_command == ["echo", "{task_id}"]
    assert config.ui.keymap == {"pause": "P"}


def test_absolute_job_template_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "agent_pools:\n"
        "  k:\n"
        "    type: kubernetes\n"
        "    max_concurrency: 1\n"
        "    config: {namespace: ns, job_template: /etc/job.yaml}\n"
    )
    assert load_config(path).agent_pools[0].config["job_template"] == "/etc/job.yaml"


def test_custom_policy_registered_by_name_loads() -> None:
    from necrocode.dispatcher.policies import Policy, register_policy

    class Newest(Policy):
        name = "newest-first"

    register_policy("newest-first", Newest)
    config = config_from_dict({"dispatcher": {"scheduling_policy": "newest-first"}})
    assert config.scheduling_policy == "newest-first"
    assert validate_config(config) == []


def test_reference_documents_every_key() -> None:
    from necrocode.dispatcher.config_reference import MEANINGS, config_reference

    docs = config_reference()
    keys = [d.key for d in docs]
    assert [k.removeprefix("dispatcher.") for k in keys if k.startswith("dispatcher.")] == \
        dispatcher_keys()
    assert all(d.meaning for d in docs), [d.key for d in docs if not d.meaning]
    assert set(MEANINGS) == set(keys)  # no stale entries either
    by_key = {d.key: d for d in docs}
    assert by_key["dispatcher.poll_interval"].default == "5"
    assert by_key["dispatcher.scheduling_policy"].default == "priority"
    assert by_key["agent_pools.NAME.type"].default == "local-process"


def test_missing_job_template_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("agent_pools:\n  k:\n    type: kubernetes\n"
                    "    config: {namespace: ns, job_template: jobs/job.yaml}\n")
    with caplog.at_level("WARNING"):
        config = load_config(path)
    assert config.agent_pools[0].config["job_template"] == str(tmp_path / "jobs" / "job.yaml")
    assert f"{path}:4: agent_pools.k.config.job_template" in caplog.text
    assert "does not exist" in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        "a: 010\nb: 0\nc: -3\nd: 1.10\ne: [1, 'x', null, true, 2.5]\n",  # scalars as PyYAML
        "base: &b {k: 1}\nx:\n  <<: *b\n  j: 2\n",  # merge keys (the PyYAML path)
        "x: &a {y: 1}\nz: *a\n",  # aliases
        "t: !!str 5\nu: !!float 1\n",  # explicit tags
    ],
)
def test_fast_yaml_walk_builds_what_pyyaml_builds(text: str) -> None:
    import yaml
    from necrocode.dispatcher.yaml_source import parse_yaml

    assert parse_yaml(text).value == yaml.safe_load(text)


def test_recursive_alias_is_refused_not_a_crash() -> None:
    from necrocode.dispatcher.yaml_source import YamlLimitError, parse_yaml

    with pytest.raises(YamlLimitError, match="recursive alias") as info:
        parse_yaml("a: &x [1, *x]\n")
    assert info.value.line == 1
