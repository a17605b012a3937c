"""Pure parts of the Docker launcher: names, mounts, limits, the container spec, exit reasons."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.docker_spec import (
    DockerPoolSettings,
    MountSpec,
    build_container_spec,
    container_name,
    exit_reason,
    limits_for,
    parse_mount,
)
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, Slot, Task

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@pytest.mark.parametrize(
    ("runner_id", "expected"),
    [
        ("r-ts-1-1-a1-abc123", "necrocode-r-ts-1-1-a1-abc123"),  # already safe
        ("r-my set/1.2-a1", "necrocode-r-my-set-1.2-a1"),  # spaces and slashes
        ("r-日本語-a1", "necrocode-r-a1"),  # non-ASCII collapses
        ("x" * 300, "necrocode-" + "x" * 118),  # capped at 128
    ],
)
def test_container_name_is_valid(runner_id: str, expected: str) -> None:
    name = container_name(runner_id)
    assert name == expected
    assert NAME_RE.match(name) and len(name) <= 128


def test_container_name_without_prefix_starts_alnum() -> None:
    assert NAME_RE.match(container_name("--_weird", prefix=""))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/data:/data", MountSpec("/data", "/data", False)),  # default read-write
        ("/data:/in:ro", MountSpec("/data", "/in", True)),  # read-only
        ("cache:/cache:rw", MountSpec("cache", "/cache", False)),  # named volume
    ],
)
def test_parse_mount(spec: str, expected: MountSpec) -> None:
    assert parse_mount(spec) == expected


@pytest.mark.parametrize("spec", ["/only", "/a:relative", "/a:/b:rx", "a:b:c:d", ":/x"])
def test_parse_mount_refuses_bad_specs_with_the_fix(spec: str) -> None:
    with pytest.raises(RunnerLaunchError, match=r"agent_pools\.p\.config\.mounts.*host_path"):
        parse_mount(spec, "p")


@pytest.mark.parametrize(
    ("resources", "cpu_quota", "memory_quota", "expected"),
    [
        (Resources(1.0, 512), None, None, (1.0, 512)),  # no quotas: the task's request
        (Resources(4.0, 8192), 2.0, 1024, (2.0, 1024)),  # capped by the pool's quotas
        (Resources(0.5, 256), 4.0, 8192, (0.5, 256)),  # below quotas: unchanged
        (Resources(0, 0), 2.0, None, (2.0, None)),  # no request: the quota where there is one
    ],
)
def test_limits_for(
    resources: Resources, cpu_quota: float | None, memory_quota: int | None,
    expected: tuple[float | None, int | None],
) -> None:
    pool = AgentPool(name="d", type=PoolType.DOCKER, cpu_quota=cpu_quota,
                     memory_quota=memory_quota)
    assert limits_for(Task(id="1", resources=resources), pool) == expected


def env(tmp_path: Path, api_url: str | None = "http://127.0.0.1:9000") -> LaunchEnvironment:
    return LaunchEnvironment(api_url=api_url, token_for=lambda rid: f"tok-{rid}",
                             runs_dir=tmp_path)


def test_spec_with_wrapper_mounts_env_and_limits(
    tmp_path: Path, task_factory: Callable[..., Task]
) -> None:
    pool = AgentPool(
        name="docker", type=PoolType.DOCKER, cpu_quota=4, memory_quota=8192,
        config={"image": "necrocode/runner:latest", "mount_repo_pool": True, "network": "host",
                "mounts": ["/cache:/cache:ro"], "env": {"FOO": "bar", "RUNNER_ID": "spoof"},
                "api_url": "http://dispatcher:8080"},
    )
    task = task_factory(id="2.1", taskset="web", command=["agent", "--go"],
                        resources=Resources(cpu=1.5, memory_mb=1024))
    slot = Slot(slot_id="web-0", slot_path=str(tmp_path / "slot"), branch="b")
    spec = build_container_spec(task, slot, pool, "r-1", 3, env(tmp_path), tmp_path / "att")
    assert spec.command == ["python3", "-m", "necrocode.dispatcher.agent_runner", "--",
                            "agent", "--go"]
    assert spec.image == "necrocode/runner:latest" and spec.network_mode == "host"
    assert spec.nano_cpus == 1_500_000_000 and spec.mem_limit == 1024 * 1024 * 1024
    assert spec.volumes == [f"{(tmp_path / 'slot').resolve()}:/workspace:rw", "/cache:/cache:ro",
                            f"{(tmp_path / 'att').resolve()}:/necrocode/attempt:rw"]
    assert spec.working_dir == "/workspace"
    e = spec.environment
    assert e["FOO"] == "bar" and e["RUNNER_ID"] == "r-1"  # the contract wins over pool env
    assert e["NECROCODE_API_URL"] == "http://dispatcher:8080"
    assert e["NECROCODE_RUNNER_TOKEN"] == "tok-r-1"
    assert e["NECROCODE_ATTEMPT_DIR"] == "/necrocode/attempt"
    assert json.loads(e["NECROCODE_TASK_CONTEXT"])["slot_path"] == "/workspace"
    assert spec.labels == {
        "necrocode.managed": "true", "necrocode.runner-id": "r-1", "necrocode.task": "web/2.1",
        "necrocode.taskset": "web", "necrocode.pool": "docker", "necrocode.attempt": "3",
        "necrocode.slot-id": "web-0", "necrocode.slot-path": slot.slot_path,
        "necrocode.attempt-dir": str(tmp_path / "att"),
    }
    kwargs = spec.create_kwargs()
    assert kwargs["memswap_limit"] == kwargs["mem_limit"]  # no swap beyond the limit
    assert kwargs["detach"] is True and kwargs["name"] == "necrocode-r-1"


def test_spec_without_wrapper_or_mounts(tmp_path: Path) -> None:
    pool = AgentPool(name="d", type=PoolType.DOCKER, agent_command=["kiro", "{task_id}"],
                     config={"use_wrapper": "false", "mount_attempt_dir": False})
    slot = Slot(slot_id="s", slot_path="/host/slot")
    spec = build_container_spec(Task(id="7"), slot, pool, "r-2", 1, env(tmp_path, None),
                                tmp_path)
    assert spec.command == ["kiro", "7"]
    assert spec.volumes == [] and spec.working_dir is None and spec.network_mode is None
    assert "NECROCODE_API_URL" not in spec.environment
    assert spec.environment["NECROCODE_SLOT_PATH"] == "/host/slot"


@pytest.mark.parametrize(
    ("api_url", "config", "expected"),
    [
        ("http://127.0.0.1:8000", {}, "host"),  # loopback API: only host networking reaches it
        ("http://localhost:8000", {}, "host"),
        ("http://10.0.0.5:8000", {}, None),  # reachable address: Docker's default network
        (None, {}, None),  # no API at all
        ("http://127.0.0.1:8000", {"network": "agents"}, "agents"),  # the pool decides
        ("http://127.0.0.1:8000", {"api_url": "http://host.docker.internal:8000"}, None),
    ],
)
def test_default_network_follows_the_api_address(
    tmp_path: Path, api_url: str | None, config: dict[str, str], expected: str | None
) -> None:
    pool = AgentPool(name="d", type=PoolType.DOCKER, config=config)
    spec = build_container_spec(Task(id="1", command=["a"]), Slot("s", "/x"), pool, "r", 1,
                                env(tmp_path, api_url), tmp_path)
    assert spec.network_mode == expected


def test_settings_refuse_bad_types() -> None:
    bad_env = AgentPool(name="d", type=PoolType.DOCKER, config={"env": 5})
    with pytest.raises(RunnerLaunchError, match=r"agent_pools\.d\.config\.env"):
        DockerPoolSettings.from_pool(bad_env)
    bad_mounts = AgentPool(name="d", type=PoolType.DOCKER, config={"mounts": {"a": "b"}})
    with pytest.raises(RunnerLaunchError, match=r"agent_pools\.d\.config\.mounts"):
        DockerPoolSettings.from_pool(bad_mounts)
    listed = AgentPool(name="d", type=PoolType.DOCKER, config={"env": ["A=1", "B=x=y"]})
    assert DockerPoolSettings.from_pool(listed).env == {"A": "1", "B": "x=y"}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"ExitCode": 0}, (0, "exited")),  # success
        ({"ExitCode": 2}, (2, "exited")),  # plain failure
        ({"ExitCode": 143}, (143, "signal 15")),  # terminated
        ({"ExitCode": 137, "OOMKilled": True},
         (137, "OOMKilled: the container ran out of memory (memory limit 64 MB)")),
        ({"ExitCode": 127, "Error": "exec: no such file"}, (127, "error: exec: no such file")),
    ],
)
def test_exit_reason(state: dict[str, object], expected: tuple[int, str]) -> None:
    assert exit_reason(state, 64) == expected
