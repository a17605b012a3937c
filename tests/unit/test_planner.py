"""Dry run of the real scheduler on a virtual clock (B2: necroui plan)."""

from __future__ import annotations

import pytest
from necrocode.dispatcher.config_loader import default_config
from necrocode.dispatcher.models import AgentPool, Task, TaskState
from necrocode.dispatcher.planner import plan_tasks


def t(id: str, seconds: float, *deps: str, **kw: object) -> Task:
    return Task(id=id, title=id, taskset="s", dependencies=list(deps),  # type: ignore[arg-type]
                estimated_duration=seconds, **kw)


def test_pool_limit_sets_the_makespan() -> None:
    config = default_config()
    config.agent_pools[0].max_concurrency = 2
    tasks = [t(str(i), 10) for i in range(4)] + [t(str(i), 10, str(i - 4)) for i in range(4, 8)]
    plan = plan_tasks(tasks, config)
    assert plan.makespan == 40  # 8 tasks of 10 s on 2 runners
    assert plan.pool_utilisation == {"local": 1.0}
    assert plan.peak_running == 2
    assert plan.critical_length == 20
    assert plan.never_run == {}
    assert len(plan.runs) == 8


def test_dependencies_and_priority_order() -> None:
    config = default_config()
    config.agent_pools[0].max_concurrency = 1
    plan = plan_tasks([t("low", 5), t("high", 5, priority=9), t("after", 1, "low")], config)
    assert [r.key for r in plan.runs] == ["s/high", "s/low", "s/after"]
    assert plan.runs[-1].start == 10 and plan.makespan == 11


def test_global_limit_and_already_done() -> None:
    config = default_config()
    config.max_global_concurrency = 1
    plan = plan_tasks([t("a", 3, state=TaskState.DONE), t("b", 3, "a"), t("c", 3)], config)
    assert plan.already_done == 1
    assert plan.makespan == 6
    assert plan.peak_running == 1


def test_tasks_that_never_run_say_why() -> None:
    config = default_config()
    config.agent_pools.append(AgentPool(name="small", max_concurrency=1, cpu_quota=1))
    config.skill_mapping = {"default": ["local"], "big": ["small"]}
    del config.skill_mapping["default"]
    config.skill_mapping["x"] = ["local"]
    tasks = [t("ok", 1, required_skill="x"), t("huge", 1, required_skill="big",
                                                resources={"cpu": 4}),
             t("nopool", 1), t("after", 1, "huge"), t("gone", 1, state=TaskState.FAILED)]
    plan = plan_tasks(tasks, config)
    assert [r.key for r in plan.runs] == ["s/ok"]
    assert set(plan.never_run) == {"s/huge", "s/nopool", "s/after", "s/gone"}
    assert plan.never_run["s/after"] == "waits on tasks that never run"
    assert plan.never_run["s/gone"] == "already failed"
    assert "quota" in plan.never_run["s/huge"] or "cpu" in plan.never_run["s/huge"]


def test_cycle_is_reported_not_run() -> None:
    plan = plan_tasks([t("a", 1, "b"), t("b", 1, "a"), t("c", 1)], default_config())
    assert plan.never_run == {"s/a": "part of a dependency cycle",
                              "s/b": "part of a dependency cycle"}
    assert [r.key for r in plan.runs] == ["s/c"]


@pytest.mark.parametrize("policy", ["fifo", "priority", "skill-based", "fair-share"])
def test_every_policy_runs_everything(policy: str) -> None:
    config = default_config()
    config.scheduling_policy = policy  # type: ignore[assignment]
    tasks = [t(str(i), 1 + i % 3, tenant=f"team{i % 2}") for i in range(12)]
    plan = plan_tasks(tasks, config)
    assert len(plan.runs) == 12 and plan.never_run == {}
