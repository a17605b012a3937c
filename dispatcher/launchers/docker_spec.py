"""Pure parts of the Docker launcher: pool settings, names, labels, limits and the container spec.

Nothing here talks to a Docker engine, so it is unit-tested without one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import RunnerLaunchError
from ..models import AgentPool, Slot, Task
from .base import LaunchEnvironment, agent_argv, container_agent, runner_env

#: Labels put on every container this launcher starts (reconcile finds them by these).
LABEL_MANAGED = "necrocode.managed"
LABEL_RUNNER = "necrocode.runner-id"
LABEL_TASK = "necrocode.task"
LABEL_TASKSET = "necrocode.taskset"
LABEL_POOL = "necrocode.pool"
LABEL_ATTEMPT = "necrocode.attempt"
LABEL_SLOT = "necrocode.slot-id"
LABEL_SLOT_PATH = "necrocode.slot-path"
LABEL_ATTEMPT_DIR = "necrocode.attempt-dir"

WORKSPACE = "/workspace"  # where the slot is mounted inside the container
ATTEMPT_MOUNT = "/necrocode/attempt"  # where the attempt directory is mounted
WRAPPER_MODULE = "necrocode.dispatcher.agent_runner"
DEFAULT_IMAGE = "necrocode/runner:latest"

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]+")


def container_name(runner_id: str, prefix: str = "necrocode") -> str:
    """A valid Docker container name for a runner: ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``, ≤ 128 chars."""
    raw = f"{prefix}-{runner_id}" if prefix else runner_id
    name = re.sub(r"-{2,}", "-", _NAME_BAD.sub("-", raw)).strip("-_.")
    if not name or not name[0].isalnum():
        name = "n" + name
    return name[:128]


@dataclass(frozen=True)
class MountSpec:
    """One bind mount ``host:container[:ro|rw]``."""

    host: str
    container: str
    read_only: bool = False

    def to_docker(self) -> str:
        return f"{self.host}:{self.container}:{'ro' if self.read_only else 'rw'}"


def parse_mount(spec: str, pool_name: str = "") -> MountSpec:
    """Parse ``host:container[:ro]``; raise RunnerLaunchError naming the pool and the fix."""
    parts = str(spec).split(":")
    mode = "rw"
    if len(parts) == 3:
        host, container, mode = parts
    elif len(parts) == 2:
        host, container = parts
    else:
        host = container = ""
    if not host or not container or mode not in ("ro", "rw") or not container.startswith("/"):
        raise RunnerLaunchError(
            f"agent_pools.{pool_name}.config.mounts: bad mount {spec!r}; "
            "write it as 'host_path:/container/path' or 'host_path:/container/path:ro'",
            pool=pool_name,
            retryable=False,
        )
    return MountSpec(host=host, container=container, read_only=mode == "ro")


@dataclass(frozen=True)
class DockerPoolSettings:
    """The ``config:`` keys of a docker pool, with defaults."""

    image: str = DEFAULT_IMAGE
    # network name or mode ("host", "bridge", "none", a user network); None: "host" when the
    # runners must reach a Dispatcher API on the loopback address, else Docker's default
    network: str | None = None
    mounts: tuple[MountSpec, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    mount_repo_pool: bool = False  # bind-mount the slot at /workspace
    mount_attempt_dir: bool = True  # bind-mount the attempt dir (wrapper writes exit_status.json)
    use_wrapper: bool = True  # run the agent through necrocode.dispatcher.agent_runner
    python: str = "python3"  # interpreter inside the image that runs the wrapper
    workdir: str | None = None  # working directory; default /workspace when the slot is mounted
    user: str | None = None
    api_url: str | None = None  # the Dispatcher API as seen from inside the container
    keep_containers: bool = False  # keep exited containers (debugging); default remove
    pull: bool = True  # pull the image when it is missing locally
    name_prefix: str = "necrocode"

    @classmethod
    def from_pool(cls, pool: AgentPool) -> DockerPoolSettings:
        cfg = dict(pool.config or {})
        mounts_raw = cfg.get("mounts") or []
        if isinstance(mounts_raw, str):
            mounts_raw = [mounts_raw]
        if not isinstance(mounts_raw, list | tuple):
            raise RunnerLaunchError(
                f"agent_pools.{pool.name}.config.mounts must be a list of "
                "'host:container[:ro]' strings",
                pool=pool.name,
                retryable=False,
            )
        env_raw = cfg.get("env") or {}
        if isinstance(env_raw, list | tuple):  # ["KEY=value", ...]
            env_raw = dict(str(item).partition("=")[::2] for item in env_raw)
        if not isinstance(env_raw, dict):
            raise RunnerLaunchError(
                f"agent_pools.{pool.name}.config.env must be a mapping of names to values",
                pool=pool.name,
                retryable=False,
            )
        return cls(
            image=str(cfg.get("image") or DEFAULT_IMAGE),
            network=cfg.get("network") or None,
            mounts=tuple(parse_mount(m, pool.name) for m in mounts_raw),
            env={str(k): str(v) for k, v in env_raw.items()},
            mount_repo_pool=_flag(cfg.get("mount_repo_pool"), False),
            mount_attempt_dir=_flag(cfg.get("mount_attempt_dir"), True),
            use_wrapper=_flag(cfg.get("use_wrapper"), True),
            python=str(cfg.get("python") or "python3"),
            workdir=cfg.get("workdir") or None,
            user=str(cfg["user"]) if cfg.get("user") not in (None, "") else None,
            api_url=cfg.get("api_url") or None,
            keep_containers=_flag(cfg.get("keep_containers"), False),
            pull=_flag(cfg.get("pull"), True),
            name_prefix=str(cfg.get("name_prefix", "necrocode")),
        )


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def limits_for(task: Task, pool: AgentPool) -> tuple[float | None, int | None]:
    """(cpus, memory MB) for one runner: the task's resources, capped by the pool's quotas.

    A pool without quotas still gives each container the task's own request as its limit, so a
    task that asks for 256 MB cannot take the host's memory.
    """
    cpu: float | None = task.resources.cpu if task.resources.cpu > 0 else None
    mem: int | None = task.resources.memory_mb if task.resources.memory_mb > 0 else None
    if pool.cpu_quota is not None and pool.cpu_quota > 0:
        cpu = min(cpu, pool.cpu_quota) if cpu is not None else pool.cpu_quota
    if pool.memory_quota is not None and pool.memory_quota > 0:
        mem = min(mem, pool.memory_quota) if mem is not None else pool.memory_quota
    return cpu, mem


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one runner's container (kwargs of ``containers.create``)."""

    name: str
    image: str
    command: list[str]
    environment: dict[str, str]
    labels: dict[str, str]
    volumes: list[str]
    working_dir: str | None
    network_mode: str | None
    nano_cpus: int | None
    mem_limit: int | None  # bytes
    user: str | None = None

    def create_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": self.command,
            "name": self.name,
            "environment": self.environment,
            "labels": self.labels,
            "volumes": self.volumes,
            "detach": True,
        }
        if self.working_dir:
            kwargs["working_dir"] = self.working_dir
        if self.network_mode:
            kwargs["network_mode"] = self.network_mode
        if self.nano_cpus:
            kwargs["nano_cpus"] = self.nano_cpus
        if self.mem_limit:
            kwargs["mem_limit"] = self.mem_limit
            kwargs["memswap_limit"] = self.mem_limit  # no swap: the limit is the limit
        if self.user:
            kwargs["user"] = self.user
        return kwargs


def build_container_spec(
    task: Task,
    slot: Slot,
    pool: AgentPool,
    runner_id: str,
    attempt: int,
    env: LaunchEnvironment,
    attempt_path: Path,
    settings: DockerPoolSettings | None = None,
) -> ContainerSpec:
    """The container of one runner: command, env, labels, mounts and limits."""
    settings = settings or DockerPoolSettings.from_pool(pool)
    volumes: list[str] = []
    slot_path = slot.slot_path
    if settings.mount_repo_pool:
        volumes.append(MountSpec(str(Path(slot.slot_path).resolve()), WORKSPACE).to_docker())
        slot_path = WORKSPACE
    plan, agent_env = container_agent(
        task, slot, pool, attempt, env, slot_path=slot_path, use_wrapper=settings.use_wrapper,
        agent_dir=ATTEMPT_MOUNT if settings.mount_attempt_dir else "/tmp/necrocode-attempt",
        attempt_path=attempt_path)
    argv = agent_argv(task, slot, pool, runner_id, attempt, plan=plan)
    if settings.use_wrapper:
        command = [settings.python, "-m", WRAPPER_MODULE, "--", *argv]
    else:
        command = argv
    for mount in settings.mounts:
        volumes.append(mount.to_docker())
    environment = dict(settings.env)
    contract = runner_env(task, slot, pool, runner_id, attempt, env, slot_path=slot_path)
    if settings.api_url and env.api_url:
        contract["NECROCODE_API_URL"] = settings.api_url
    environment.update(contract)
    environment.update(agent_env)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    if settings.mount_attempt_dir:
        volumes.append(MountSpec(str(attempt_path.resolve()), ATTEMPT_MOUNT).to_docker())
        environment["NECROCODE_ATTEMPT_DIR"] = ATTEMPT_MOUNT
    cpus, mem_mb = limits_for(task, pool)
    labels = {
        LABEL_MANAGED: "true",
        LABEL_RUNNER: runner_id,
        LABEL_TASK: task.key,
        LABEL_TASKSET: task.taskset,
        LABEL_POOL: pool.name,
        LABEL_ATTEMPT: str(attempt),
        LABEL_SLOT: slot.slot_id,
        LABEL_SLOT_PATH: slot.slot_path,
        LABEL_ATTEMPT_DIR: str(attempt_path),
    }
    workdir = settings.workdir or (WORKSPACE if settings.mount_repo_pool else None)
    return ContainerSpec(
        name=container_name(runner_id, settings.name_prefix),
        image=settings.image,
        command=command,
        environment=environment,
        labels=labels,
        volumes=volumes,
        working_dir=workdir,
        network_mode=settings.network or _default_network(environment.get("NECROCODE_API_URL")),
        nano_cpus=int(math.floor(cpus * 1e9)) if cpus else None,
        mem_limit=mem_mb * 1024 * 1024 if mem_mb else None,
        user=settings.user,
    )


def _default_network(api_url: str | None) -> str | None:
    """Host networking when the API listens on loopback: nothing else can reach it."""
    if not api_url:
        return None
    host = urlsplit(api_url).hostname or ""
    return "host" if host in ("127.0.0.1", "localhost", "::1") else None


def exit_reason(state: dict[str, Any], mem_limit_mb: int | None = None) -> tuple[int | None, str]:
    """(exit code, reason) from a container's ``State``: "exited", "signal 9", "OOMKilled …"."""
    code = state.get("ExitCode")
    exit_code = int(code) if code is not None else None
    if state.get("OOMKilled"):
        limit = f" (memory limit {mem_limit_mb} MB)" if mem_limit_mb else ""
        return exit_code, f"OOMKilled: the container ran out of memory{limit}"
    if state.get("Error"):
        return exit_code, f"error: {state['Error']}"
    if exit_code is not None and exit_code > 128:
        return exit_code, f"signal {exit_code - 128}"
    return exit_code, "exited"
