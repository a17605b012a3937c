"""Pending reasons (B1): why a queued task is not running now, as an enum plus a sentence.

The sentences carry the specifics an operator needs: which pool is full and how full, which
quota and by how much, which dependency in which state, when the retry comes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .models import Task, TaskState, task_key
from .pool_manager import cpu_millis
from .snapshot import Pending, PendingReason

if TYPE_CHECKING:
    from .pool_manager import AgentPoolManager

__all__ = [
    "Pending",
    "PendingReason",
    "explain_placement",
    "no_slot",
    "pending_deadlock",
    "failure_roots",
    "pending_for_blocked",
    "pending_paused",
    "pending_queued",
    "pending_retry",
]


def _num(x: float) -> str:
    return f"{x:g}"


def _dep_key(task: Task, dep: str) -> str:
    return dep if "/" in dep else task_key(task.taskset, dep)


def clock_time(ts: float) -> str:
    """``HH:MM:SS`` in local time."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def pending_paused() -> Pending:
    """Dispatching is paused by an operator."""
    return Pending(PendingReason.PAUSED, "dispatching is paused")


def pending_retry(task: Task) -> Pending:
    """The task waits for its retry backoff (``next_attempt_at``)."""
    at = task.next_attempt_at or 0.0
    attempt = f" (attempt {task.attempts + 1})" if task.attempts else ""
    return Pending(PendingReason.RETRY_BACKOFF, f"retry at {clock_time(at)}{attempt}")


def pending_queued(position: int | None = None) -> Pending:
    """Placeable; waits for its turn."""
    if position is None:
        return Pending(PendingReason.QUEUED, "waiting for its turn")
    return Pending(PendingReason.QUEUED, f"waiting for its turn (position {position})")


def no_slot(task: Task, repo: str | None = None) -> Pending:
    """No free workspace slot for the task's repository."""
    repo = repo if repo is not None else task.repo
    where = f"repo {repo}" if repo else "scratch workspaces"
    return Pending(PendingReason.NO_SLOT, f"no free workspace slot for {where}")


def pending_deadlock(cycle: Iterable[str]) -> Pending:
    """The task is part of a dependency cycle."""
    keys = list(cycle)
    path = " -> ".join([*keys, keys[0]]) if keys else "?"
    return Pending(PendingReason.DEADLOCK, f"part of dependency cycle {path}")


def failure_roots(
    task: Task, deps: Mapping[str, Task], memo: dict[str, tuple[str, ...]] | None = None
) -> tuple[str, ...]:
    """Keys of FAILED/CANCELLED tasks that ``task`` waits on, directly or through BLOCKED ones.

    ``memo`` (key -> roots) may be shared between calls over the same ``deps`` so that finding
    the roots of every task costs O(tasks + dependencies) in total.
    """
    memo = {} if memo is None else memo
    stack: list[tuple[Task, bool]] = [(task, False)]
    on_path: set[str] = set()
    while stack:
        node, expanded = stack.pop()
        key = node.key
        if expanded:
            found: set[str] = set()
            for dep_id in node.dependencies:
                dk = _dep_key(node, dep_id)
                dep = deps.get(dk)
                if dep is None:
                    continue
                if dep.state in (TaskState.FAILED, TaskState.CANCELLED):
                    found.add(dk)
                elif dep.state == TaskState.BLOCKED:
                    found.update(memo.get(dk, ()))
            memo[key] = tuple(sorted(found))
            on_path.discard(key)
            continue
        if key in memo or key in on_path:
            continue
        on_path.add(key)
        stack.append((node, True))
        for dep_id in node.dependencies:
            dk = _dep_key(node, dep_id)
            dep = deps.get(dk)
            if dep is not None and dep.state == TaskState.BLOCKED and dk not in memo:
                stack.append((dep, False))
    return memo.get(task.key, ())


def pending_for_blocked(
    task: Task, deps: Mapping[str, Task], *, memo: dict[str, tuple[str, ...]] | None = None
) -> Pending:
    """Why a BLOCKED task waits: unfinished dependencies, or a FAILED/CANCELLED one for good.

    ``deps`` maps task keys to tasks; it may hold more than the direct dependencies (for
    example every known task), in which case failures further up a chain of BLOCKED tasks are
    found too. Pass the same ``memo`` dict when explaining many tasks over one ``deps``.
    """
    roots = [f"{k} {deps[k].state.value.upper()}" for k in failure_roots(task, deps, memo)]
    if roots:
        noun = "dependency" if len(roots) == 1 else "dependencies"
        return Pending(
            PendingReason.BLOCKED_BY_FAILURE, f"blocked for good: {noun} {', '.join(sorted(roots))}"
        )
    waiting = []
    for dep_id in task.dependencies:
        key = _dep_key(task, dep_id)
        dep = deps.get(key)
        if dep is None:
            waiting.append(f"{key} (unknown)")
        elif dep.state != TaskState.DONE:
            waiting.append(f"{key} ({dep.state.value})")
    if not waiting:
        return Pending(PendingReason.WAITING_DEPENDENCIES, "dependencies done; becoming ready")
    noun = "dependency" if len(waiting) == 1 else "dependencies"
    return Pending(PendingReason.WAITING_DEPENDENCIES, f"waiting on {noun} {', '.join(waiting)}")


def _skill_name(skill: str) -> str:
    return f"skill {skill!r}" if skill else "tasks without a skill"


def explain_placement(
    task: Task,
    pools: AgentPoolManager,
    now: float | None = None,
    *,
    paused: bool = False,
) -> Pending:
    """Why a READY task is still queued, judged from the pools' state now.

    In order: paused, retry backoff, no pool for the skill, every mapped pool disabled, larger
    than every quota, global limit, then per pool (full, CPU quota, memory quota). When a pool
    could take it, the task is simply waiting for its turn.
    """
    now = time.time() if now is None else now
    if paused:
        return pending_paused()
    if task.next_attempt_at is not None and task.next_attempt_at > now:
        return pending_retry(task)
    skill = task.required_skill
    mapped = pools.pools_for_skill(skill)
    if not mapped:
        entry, _ = pools.mapping_for_skill(skill)
        if skill:
            msg = f"no pool maps skill {skill!r} and there is no default mapping"
        else:
            msg = "no pool for tasks without a skill: there is no default mapping"
        if entry:
            msg = f"skill mapping {entry!r} names no configured pool"
        return Pending(PendingReason.NO_POOL_FOR_SKILL, msg)
    enabled = [p for p in mapped if p.enabled]
    if not enabled:
        names = ", ".join(p.name for p in mapped)
        if len(mapped) == 1:
            msg = f"pool {names!r} for {_skill_name(skill)} is disabled"
        else:
            msg = f"every pool for {_skill_name(skill)} is disabled: {names}"
        return Pending(PendingReason.POOL_DISABLED, msg)
    fitting = [p for p in enabled if pools.fits_quota(p, task)]
    if not fitting:
        return _exceeds(task, enabled)
    if pools.global_running >= pools.max_global_concurrency:
        return Pending(
            PendingReason.GLOBAL_LIMIT,
            f"global limit reached ({pools.global_running}/{pools.max_global_concurrency})",
        )
    found: list[Pending] = []
    open_pools = []
    for pool in fitting:
        why = _pool_blocker(task, pools, pool.name)
        if why is None:
            open_pools.append(pool.name)
        else:
            found.append(why)
    if open_pools:
        reachable = [n for n in open_pools if pools.platform_problem(n) is None]
        if not reachable:
            name = open_pools[0]
            return Pending(
                PendingReason.POOL_UNHEALTHY,
                f"pool {name!r} is unavailable: {pools.platform_problem(name)}",
            )
        open_pools = reachable
        if all(not pools.is_healthy(name) for name in open_pools):
            st = pools.get_pool_status(open_pools[0])
            last = f": {st.last_error}" if st.last_error else ""
            return Pending(
                PendingReason.POOL_UNHEALTHY,
                f"pool {open_pools[0]!r} fails to launch runners "
                f"({st.recent_launch_errors} errors in a row{last})",
            )
        return pending_queued()
    if len(found) == 1:
        return found[0]
    kinds = {p.reason for p in found}
    reason = PendingReason.POOL_FULL if kinds == {PendingReason.POOL_FULL} else found[0].reason
    return Pending(reason, "; ".join(p.message for p in found))


def _pool_blocker(task: Task, pools: AgentPoolManager, name: str) -> Pending | None:
    st = pools.get_pool_status(name)
    if st.running >= st.max_concurrency:
        return Pending(
            PendingReason.POOL_FULL, f"pool {name!r} full ({st.running}/{st.max_concurrency})"
        )
    cpu = task.resources.cpu
    if st.cpu_quota is not None and cpu_millis(st.cpu_in_use) + cpu_millis(cpu) > cpu_millis(
        st.cpu_quota
    ):
        return Pending(
            PendingReason.CPU_QUOTA,
            f"cpu quota of pool {name!r}: {_num(st.cpu_in_use)}/{_num(st.cpu_quota)} cores in "
            f"use, needs {_num(cpu)}",
        )
    mem = task.resources.memory_mb
    if st.memory_quota is not None and st.memory_in_use + mem > st.memory_quota:
        return Pending(
            PendingReason.MEMORY_QUOTA,
            f"memory quota of pool {name!r}: {st.memory_in_use}/{st.memory_quota} MB in use, "
            f"needs {mem}",
        )
    return None


def _exceeds(task: Task, enabled: list) -> Pending:  # type: ignore[type-arg]
    cpu = task.resources.cpu
    mem = task.resources.memory_mb
    cpu_quotas = [p for p in enabled if p.cpu_quota is not None]
    if cpu_quotas and all(cpu_millis(cpu) > cpu_millis(p.cpu_quota) for p in cpu_quotas) and (
        len(cpu_quotas) == len(enabled)
    ):
        detail = ", ".join(f"{p.name}: {_num(p.cpu_quota)}" for p in cpu_quotas)
        return Pending(
            PendingReason.EXCEEDS_QUOTA,
            f"needs {_num(cpu)} cores, more than any pool's quota ({detail})",
        )
    mem_quotas = [p for p in enabled if p.memory_quota is not None]
    if mem_quotas and all(mem > p.memory_quota for p in mem_quotas) and len(mem_quotas) == len(
        enabled
    ):
        detail = ", ".join(f"{p.name}: {p.memory_quota} MB" for p in mem_quotas)
        return Pending(
            PendingReason.EXCEEDS_QUOTA,
            f"needs {mem} MB of memory, more than any pool's quota ({detail})",
        )
    parts = []
    for p in enabled:
        if p.cpu_quota is not None and cpu_millis(cpu) > cpu_millis(p.cpu_quota):
            parts.append(f"{p.name}: {_num(p.cpu_quota)} cores")
        else:
            parts.append(f"{p.name}: {p.memory_quota} MB")
    return Pending(
        PendingReason.EXCEEDS_QUOTA,
        f"needs {_num(cpu)} cores and {mem} MB, more than any pool's quota ({', '.join(parts)})",
    )
