"""From a task and its pool to one attempt's agent invocation (used by the launchers).

:func:`resolve_agent` picks the preset (a task's ``agent`` over its ``command`` over the pool's
``agent``); :func:`plan_attempt` builds the prompt and the preset's invocation, with
``prompt.md`` among the files to write; :func:`watch_spec` tells the stream reader what to read.
The runner wrapper learns the preset through :data:`AGENT_ENV` and friends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..models import AgentPool, Slot, Task
from . import PRESET_NAMES, get_preset
from .base import (
    COMMON_OPTIONS,
    PROMPT_FILE,
    USAGE_FILE,
    AgentInvocation,
    AgentOptionError,
    AgentOptions,
    AgentPreset,
    AttemptContext,
)
from .budget import Budget
from .prompt import DependencyResult, PromptInput, build_prompt

#: Variables of the runner contract for preset runs (read by the runner wrapper).
AGENT_ENV = "NECROCODE_AGENT"  # the preset's name
RESULT_FILE_ENV = "NECROCODE_AGENT_RESULT_FILE"  # the rewritten result file, if any
FILES_ENV = "NECROCODE_AGENT_FILES"  # JSON {path: text} for the wrapper to write first
SECRET_REFS_ENV = "NECROCODE_AGENT_SECRET_REFS"  # JSON {CLI variable: variable holding it}
BUDGET_ENV = "NECROCODE_AGENT_BUDGET"  # JSON {max_cost_usd, max_tokens, max_turns}

#: What a launcher may be given to find dependencies' results (the engine supplies it).
DependencyLookup = Callable[[Task], Sequence[DependencyResult]]


def options_from_mapping(raw: Mapping[str, Any] | None) -> AgentOptions:
    """Typed options from ``agent_options``; AgentOptionError names a bad value."""
    raw = dict(raw or {})
    for key in ("model", "base_url", "api_key_env", "executable"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise AgentOptionError(f"{key}: expected a string, got {type(value).__name__}")
    extra = raw.get("extra_args") or []
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise AgentOptionError("extra_args: expected a list of strings (arguments)")
    return AgentOptions(
        model=raw.get("model"), base_url=raw.get("base_url"), api_key_env=raw.get("api_key_env"),
        extra_args=tuple(extra), executable=raw.get("executable"),
        extras={k: v for k, v in raw.items() if k not in COMMON_OPTIONS},
    )


def resolve_agent(task: Task, pool: AgentPool) -> tuple[AgentPreset, AgentOptions] | None:
    """The preset and merged options of ``task`` in ``pool``; None: a plain command.

    A task's own ``agent`` wins; a task with a ``command`` and no agent runs that command; else
    the pool's ``agent``. Pool options apply when the task runs the pool's preset.
    """
    name = task.agent or (None if task.command else pool.agent)
    if not name or name == "command":
        return None
    try:
        preset = get_preset(name)
    except KeyError:
        raise AgentOptionError(f"unknown agent {name!r}; agents: "
                               f"{', '.join(PRESET_NAMES)}") from None
    pool_opts = (options_from_mapping(pool.agent_options)
                 if pool.agent in (None, name) else AgentOptions())
    return preset, pool_opts.merged(options_from_mapping(task.agent_options))


def task_budget(task: Task) -> Budget:
    """A task's own budget per attempt."""
    return Budget(task.max_cost_usd, task.max_tokens, task.max_turns)


def plan_attempt(
    task: Task, slot: Slot, pool: AgentPool, *, attempt: int, agent_dir: str,
    environ: Mapping[str, str] | None = None, template: str | None = None,
    dependencies: Sequence[DependencyResult] = (),
) -> AgentInvocation | None:
    """The invocation of one attempt (files include ``prompt.md``); None: a plain command.

    ``agent_dir`` is the attempt directory as the agent sees it. Raises AgentOptionError.
    """
    resolved = resolve_agent(task, pool)
    if resolved is None:
        return None
    preset, options = resolved
    prompt = build_prompt(PromptInput(task, slot.slot_path, slot.branch, attempt,
                                      tuple(dependencies), task.last_error), template)
    env = os.environ if environ is None else environ
    if options.api_key_env and options.api_key_env not in env:
        raise AgentOptionError(f"agent_options.api_key_env names {options.api_key_env}, which "
                               "is not set in the Dispatcher's environment")
    ctx = AttemptContext(prompt, slot.slot_path, agent_dir, options, env)
    inv = preset.invocation(ctx)
    extra = {AGENT_ENV: preset.name}
    if inv.result_file:
        extra[RESULT_FILE_ENV] = inv.result_file
    budget = task_budget(task)
    if not budget.unlimited:  # the runner wrapper fences a run over it by itself
        extra[BUDGET_ENV] = json.dumps({"max_cost_usd": budget.max_cost_usd,
                                        "max_tokens": budget.max_tokens,
                                        "max_turns": budget.max_turns})
    return replace(inv, env={**inv.env, **extra},
                   files={**inv.files, os.path.join(agent_dir, PROMPT_FILE): prompt})


def container_env(inv: AgentInvocation, key_env: str | None = None) -> dict[str, str]:
    """The environment of a wrapped runner in a container: the preset's env and the files for
    the wrapper to write. Secrets go as values, or with ``key_env`` (Kubernetes: the pod gets
    that variable from a Secret of its job template) by reference: the wrapper copies it."""
    env = {k: v for k, v in inv.env.items() if k not in inv.secret_env}
    env[FILES_ENV] = json.dumps(dict(inv.files))
    if key_env:
        env[SECRET_REFS_ENV] = json.dumps({name: key_env for name in inv.secret_env})
    else:
        env.update({k: inv.env[k] for k in inv.secret_env})
    return env


@dataclass(frozen=True)
class WatchSpec:
    """What :meth:`~.stream.StreamReader.watch` needs for one attempt (host paths)."""

    preset: AgentPreset
    log_path: Path
    usage_path: Path
    result_file: Path | None
    budget: Budget
    model: str | None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``StreamReader.watch`` after the runner id and log path."""
        return {"budget": self.budget, "result_file": self.result_file,
                "usage_path": self.usage_path, "model": self.model}


def watch_spec(task: Task, pool: AgentPool, attempt_dir: str | os.PathLike[str],
               log_path: str | os.PathLike[str], *,
               agent_dir: str | None = None, budget: Budget | None = None) -> WatchSpec | None:
    """How to read an attempt of ``task`` (None: a plain command, nothing to parse).

    ``agent_dir`` is the attempt directory as the agent saw it (a container path), so a
    result file is found under ``attempt_dir`` on this side. ``budget`` is the task's within
    any taskset/tenant budget (default: the task's own).
    """
    resolved = resolve_agent(task, pool)
    if resolved is None:
        return None
    preset, options = resolved
    adir = Path(attempt_dir)
    inv = preset.invocation(AttemptContext("", "", agent_dir or str(adir), options, {}))
    result = None
    if inv.result_file:
        rel = os.path.relpath(inv.result_file, agent_dir or str(adir))
        result = adir / rel
    return WatchSpec(preset, Path(log_path), adir / USAGE_FILE, result,
                     budget or task_budget(task), options.model)
