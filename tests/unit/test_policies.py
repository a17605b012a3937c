"""Each scheduling policy's order, aging, fair-share accounting and the policy registry."""

from __future__ import annotations

from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.errors import DispatcherError
from necrocode.dispatcher.models import AgentPool, SchedulingPolicy, Task
from necrocode.dispatcher.policies import (
    FairSharePolicy,
    FifoPolicy,
    Policy,
    PriorityPolicy,
    SkillBasedPolicy,
    available_policies,
    get_policy_class,
    make_policy,
    register_policy,
)
from necrocode.dispatcher.pool_manager import AgentPoolManager
from necrocode.dispatcher.scheduler import Scheduler
from necrocode.dispatcher.task_queue import TaskQueue


def t(i: str, *, skill: str = "", priority: int = 0, ready: float = 0.0, tenant: str = "",
      **kw: Any) -> Task:
    return Task(id=i, required_skill=skill, priority=priority, ready_at=ready, tenant=tenant, **kw)


def cfg(**kw: Any) -> DispatcherConfig:
    base: dict[str, Any] = dict(
        agent_pools=[AgentPool("a", max_concurrency=100), AgentPool("b", max_concurrency=100)],
        skill_mapping={"x": ["a"], "y": ["b"], "default": ["a"]},
        max_global_concurrency=200,
    )
    base.update(kw)
    return DispatcherConfig(**base)


def dispatch(policy: str, tasks: list[Task], config: DispatcherConfig | None = None,
             now: float = 100.0, limit: int | None = None) -> list[str]:
    config = config or cfg()
    q = TaskQueue()
    for task in tasks:
        q.enqueue(task)
    s = Scheduler(policy, config)
    order = [x.id for x in s.order(q, now=now)]
    got = [x.id for x, _ in s.schedule(q, AgentPoolManager(config), now=now, limit=limit)]
    assert got == order[: len(got)], "order() must predict schedule()"
    return got


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("fifo", ["old", "mid", "new"]),  # ready time only
        ("priority", ["new", "mid", "old"]),  # priority first
        ("skill-based", ["new", "mid", "old"]),  # one skill: same as priority
        ("fair-share", ["new", "mid", "old"]),  # one tenant: priority within it
    ],
)
def test_basic_order(policy: str, expected: list[str]) -> None:
    tasks = [t("old", priority=0, ready=1), t("mid", priority=1, ready=2),
             t("new", priority=2, ready=3)]
    assert dispatch(policy, tasks) == expected


def test_priority_ties_break_by_ready_time() -> None:
    tasks = [t("b", priority=1, ready=5), t("a", priority=1, ready=4), t("c", priority=1, ready=6)]
    assert dispatch("priority", tasks) == ["a", "b", "c"]


def test_priority_aging_lets_old_low_priority_tasks_through() -> None:
    config = cfg(priority_aging_seconds=10.0)
    # waited 100 s at priority 0 -> effective 10; fresh priority 5 -> effective 5
    tasks = [t("old-low", priority=0, ready=0.0), t("new-high", priority=5, ready=100.0)]
    assert dispatch("priority", tasks, config, now=100.0) == ["old-low", "new-high"]
    assert dispatch("priority", tasks[::-1], cfg(), now=100.0) == ["new-high", "old-low"]
    policy = PriorityPolicy(config)
    assert policy.effective_priority(tasks[0], 100.0) == pytest.approx(10.0)


def test_aging_key_is_time_invariant() -> None:
    policy = PriorityPolicy(cfg(priority_aging_seconds=30.0))
    a, b = t("a", priority=3, ready=0.0), t("b", priority=0, ready=50.0)
    for now in (60.0, 1000.0, 10_000.0):
        by_effective = sorted([a, b], key=lambda x: -policy.effective_priority(x, now))
        by_key = sorted([a, b], key=lambda x: policy.sort_key(x, 0.0))
        assert by_effective == by_key


def test_skill_based_takes_turns_between_skills() -> None:
    tasks = [t(f"x{i}", skill="x", priority=9) for i in range(3)]
    tasks += [t(f"y{i}", skill="y", priority=0) for i in range(3)]
    got = dispatch("skill-based", tasks)
    assert got == ["x0", "y0", "x1", "y1", "x2", "y2"]
    # priority (not skill-based) would give every x first
    assert dispatch("priority", tasks)[:3] == ["x0", "x1", "x2"]


def test_fair_share_interleaves_tenants_by_weight() -> None:
    config = cfg(fair_share_weights={"heavy": 2.0}, fair_share_entry_charge=10.0)
    tasks = [t(f"h{i}", tenant="heavy", ready=i) for i in range(4)]
    tasks += [t(f"l{i}", tenant="light", ready=i) for i in range(4)]
    # usage/weight after each pick: heavy 5, light 10, heavy 10, heavy 15 (tie -> name), ...
    got = dispatch("fair-share", tasks, config, limit=6)
    assert got == ["h0", "l0", "h1", "h2", "l1", "h3"]


def test_fair_share_usage_decays_with_half_life() -> None:
    policy = FairSharePolicy(cfg(fair_share_half_life=100.0))
    policy.record_usage("a", 80.0, now=0.0)
    assert policy.usage("a", 0.0) == pytest.approx(80.0)
    assert policy.usage("a", 100.0) == pytest.approx(40.0)
    assert policy.usage("a", 300.0) == pytest.approx(10.0)
    policy.record_usage("a", 10.0, now=300.0)
    assert policy.usage("a", 300.0) == pytest.approx(20.0)


def test_fair_share_rebase_keeps_usage() -> None:
    policy = FairSharePolicy(cfg(fair_share_half_life=1.0))
    policy.record_usage("a", 64.0, now=0.0)
    policy.record_usage("b", 1.0, now=100.0)  # 100 half-lives later: forces a rebase
    assert policy.usage("b", 100.0) == pytest.approx(1.0)
    assert policy.usage("a", 100.0) == pytest.approx(64.0 * 2.0**-100)


def test_fair_share_entry_charge_stops_a_burst_from_jumping_ahead() -> None:
    config = cfg(fair_share_entry_charge=60.0)
    s = Scheduler("fair-share", config)
    pm = AgentPoolManager(config)
    q = TaskQueue()
    for i in range(50):
        q.enqueue(t(f"burst{i}", tenant="burst", ready=float(i)))
    q.enqueue(t("small0", tenant="small", ready=100.0))
    q.enqueue(t("small1", tenant="small", ready=100.0))
    got = [x.id for x, _ in s.schedule(q, pm, now=200.0, limit=4)]
    assert got[:2] in (["burst0", "small0"], ["small0", "burst0"])
    assert "small1" in got
    assert s.tenant_usage("burst", 200.0) == pytest.approx(120.0)


def test_fair_share_record_usage_through_scheduler() -> None:
    s = Scheduler(SchedulingPolicy.FAIR_SHARE, cfg(fair_share_half_life=0.0))
    s.record_usage("a", 30.0, now=5.0)
    assert s.tenant_usage("a", 1e9) == 30.0  # half-life 0: no decay
    assert Scheduler("fifo").tenant_usage("a") == 0.0


def test_registry_and_make_policy() -> None:
    assert {"fifo", "priority", "skill-based", "fair-share"} <= set(available_policies())
    assert get_policy_class(SchedulingPolicy.FIFO) is FifoPolicy
    assert get_policy_class("skill-based") is SkillBasedPolicy
    assert isinstance(make_policy(None, cfg(scheduling_policy="fair-share")), FairSharePolicy)
    with pytest.raises(DispatcherError, match="unknown scheduling policy 'nope'"):
        get_policy_class("nope")
    with pytest.raises(TypeError):
        register_policy("bad", dict)  # type: ignore[arg-type]


def test_custom_time_dependent_policy_is_sorted_each_round() -> None:
    class Deadline(Policy):
        """Most urgent deadline (metadata) first; depends on now."""

        def sort_key(self, task: Task, now: float) -> Any:
            return (task.metadata["deadline"] - now,)

    register_policy("deadline-test", Deadline)
    tasks = [t("late", metadata={"deadline": 500.0}), t("soon", metadata={"deadline": 150.0})]
    assert dispatch("deadline-test", tasks) == ["soon", "late"]
    config = cfg(scheduling_policy="deadline-test")
    assert isinstance(Scheduler(None, config).policy, Deadline)


def test_fair_share_counts_running_runners_until_released() -> None:
    config = cfg(fair_share_entry_charge=60.0, fair_share_half_life=0.0)
    s = Scheduler("fair-share", config)
    pm = AgentPoolManager(config)
    q = TaskQueue()
    q.enqueue(t("a1", tenant="a"))
    q.enqueue(t("a2", tenant="a"))
    (first, pool), (second, _) = s.schedule(q, pm, now=1000.0)
    assert s.tenant_usage("a", 1000.0) == 120.0  # two runners, each at least the entry charge
    assert s.tenant_usage("a", 1030.0) == 120.0  # younger than the charge: still 60 each
    assert s.tenant_usage("a", 1100.0) == 200.0  # 100 s each now
    pm.release(pool.name, first)  # the scheduler hears of releases from the pool manager
    assert s.tenant_usage("a", 1100.0) == 100.0
    s.record_usage("a", 100.0, now=1100.0)  # the engine reports the finished runner's time
    assert s.tenant_usage("a", 1100.0) == 200.0
    pm.release(pool.name, second)
    assert s.tenant_usage("a", 1200.0) == 100.0
