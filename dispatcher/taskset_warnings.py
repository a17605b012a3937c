"""Warnings about a valid taskset under a config: tasks that would wait or fail to launch.

They never refuse a taskset (the config may change before the tasks run); ``necroui submit``
and ``import-kiro`` print them:

- resources above the quota of every pool a task can go to (it would wait forever);
- a skill no pool takes, with no ``default`` in ``skill_mapping`` (likewise);
- tasks without ``command:`` that would go to a pool without ``agent_command:`` (their launch
  fails at once; Kiro tasks never have a command).
"""

from __future__ import annotations

from .config import DispatcherConfig
from .models import AgentPool, Taskset, TaskState, task_key


def _quota_text(pool: AgentPool) -> str:
    """``cpu 2, memory 512 MB``, leaving out what the pool does not limit."""
    parts = []
    if pool.cpu_quota is not None:
        parts.append(f"cpu {pool.cpu_quota:g}")
    if pool.memory_quota is not None:
        parts.append(f"memory {pool.memory_quota} MB")
    return ", ".join(parts) or "no quota"


def _candidate_pools(skill: str, config: DispatcherConfig) -> list[str]:
    """Names of the pools a task of ``skill`` may go to (skill_mapping, else 'default')."""
    return (config.skill_mapping.get(skill) or config.skill_mapping.get("default")
            or ([] if config.skill_mapping else [p.name for p in config.agent_pools]))


#: The example of an agent_command in warnings and hints.
AGENT_COMMAND_EXAMPLE = '["my-agent", "--task", "{task_id}", "--workdir", "{slot_path}"]'


def command_warnings(taskset: Taskset, config: DispatcherConfig) -> list[str]:
    """One warning per pool without ``agent_command`` that would get tasks without ``command``.

    Such tasks cannot run there: their launch fails at once (Kiro tasks never have a command).
    Tasks already DONE are left out.
    """
    pools = {p.name: p for p in config.agent_pools}
    needy: dict[str, list[str]] = {}
    candidates: dict[str, list[str]] = {}  # per skill
    for task in taskset.tasks:
        if task.command or task.state is TaskState.DONE:
            continue
        skill = task.required_skill
        names = candidates.get(skill)
        if names is None:
            names = candidates[skill] = _candidate_pools(skill, config)
        for name in names:
            pool = pools.get(name)
            if pool is not None and not (pool.agent_command
                                         or (pool.config or {}).get("agent_command")):
                needy.setdefault(name, []).append(task.id)
    warnings = []
    for name, ids in needy.items():
        if len(ids) == 1:
            who, verb, they = f"task {task_key(taskset.name, ids[0])}", "has", "it cannot"
        else:
            who, verb, they = f"{len(ids)} tasks of {taskset.name}", "have", "they cannot"
        warnings.append(
            f"{who} {verb} no `command:` and pool {name!r} has no `agent_command:`, so {they} "
            f"run there (the launch fails); add `agent_command:` to pool {name!r} in your "
            f"config (--config FILE), e.g. {AGENT_COMMAND_EXAMPLE}")
    return warnings


def quota_warnings(taskset: Taskset, config: DispatcherConfig) -> list[str]:
    """Tasks no pool would take: an unmapped skill, or resources above every quota."""
    warnings: list[str] = []
    pools = {p.name: p for p in config.agent_pools}
    verdicts: dict[tuple[str, float, int], str | None] = {}  # one answer per task shape
    for task in taskset.tasks:
        shape = (task.required_skill, task.resources.cpu, task.resources.memory_mb)
        if shape not in verdicts:
            verdicts[shape] = _quota_problem(shape, pools, config)
        problem = verdicts[shape]
        if problem is not None:
            warnings.append(f"{task_key(taskset.name, task.id)}: {problem}")
    return warnings


def _quota_problem(shape: tuple[str, float, int], pools: dict[str, AgentPool],
                   config: DispatcherConfig) -> str | None:
    """Why no pool would take a task of ``shape`` (skill, cpu, memory), or None."""
    skill, cpu, mem = shape
    candidates = [pools[n] for n in _candidate_pools(skill, config) if n in pools]
    if not candidates:
        return (f"no pool takes skill {skill or '(none)'!r} and there is no 'default' in "
                "skill_mapping; it will wait")
    fits = [p for p in candidates
            if (p.cpu_quota is None or cpu <= p.cpu_quota)
            and (p.memory_quota is None or mem <= p.memory_quota)]
    if fits:
        return None
    quotas = ", ".join(f"{p.name} ({_quota_text(p)})" for p in candidates)
    return (f"resources cpu {cpu:g}, memory {mem} MB exceed the quota of every pool it can go "
            f"to: {quotas}; it will wait")


__all__ = ["AGENT_COMMAND_EXAMPLE", "command_warnings", "quota_warnings"]
