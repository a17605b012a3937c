"""Coding-agent presets in docker and kubernetes runner specs (the wrapper writes the files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.docker_spec import ATTEMPT_MOUNT, build_container_spec
from necrocode.dispatcher.launchers.kubernetes_spec import (
    DEFAULT_TEMPLATE,
    KubernetesPoolSettings,
    build_job,
)
from necrocode.dispatcher.models import AgentPool, PoolType, Slot, Task

OPTIONS = {"model": "gpt-5-codex", "base_url": "http://gw:8000/v1", "api_key_env": "GW_KEY"}


def env(tmp_path: Path) -> LaunchEnvironment:
    return LaunchEnvironment(api_url="http://127.0.0.1:9000", token_for=lambda r: "tok",
                             runs_dir=tmp_path)


def test_docker_pool_runs_a_preset_through_the_wrapper(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_KEY", "key-value")
    pool = AgentPool("d", PoolType.DOCKER, config={"image": "runner", "mount_repo_pool": True},
                     agent="codex",
                     agent_options=OPTIONS)
    task = Task(id="1", taskset="ts", title="Fix it", max_turns=40)
    spec = build_container_spec(task, Slot("s", str(tmp_path / "wt"), None, "feature/x"), pool,
                                "r-1", 1, env(tmp_path), tmp_path / "att")
    assert spec.command[1:4] == ["-m", "necrocode.dispatcher.agent_runner", "--"]
    assert spec.command[5:8] == ["exec", "--json", "--skip-git-repo-check"]
    e = spec.environment
    assert e["NECROCODE_AGENT"] == "codex" and e["CODEX_HOME"] == f"{ATTEMPT_MOUNT}/codex-home"
    files = json.loads(e["NECROCODE_AGENT_FILES"])
    assert 'env_key = "GW_KEY"' in files[f"{ATTEMPT_MOUNT}/codex-home/config.toml"]
    assert "/workspace" in files[f"{ATTEMPT_MOUNT}/prompt.md"]  # the slot as the agent sees it
    assert json.loads(e["NECROCODE_AGENT_BUDGET"])["max_turns"] == 40
    assert e["GW_KEY"] == "key-value"  # a local engine: like a local process's environment
    assert (tmp_path / "att" / "prompt.md").read_text().startswith("# Task ts/1: Fix it")


def test_kubernetes_job_names_the_key_variable_never_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_KEY", "key-value")
    pool = AgentPool("k", PoolType.KUBERNETES, config={"namespace": "n"}, agent="claude-code",
                     agent_options={**OPTIONS, "base_url": "http://gw:8000"})
    job = build_job(DEFAULT_TEMPLATE, Task(id="1", taskset="ts", title="T"),
                    Slot("s", "/x", None, "b"), pool, "r-1", 1, env(tmp_path), tmp_path / "a",
                    KubernetesPoolSettings.from_pool(pool))
    container = job["spec"]["template"]["spec"]["containers"][0]
    env_ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert "key-value" not in json.dumps(job)
    assert json.loads(env_["NECROCODE_AGENT_SECRET_REFS"]) == {"ANTHROPIC_API_KEY": "GW_KEY"}
    assert env_["ANTHROPIC_BASE_URL"] == "http://gw:8000"
    assert "--output-format" in container["command"]


def test_a_preset_without_the_wrapper_is_refused(tmp_path: Path) -> None:
    pool = AgentPool("d", PoolType.DOCKER, config={"image": "i", "use_wrapper": False},
                     agent="gemini")
    with pytest.raises(RunnerLaunchError, match="needs the runner wrapper"):
        build_container_spec(Task(id="1"), Slot("s", str(tmp_path)), pool, "r", 1,
                             env(tmp_path), tmp_path / "att")
