"""Scheduler: capacity reservation, policy order, no head-of-line blocking, order(), explain()."""

from __future__ import annotations

from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import AgentPool, Resources, SchedulingPolicy, Task
from necrocode.dispatcher.policies import Policy, register_policy
from necrocode.dispatcher.pool_manager import AgentPoolManager
from necrocode.dispatcher.scheduler import Scheduler
from necrocode.dispatcher.snapshot import PendingReason
from necrocode.dispatcher.task_queue import TaskQueue


def task(i: int | str, skill: str = "", priority: int = 0, ready: float | None = None,
         cpu: float = 1.0, mem: int = 512, **kw: Any) -> Task:
    return Task(id=str(i), required_skill=skill, priority=priority,
                ready_at=float(i) if ready is None and str(i).isdigit() else (ready or 0.0),
                resources=Resources(cpu, mem), **kw)


def config(**kw: Any) -> DispatcherConfig:
    base: dict[str, Any] = dict(
        max_global_concurrency=10,
        agent_pools=[
            AgentPool("local", max_concurrency=2),
            AgentPool("docker", max_concurrency=4, cpu_quota=4, memory_quota=8192),
            AgentPool("k8s", max_concurrency=10, cpu_quota=10, memory_quota=20480),
        ],
        skill_mapping={
            "backend": ["docker", "k8s"],
            "database": ["docker"],
            "devops": ["k8s"],
            "default": ["local"],
        },
    )
    base.update(kw)
    return DispatcherConfig(**base)


def queue_of(*tasks: Task) -> TaskQueue:
    q = TaskQueue()
    for t in tasks:
        q.enqueue(t)
    return q


@pytest.mark.parametrize("policy", list(SchedulingPolicy))
def test_round_never_exceeds_pool_limit_and_acquires(policy: SchedulingPolicy) -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(*[task(i, skill="database") for i in range(10)])
    out = Scheduler(policy, cfg).schedule(q, pm)
    assert len(out) == 4 and {p.name for _, p in out} == {"docker"}
    assert pm.get_pool_status("docker").running == 4
    assert len(q) == 6
    assert all(t.key not in q for t, _ in out)


def test_global_limit_within_one_round() -> None:
    cfg = config(max_global_concurrency=3)
    pm = AgentPoolManager(cfg)
    q = queue_of(*[task(i, skill="devops", cpu=0.1) for i in range(10)])
    assert len(Scheduler("priority", cfg).schedule(q, pm)) == 3
    assert pm.global_running == 3


def test_cpu_quota_within_one_round() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(*[task(i, skill="database", cpu=1.5) for i in range(4)])
    out = Scheduler("fifo", cfg).schedule(q, pm)
    assert len(out) == 2  # 3.0 of 4 cores; a third needs 4.5
    st = pm.get_pool_status("docker")
    assert st.cpu_in_use == 3.0


def test_limit_and_skipped_tasks_stay_in_order() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(*[task(i, priority=i % 3) for i in range(6)])
    s = Scheduler("priority", cfg)
    before = [t.key for t in s.order(q, pm)]
    out = s.schedule(q, pm, limit=1)
    assert [t.key for t, _ in out] == before[:1]
    assert [t.key for t in s.order(q, pm)] == before[1:]


def test_no_head_of_line_blocking_across_skills() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    for i in range(4):
        pm.acquire("docker", task(f"busy{i}", cpu=0.5))
    q = queue_of(*[task(i, skill="database", priority=9) for i in range(100)],
                 task("x", skill="devops", priority=0))
    out = Scheduler("priority", cfg).schedule(q, pm)
    assert [t.id for t, _ in out] == ["x"]


def test_no_head_of_line_blocking_by_resources() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(task(1, skill="database", cpu=8, priority=5),
                 task(2, skill="database", cpu=1, priority=1))
    out = Scheduler("priority", cfg).schedule(q, pm)
    assert [t.id for t, _ in out] == ["2"]
    left = q.get("default/1")
    assert left is not None
    why = Scheduler("priority", cfg).explain(left, pm)
    assert why.reason == PendingReason.EXCEEDS_QUOTA
    assert why.message == "needs 8 cores, more than any pool's quota (docker: 4)"


def test_backoff_tasks_are_not_handed_out() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(task(1, next_attempt_at=1000.0), task(2))
    s = Scheduler("priority", cfg)
    assert [t.id for t, _ in s.schedule(q, pm, now=999.0)] == ["2"]
    assert s.next_wakeup(q) == 1000.0
    assert [t.id for t, _ in s.schedule(q, pm, now=1000.0)] == ["1"]


def test_fifo_ignores_priority() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(task(1, priority=0), task(2, priority=9))
    assert [t.id for t, _ in Scheduler("fifo", cfg).schedule(q, pm)] == ["1", "2"]


def test_least_utilised_pool_first_then_mapping_order() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(*[task(i, skill="backend", cpu=0.5) for i in range(4)])
    out = Scheduler("fifo", cfg).schedule(q, pm)
    # both idle: docker by mapping order; then k8s (0/10 < 1/4), and k8s stays below 1/4.
    assert [p.name for _, p in out] == ["docker", "k8s", "k8s", "k8s"]


def test_custom_policy_registered_by_name() -> None:
    class Shortest(Policy):
        name = "shortest-first"
        time_invariant = True

        def sort_key(self, task: Task, now: float) -> Any:
            return (task.estimated_duration or 0.0,)

    register_policy("shortest-first", Shortest)
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(task(1, estimated_duration=30.0), task(2, estimated_duration=5.0))
    s = Scheduler("shortest-first", cfg)
    assert [t.id for t in s.order(q, pm)] == ["2", "1"]
    assert [t.id for t, _ in s.schedule(q, pm, limit=1)] == ["2"]


def test_order_is_cached_until_the_queue_or_policy_state_changes() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(task(1), task(2), task(3, next_attempt_at=50.0))
    s = Scheduler("priority", cfg)
    assert [t.id for t in s.order(q, pm, now=10.0)] == ["1", "2", "3"]
    assert [t.id for t in s.order(q, pm, now=10.0)] == ["1", "2", "3"]
    q.update_priority("default/2", 5)
    assert [t.id for t in s.order(q, pm, now=10.0)] == ["2", "1", "3"]
    q.update_priority("default/3", 9)
    assert [t.id for t in s.order(q, pm, now=10.0)] == ["2", "1", "3"]  # still in backoff
    assert [t.id for t in s.order(q, pm, now=60.0)] == ["3", "2", "1"]  # its retry time came
    s.schedule(q, pm, now=60.0, limit=1)
    assert [t.id for t in s.order(q, pm, now=60.0)] == ["2", "1"]


def test_fair_share_order_follows_usage() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    q = queue_of(Task(id="a1", taskset="a", ready_at=1), Task(id="b1", taskset="b", ready_at=2))
    s = Scheduler("fair-share", cfg)
    assert [t.id for t in s.order(q, pm, now=0.0)] == ["a1", "b1"]
    s.record_usage("a", 100.0, now=0.0)
    assert [t.id for t in s.order(q, pm, now=0.0)] == ["b1", "a1"]


def test_a_queued_task_that_already_holds_capacity_is_dropped_not_fatal() -> None:
    cfg = config()
    pm = AgentPoolManager(cfg)
    running = task(1)
    pm.acquire("local", running)
    q = queue_of(running, task(2))
    out = Scheduler("fifo", cfg).schedule(q, pm)
    assert [t.id for t, _ in out] == ["2"] and len(q) == 0
    assert pm.get_pool_status("local").running == 2


@pytest.mark.parametrize("policy", [p.value for p in SchedulingPolicy])
def test_order_keys_are_the_keys_of_the_order(policy: str) -> None:
    """Several partitions (skills, tenants), a task in backoff and one that can never be
    placed: order_keys gives the keys of order, first computed and then cached."""
    cfg = config()
    pm = AgentPoolManager(cfg)
    tasks = [task(i, skill="ab"[i % 2], priority=i % 3, ready=float(i)) for i in range(12)]
    for i, t in enumerate(tasks):
        t.tenant = f"team-{i % 3}"
    tasks.append(task("later", next_attempt_at=50.0))
    tasks.append(task("bad", cpu=float("nan")))
    q = queue_of(*tasks)
    s = Scheduler(policy, cfg)
    keys = s.order_keys(q, pm, now=10.0)
    assert keys == [t.key for t in s.order(q, pm, now=10.0)] == s.order_keys(q, pm, now=10.0)
    assert sorted(keys) == sorted(t.key for t in tasks)
    assert keys[-2:] == ["default/later", "default/bad"]
