"""The RunnerLauncher contract shared by the local-process, Docker and Kubernetes launchers.

The engine thread calls every method here. Launchers may run their own watcher threads; those only
call ``on_exit(runner_id)`` to wake the engine, which then calls :meth:`RunnerLauncher.poll`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent_runner.logcap import DEFAULT_MAX_BYTES
from ..agents.base import PROMPT_FILE, AgentInvocation, AgentOptionError
from ..agents.launch import DependencyLookup, container_env, plan_attempt, resolve_agent
from ..models import AgentPool, Runner, Slot, Task
from ..names import path_component

#: File of an attempt directory holding how the run ended (and which runner wrote it).
EXIT_STATUS_FILE = "exit_status.json"
#: File of an attempt directory describing the runner (local launcher).
RUNNER_RECORD_FILE = "runner.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerExit:
    """How a runner ended, as its platform reports it."""

    exit_code: int | None  # None: unknown (killed, lost, OOM without code)
    reason: str = ""  # "exited", "signal 9", "OOMKilled", "DeadlineExceeded", …
    finished_at: float | None = None
    oom_killed: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class StopResult:
    """What a launcher knows after :meth:`RunnerLauncher.stop`.

    ``confirmed`` means the runner is known gone: its whole process tree, its container or its
    Job (and pods). Only a confirmed stop lets the engine release the runner's slot and
    capacity and offer its task again; an unconfirmed one is tried again with backoff while
    everything stays held, and ``reason`` is shown ("stopping: not confirmed: …").
    """

    confirmed: bool
    exit: RunnerExit | None = None  # how it ended, when the platform said
    reason: str = ""  # unconfirmed: why not (the platform's error, what still runs)

    @classmethod
    def gone(cls, exit: RunnerExit | None = None) -> StopResult:
        """The runner is known gone (``exit``: how it ended, when known)."""
        return cls(True, exit, exit.reason if exit is not None else "")

    @classmethod
    def unconfirmed(cls, reason: str) -> StopResult:
        """The stop may not have worked: the runner may still run."""
        return cls(False, None, reason)


@dataclass(frozen=True)
class LaunchEnvironment:
    """What every launcher needs from the engine to start runners."""

    api_url: str | None  # the Dispatcher's HTTP API, for heartbeats and completion
    token_for: Callable[[str], str]  # runner id -> its token
    runs_dir: Path  # attempt directories live under here
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 60.0
    stop_grace: float = 10.0
    on_exit: Callable[[str], None] = field(default=lambda runner_id: None)
    #: Coding agents: the config's agent_prompt_template (None: the default) and the results
    #: of a task's dependencies for its prompt (the engine supplies them; called on the
    #: launching thread).
    prompt_template: str | None = None
    dependency_results: DependencyLookup | None = None
    #: Cap of one attempt's output.log in bytes, tail kept (0: none); a pool's
    #: ``config.output_log_max_bytes`` overrides it.
    log_max_bytes: int = DEFAULT_MAX_BYTES


def new_runner_id(task: Task, attempt: int) -> str:
    """A unique, readable runner id: ``r-<taskset>-<id>-a<attempt>-<random>``."""
    text = f"{task.taskset}-{task.id}"
    safe = "".join(c if c.isascii() and c.isalnum() else "-" for c in text).strip("-")
    return f"r-{safe[:40]}-a{attempt}-{secrets.token_hex(3)}"


def attempt_dir(runs_dir: Path, task: Task, attempt: int) -> Path:
    """Directory of one attempt: log file, exit status, runner record.

    Taskset and id are encoded so that different tasks never share a directory
    (:func:`~..names.path_component`: ``a b``, ``a_b``, ``a:b`` and ``a;b`` are four folders).
    Names of only ``A-Z a-z 0-9 _ . -`` keep the folder names of earlier versions.
    """
    return (runs_dir / path_component(task.taskset) / path_component(task.id)
            / f"attempt-{attempt}")


def read_exit_record(adir: str | Path, runner_id: str) -> dict[str, Any] | None:
    """The exit status in an attempt directory, only if runner ``runner_id`` wrote it.

    A status naming another runner (another run of the same attempt number, or a look-alike
    task of an older version sharing the folder) is None, as is an empty or partial file. A
    status without a runner id (written before runner ids were recorded) counts only when
    the folder's ``runner.json`` names ``runner_id``.
    """
    base = Path(adir)
    data = _read_json(base / EXIT_STATUS_FILE)
    if data is None:
        return None
    if "exit_code" not in data and "returncode" in data:
        data["exit_code"] = data["returncode"]
    owner = data.get("runner_id")
    if owner is None:
        record = _read_json(base / RUNNER_RECORD_FILE)
        owner = record.get("runner_id") if record else None
    return data if owner == runner_id else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def task_context(task: Task, slot: Slot, runner_id: str, attempt: int) -> dict[str, Any]:
    """The JSON given to the agent as NECROCODE_TASK_CONTEXT / TASK_CONTEXT."""
    return {
        "task": task.key,
        "task_id": task.id,
        "taskset": task.taskset,
        "title": task.title,
        "description": task.description,
        "skill": task.required_skill,
        "priority": task.priority,
        "tenant": task.tenant,
        "attempt": attempt,
        "runner_id": runner_id,
        "slot_id": slot.slot_id,
        "slot_path": slot.slot_path,
        "branch": slot.branch,
        "repo": slot.repo,
        "base": slot.base,  # the commit its work starts from (dependencies' work merged)
        "merged_dependencies": list(slot.merged),
        "gate_failed": task.gate_failed,  # the land check's output when it was sent back
        "timeout": task.timeout,
        "resources": task.resources.to_dict(),
        "metadata": task.metadata,
    }


def agent_plan(
    task: Task,
    slot: Slot,
    pool: AgentPool,
    attempt: int,
    env: LaunchEnvironment,
    *,
    agent_dir: str,
    environ: Mapping[str, str] | None = None,
) -> AgentInvocation | None:
    """The coding-agent invocation of an attempt when the task or pool names a preset (None:
    a plain command). ``agent_dir``: the attempt directory as the agent sees it. Raises
    RunnerLaunchError (not retryable) for options the preset cannot use."""
    from ..errors import RunnerLaunchError

    deps = env.dependency_results(task) if env.dependency_results is not None else ()
    try:
        return plan_attempt(task, slot, pool, attempt=attempt, agent_dir=agent_dir,
                            environ=environ, template=env.prompt_template, dependencies=deps)
    except (AgentOptionError, KeyError) as exc:
        raise RunnerLaunchError(f"task {task.key!r} in pool {pool.name!r}: {exc}",
                                pool=pool.name, retryable=False) from exc


def container_agent(
    task: Task, slot: Slot, pool: AgentPool, attempt: int, env: LaunchEnvironment, *,
    slot_path: str, agent_dir: str, use_wrapper: bool, attempt_path: Path | None = None,
    key_by_reference: bool = False,
) -> tuple[AgentInvocation | None, dict[str, str]]:
    """A coding-agent plan for a container runner and the environment it adds (the runner
    wrapper writes the files there; ``prompt.md`` is also kept in ``attempt_path``).

    ``key_by_reference`` (Kubernetes): the key is not put in the Job; the pod has the variable
    named by ``api_key_env`` (from a Secret of the job template) and the wrapper copies it."""
    from ..errors import RunnerLaunchError

    resolved = resolve_agent(task, pool)
    if resolved is None:
        return None, {}
    if not use_wrapper:
        raise RunnerLaunchError(f"pool {pool.name!r}: agent {resolved[0].name} needs the runner "
                                "wrapper (config.use_wrapper: true)", pool=pool.name,
                                retryable=False)
    preset, options = resolved
    key_env = options.api_key_env or preset.default_key_env
    environ = {**os.environ, key_env: "by-reference"} if key_by_reference else None
    inside = Slot(slot.slot_id, slot_path, slot.repo, slot.branch)
    plan = agent_plan(task, inside, pool, attempt, env, agent_dir=agent_dir, environ=environ)
    if plan is None:
        return None, {}
    if attempt_path is not None:  # the task detail shows the prompt given
        try:
            attempt_path.mkdir(parents=True, exist_ok=True)
            (attempt_path / PROMPT_FILE).write_text(plan.files[f"{agent_dir}/{PROMPT_FILE}"])
        except OSError as exc:
            log.warning("cannot keep the prompt of %s in %s: %s", task.key, attempt_path, exc)
    return plan, container_env(plan, key_env if key_by_reference else None)


def log_cap_for(pool: AgentPool, env: LaunchEnvironment) -> int:
    """The output.log cap of ``pool``'s runners: ``config.output_log_max_bytes``, else the
    Dispatcher's ``output_log_max_bytes`` (0: no cap)."""
    raw = (pool.config or {}).get("output_log_max_bytes", env.log_max_bytes)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0


def runner_env(
    task: Task,
    slot: Slot,
    pool: AgentPool,
    runner_id: str,
    attempt: int,
    env: LaunchEnvironment,
    *,
    slot_path: str | None = None,
    plan: AgentInvocation | None = None,
) -> dict[str, str]:
    """Environment variables of the runner contract (DESIGN.md), without the parent's env.

    With a coding-agent ``plan`` its environment comes too (secrets included: callers that
    show an environment use :meth:`AgentInvocation.shown_env`)."""
    ctx = task_context(task, slot, runner_id, attempt)
    if slot_path is not None:
        ctx["slot_path"] = slot_path
    ctx_json = json.dumps(ctx)
    out = {
        "NECROCODE_RUNNER_ID": runner_id,
        "NECROCODE_TASK_CONTEXT": ctx_json,
        "NECROCODE_TASK_KEY": task.key,
        "NECROCODE_ATTEMPT": str(attempt),
        "NECROCODE_SLOT_PATH": ctx["slot_path"],
        "NECROCODE_HEARTBEAT_INTERVAL": str(env.heartbeat_interval),
        "NECROCODE_HEARTBEAT_TIMEOUT": str(env.heartbeat_timeout),
        "NECROCODE_LOG_MAX_BYTES": str(log_cap_for(pool, env)),
        "RUNNER_ID": runner_id,
        "TASK_CONTEXT": ctx_json,
        "POOL_NAME": pool.name,
    }
    if env.api_url:
        out["NECROCODE_API_URL"] = env.api_url
        out["NECROCODE_RUNNER_TOKEN"] = env.token_for(runner_id)
    for key, value in (pool.config or {}).items():
        if isinstance(value, str | int | float | bool):
            name = "".join(c if c.isalnum() else "_" for c in str(key)).upper()
            out[f"RUNNER_{name}"] = str(value)
    if plan is not None:
        out.update(plan.env)
    return out


def agent_argv(task: Task, slot: Slot, pool: AgentPool, runner_id: str, attempt: int, *,
               plan: AgentInvocation | None = None) -> list[str]:
    """The agent's argv: a coding-agent ``plan``'s, else the task's command, else the pool's
    agent_command template.

    Template items are filled with ``str.format`` of plain values; never run through a shell.
    """
    if plan is not None:
        return list(plan.argv)
    if task.command:
        return [str(a) for a in task.command]
    template = pool.agent_command or (pool.config or {}).get("agent_command")
    if not template:
        from ..errors import RunnerLaunchError

        raise RunnerLaunchError(
            f"task {task.key!r} has no command and pool {pool.name!r} has no agent_command; "
            "add `command:` to the task or `agent_command:` to the pool",
            pool=pool.name,
            retryable=False,
        )
    values = {
        "task_id": task.id,
        "task_key": task.key,
        "taskset": task.taskset,
        "title": task.title,
        "skill": task.required_skill,
        "slot_path": slot.slot_path,
        "slot_id": slot.slot_id,
        "branch": slot.branch or "",
        "runner_id": runner_id,
        "attempt": attempt,
    }
    return [str(item).format_map(_SafeFormat(values)) for item in template]


class _SafeFormat(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class RunnerLauncher(ABC):
    """Starts, watches and stops Agent Runners on one kind of platform."""

    #: Seconds a platform check answer is reused (the engine checks every ~30 s, launches may
    #: ask more often).
    health_ttl = 5.0

    def __init__(self, env: LaunchEnvironment) -> None:
        self.env = env
        self._health_cache: dict[str, tuple[float, bool, str]] = {}

    @abstractmethod
    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        """Start a runner for ``task`` in ``slot``; raises RunnerLaunchError."""

    @abstractmethod
    def poll(self, runner: Runner) -> RunnerExit | None:
        """Non-blocking: None while the runner lives, its exit once it has ended."""

    @abstractmethod
    def stop(self, runner: Runner, grace: float | None = None) -> StopResult:
        """Fence: stop the runner (TERM, ``grace`` seconds, KILL) and say whether it is known
        gone. Never raises for a platform error: that is an unconfirmed result with the
        reason (the engine keeps the runner's slot and capacity and tries again)."""

    def reconcile(self, pool: AgentPool) -> list[Runner]:
        """Runners of this pool still alive on the platform (to adopt after a restart)."""
        return []

    def is_alive(self, runner: Runner) -> bool:
        """True while the runner's platform object exists and runs."""
        return self.poll(runner) is None

    def health(self, pool: AgentPool) -> tuple[bool, str]:
        """Whether the platform can take runners now, and why not (cached ``health_ttl``)."""
        cached = self._health_cache.get(pool.name)
        if cached and time.monotonic() - cached[0] < self.health_ttl:
            return cached[1], cached[2]
        ok, why = self._check_health(pool)
        self._health_cache[pool.name] = (time.monotonic(), ok, why)
        return ok, why

    def _check_health(self, pool: AgentPool) -> tuple[bool, str]:
        """Ask the platform (uncached); platforms without a check are always healthy."""
        return True, ""

    def release(self, runner: Runner) -> None:  # noqa: B027 - optional hook
        """Forget platform resources of a finished runner (remove the container, the Job)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop watcher threads and close clients."""


def short_error(exc: BaseException) -> str:
    """One line of a platform error (an SDK's text can be a page long)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
