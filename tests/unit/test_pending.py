"""Pending reasons (B1): one test per reason, with the exact human sentence."""

from __future__ import annotations

import time
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import AgentPool, Resources, Task, TaskState
from necrocode.dispatcher.pending import (
    explain_placement,
    failure_roots,
    no_slot,
    pending_deadlock,
    pending_for_blocked,
    pending_paused,
    pending_queued,
    pending_retry,
)
from necrocode.dispatcher.pool_manager import AgentPoolManager
from necrocode.dispatcher.scheduler import Scheduler
from necrocode.dispatcher.snapshot import PendingReason


def pools(**kw: Any) -> AgentPoolManager:
    base: dict[str, Any] = dict(
        max_global_concurrency=10,
        agent_pools=[
            AgentPool("docker", max_concurrency=4, cpu_quota=4, memory_quota=8192),
            AgentPool("k8s", max_concurrency=10, cpu_quota=10, memory_quota=20480),
        ],
        skill_mapping={"backend": ["docker", "k8s"], "database": ["docker"]},
    )
    base.update(kw)
    return AgentPoolManager(DispatcherConfig(**base))


def task(i: str = "1.3", skill: str = "database", cpu: float = 1.0, mem: int = 512,
         **kw: Any) -> Task:
    return Task(id=i, taskset="chat", required_skill=skill, resources=Resources(cpu, mem), **kw)


def filler(n: int, cpu: float = 1.0, mem: int = 512, name: str = "busy") -> list[Task]:
    return [Task(id=f"f{i}", taskset=name, resources=Resources(cpu, mem)) for i in range(n)]


def test_queued() -> None:
    p = explain_placement(task(), pools())
    assert (p.reason, p.message) == (PendingReason.QUEUED, "waiting for its turn")
    assert pending_queued(3).message == "waiting for its turn (position 3)"


def test_pool_full() -> None:
    pm = pools()
    for f in filler(4, cpu=0.5):
        pm.acquire("docker", f)
    p = explain_placement(task(), pm)
    assert (p.reason, p.message) == (PendingReason.POOL_FULL, "pool 'docker' full (4/4)")


def test_every_mapped_pool_full_names_each() -> None:
    pm = pools(max_global_concurrency=100)
    for f in filler(4, cpu=0.5):
        pm.acquire("docker", f)
    for f in filler(10, cpu=0.5, name="busy-k8s"):
        pm.acquire("k8s", f)
    p = explain_placement(task(skill="backend"), pm)
    assert p.reason == PendingReason.POOL_FULL
    assert p.message == "pool 'docker' full (4/4); pool 'k8s' full (10/10)"


def test_cpu_quota() -> None:
    pm = pools()
    for f in filler(1, cpu=3.5):
        pm.acquire("docker", f)
    p = explain_placement(task(), pm)
    assert p.reason == PendingReason.CPU_QUOTA
    assert p.message == "cpu quota of pool 'docker': 3.5/4 cores in use, needs 1"


def test_memory_quota() -> None:
    pm = pools()
    for f in filler(1, cpu=0.5, mem=8000):
        pm.acquire("docker", f)
    p = explain_placement(task(mem=1024), pm)
    assert p.reason == PendingReason.MEMORY_QUOTA
    assert p.message == "memory quota of pool 'docker': 8000/8192 MB in use, needs 1024"


def test_exceeds_every_quota() -> None:
    p = explain_placement(task(cpu=16), pools())
    assert p.reason == PendingReason.EXCEEDS_QUOTA
    assert p.message == "needs 16 cores, more than any pool's quota (docker: 4)"
    p = explain_placement(task(skill="backend", mem=30000), pools())
    assert p.message == (
        "needs 30000 MB of memory, more than any pool's quota (docker: 8192 MB, k8s: 20480 MB)"
    )


def test_no_pool_for_skill() -> None:
    p = explain_placement(task(skill="gpu"), pools())
    assert p.reason == PendingReason.NO_POOL_FOR_SKILL
    assert p.message == "no pool maps skill 'gpu' and there is no default mapping"
    p = explain_placement(task(skill=""), pools())
    assert p.message == "no pool for tasks without a skill: there is no default mapping"


def test_every_pool_disabled() -> None:
    pm = pools()
    pm.set_pool_enabled("docker", False)
    pm.set_pool_enabled("k8s", False)
    p = explain_placement(task(skill="backend"), pm)
    assert p.reason == PendingReason.POOL_DISABLED
    assert p.message == "every pool for skill 'backend' is disabled: docker, k8s"
    assert explain_placement(task(), pm).message == (
        "pool 'docker' for skill 'database' is disabled"
    )


def test_global_limit() -> None:
    pm = pools(max_global_concurrency=2)
    for f in filler(2, cpu=0.1):
        pm.acquire("k8s", f)
    p = explain_placement(task(), pm)
    assert (p.reason, p.message) == (PendingReason.GLOBAL_LIMIT, "global limit reached (2/2)")


def test_unhealthy_pool() -> None:
    pm = pools()
    for _ in range(3):
        pm.record_launch_error("docker", "image not found")
    p = explain_placement(task(), pm)
    assert p.reason == PendingReason.POOL_UNHEALTHY
    assert p.message == "pool 'docker' fails to launch runners (3 errors in a row: image not found)"


def test_retry_backoff() -> None:
    at = time.mktime((2026, 1, 1, 14, 3, 7, 0, 0, -1))
    t = task(next_attempt_at=at, attempts=2)
    p = explain_placement(t, pools(), now=at - 5)
    assert p.reason == PendingReason.RETRY_BACKOFF
    assert p.message == "retry at 14:03:07 (attempt 3)"
    assert pending_retry(task(next_attempt_at=at)).message == "retry at 14:03:07"
    assert explain_placement(t, pools(), now=at).reason == PendingReason.QUEUED


def test_paused() -> None:
    p = explain_placement(task(), pools(), paused=True)
    assert p == pending_paused()
    assert (p.reason, p.message) == (PendingReason.PAUSED, "dispatching is paused")


def test_waiting_on_dependencies() -> None:
    deps = {
        "chat/1.1": Task(id="1.1", taskset="chat", state=TaskState.RUNNING),
        "chat/1.2": Task(id="1.2", taskset="chat", state=TaskState.READY),
        "chat/1.0": Task(id="1.0", taskset="chat", state=TaskState.DONE),
    }
    t = task(dependencies=["1.0", "1.1", "1.2"], state=TaskState.BLOCKED)
    p = pending_for_blocked(t, deps)
    assert p.reason == PendingReason.WAITING_DEPENDENCIES
    assert p.message == "waiting on dependencies chat/1.1 (running), chat/1.2 (ready)"
    one = pending_for_blocked(task(dependencies=["1.1"]), deps)
    assert one.message == "waiting on dependency chat/1.1 (running)"
    gone = pending_for_blocked(task(dependencies=["9"]), deps)
    assert gone.message == "waiting on dependency chat/9 (unknown)"


def test_blocked_for_good_by_failed_dependency_even_transitively() -> None:
    deps = {
        "chat/1.1": Task(id="1.1", taskset="chat", state=TaskState.FAILED),
        "chat/1.2": Task(id="1.2", taskset="chat", state=TaskState.BLOCKED,
                         dependencies=["1.1"]),
    }
    direct = pending_for_blocked(task(dependencies=["1.1"]), deps)
    assert direct.reason == PendingReason.BLOCKED_BY_FAILURE
    assert direct.message == "blocked for good: dependency chat/1.1 FAILED"
    via = pending_for_blocked(task(dependencies=["1.2"]), deps)
    assert via.message == "blocked for good: dependency chat/1.1 FAILED"


def test_no_slot_and_deadlock() -> None:
    p = no_slot(task(), "/repos/chat")
    assert (p.reason, p.message) == (PendingReason.NO_SLOT, "no free workspace slot for repo "
                                     "/repos/chat")
    d = pending_deadlock(["chat/1", "chat/2"])
    assert d.reason == PendingReason.DEADLOCK
    assert d.message == "part of dependency cycle chat/1 -> chat/2 -> chat/1"


def test_scheduler_explain_caches_until_pools_change(caplog: pytest.LogCaptureFixture) -> None:
    pm = pools()
    s = Scheduler("priority", pm.config)
    assert s.explain(task(), pm).reason == PendingReason.QUEUED
    for f in filler(4, cpu=0.5):
        pm.acquire("docker", f)
    assert s.explain(task(), pm).message == "pool 'docker' full (4/4)"
    assert s.explain(task(), pm, paused=True).reason == PendingReason.PAUSED
    with caplog.at_level("WARNING"):
        s.explain(task(cpu=16), pm)
        s.explain(task(cpu=16, i="other"), pm)
    assert caplog.text.count("more than any pool's quota") == 1  # warned once


def test_failure_roots_of_a_long_chain_with_a_shared_memo() -> None:
    n = 3000
    known = {"c/0": Task(id="0", taskset="c", state=TaskState.FAILED)}
    for i in range(1, n):
        known[f"c/{i}"] = Task(id=str(i), taskset="c", state=TaskState.BLOCKED,
                               dependencies=[str(i - 1)])
    memo: dict[str, tuple[str, ...]] = {}
    reasons = [pending_for_blocked(known[f"c/{i}"], known, memo=memo) for i in range(1, n)]
    assert all(r.message == "blocked for good: dependency c/0 FAILED" for r in reasons)
    assert failure_roots(known["c/7"], known) == ("c/0",)


def test_failure_roots_survive_a_cycle() -> None:
    known = {
        "c/a": Task(id="a", taskset="c", state=TaskState.BLOCKED, dependencies=["b", "f"]),
        "c/b": Task(id="b", taskset="c", state=TaskState.BLOCKED, dependencies=["a"]),
        "c/f": Task(id="f", taskset="c", state=TaskState.CANCELLED),
    }
    assert failure_roots(known["c/a"], known) == ("c/f",)
    assert pending_for_blocked(known["c/b"], known).reason == PendingReason.BLOCKED_BY_FAILURE
