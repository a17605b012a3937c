"""AgentPoolManager: routing, load balancing, limits, exact counters, enable/disable, health."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.errors import DispatcherStateError, PoolNotFoundError
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, Task
from necrocode.dispatcher.pool_manager import AgentPoolManager


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def seed_config(**kw: Any) -> DispatcherConfig:
    """The seed's example pools and mapping."""
    base: dict[str, Any] = dict(
        max_global_concurrency=10,
        agent_pools=[
            AgentPool("local", PoolType.LOCAL_PROCESS, max_concurrency=2),
            AgentPool("docker", PoolType.DOCKER, max_concurrency=4, cpu_quota=4,
                      memory_quota=8192),
            AgentPool("k8s", PoolType.KUBERNETES, max_concurrency=10, cpu_quota=10,
                      memory_quota=20480),
        ],
        skill_mapping={
            "backend": ["docker", "k8s"],
            "frontend": ["docker", "k8s"],
            "database": ["docker"],
            "devops": ["k8s"],
            "default": ["local"],
        },
    )
    base.update(kw)
    return DispatcherConfig(**base)


def task(i: str, cpu: float = 1.0, mem: int = 512, skill: str = "") -> Task:
    return Task(id=i, required_skill=skill, resources=Resources(cpu, mem))


@pytest.mark.parametrize(
    ("skill", "pool"),
    [
        ("backend", "docker"),  # first of [docker, k8s], both idle
        ("devops", "k8s"),  # the only mapped pool
        ("", "local"),  # no skill -> default
        ("unknown", "local"),  # unmapped skill -> default
    ],
)
def test_get_pool_for_skill_routes(skill: str, pool: str) -> None:
    pm = AgentPoolManager(seed_config())
    got = pm.get_pool_for_skill(skill)
    assert got is not None and got.name == pool


def test_no_default_mapping_means_no_pool() -> None:
    cfg = seed_config(skill_mapping={"backend": ["docker"]})
    pm = AgentPoolManager(cfg)
    assert pm.get_pool_for_skill("gpu") is None
    assert pm.pools_for_skill("gpu") == []


def test_empty_mapping_lets_every_pool_serve_every_skill() -> None:
    pm = AgentPoolManager(seed_config(skill_mapping={}))
    assert [p.name for p in pm.pools_for_skill("anything")] == ["local", "docker", "k8s"]


def test_least_utilised_pool_wins() -> None:
    pm = AgentPoolManager(seed_config())
    pm.acquire("docker", task("1"))  # docker 1/4 = 0.25, k8s 0/10
    assert pm.get_pool_for_skill("backend").name == "k8s"  # type: ignore[union-attr]
    for i in range(3):
        pm.acquire("k8s", task(f"k{i}"))  # k8s 3/10 = 0.3 > 0.25
    assert pm.get_pool_for_skill("backend").name == "docker"  # type: ignore[union-attr]


def test_resource_aware_choice_skips_pools_without_quota() -> None:
    pm = AgentPoolManager(seed_config())
    for i in range(5):
        pm.acquire("k8s", task(f"k{i}", cpu=0.5))  # k8s 5/10
    pm.acquire("docker", task("1", cpu=3.5))  # docker 1/4, but only 0.5 cores left
    big = task("2", cpu=1.0, skill="backend")
    assert pm.get_pool_for_skill("backend").name == "docker"  # type: ignore[union-attr]
    assert pm.get_pool_for_task(big).name == "k8s"  # type: ignore[union-attr]
    assert pm.get_pool_for_skill("database", big) is None


def test_can_accept_task_checks_every_limit() -> None:
    pm = AgentPoolManager(seed_config(max_global_concurrency=3))
    local = pm.pools["local"]
    assert pm.can_accept_task(local)
    pm.acquire("local", task("1"))
    pm.acquire("local", task("2"))
    assert not pm.can_accept_task(local)  # 2/2
    assert pm.can_accept_task("docker", task("3", cpu=4))
    assert not pm.can_accept_task("docker", task("3", cpu=4.5))  # cpu quota
    assert not pm.can_accept_task("docker", task("3", mem=9000))  # memory quota
    pm.acquire("k8s", task("4"))
    assert not pm.can_accept_task("docker")  # global 3/3


def test_counters_are_exact_and_never_negative(caplog: pytest.LogCaptureFixture) -> None:
    pm = AgentPoolManager(seed_config())
    tasks = [task(str(i), cpu=0.1, mem=100) for i in range(30)]
    for x in tasks:
        pm.acquire("k8s", x)
    for x in tasks:
        x.resources.cpu = 7.0  # changed after acquire: release gives back what was taken
        assert pm.release("k8s", x)
    st = pm.get_pool_status("k8s")
    assert (st.running, st.cpu_in_use, st.memory_in_use) == (0, 0.0, 0)
    with caplog.at_level(logging.WARNING):
        assert pm.release("k8s", tasks[0]) is False
    assert "holds no capacity" in caplog.text
    assert pm.get_pool_status("k8s").running == 0 and pm.global_running == 0


def test_double_acquire_and_unknown_pool_are_refused() -> None:
    pm = AgentPoolManager(seed_config())
    pm.acquire("local", task("1"))
    with pytest.raises(DispatcherStateError, match="already holds capacity"):
        pm.acquire("local", task("1"))
    with pytest.raises(DispatcherStateError, match="in pool 'local'"):
        pm.acquire("docker", task("1"))  # not in two pools at once either
    with pytest.raises(PoolNotFoundError, match="configured pools: docker, k8s, local"):
        pm.acquire("nope", task("2"))
    assert pm.holds("local", "default/1") and pm.holders("local") == ["default/1"]
    assert pm.pool_of("default/1") == "local" and pm.pool_of("default/2") is None
    assert pm.release("docker", "default/1") is False  # wrong pool: ignored, nothing changes
    assert pm.release("local", "default/1") is True and pm.pool_of("default/1") is None


def test_pool_status_matches_seed_fields() -> None:
    pm = AgentPoolManager(seed_config())
    pm.acquire("docker", task("1", cpu=1.5, mem=1024))
    st = pm.get_pool_status("docker")
    assert st.pool_name == st.name == "docker" and st.pool_type == PoolType.DOCKER
    assert st.running == st.current_running == 1 and st.max_concurrency == 4
    assert st.utilization == 0.25 and st.cpu_in_use == 1.5 and st.cpu_quota == 4
    assert st.memory_in_use == 1024 and st.memory_quota == 8192
    assert st.enabled and st.healthy
    assert [s.pool_name for s in pm.get_all_pool_status()] == ["local", "docker", "k8s"]


def test_disabled_pool_takes_nothing_new_but_keeps_running_ones() -> None:
    cfg = seed_config()
    pm = AgentPoolManager(cfg)
    pm.acquire("docker", task("1"))
    assert pm.set_pool_enabled("docker", False) is True
    assert not pm.get_pool_status("docker").enabled
    assert pm.get_pool_for_skill("database") is None
    assert pm.get_pool_for_skill("backend").name == "k8s"  # type: ignore[union-attr]
    assert pm.get_pool_status("docker").running == 1
    assert pm.release("docker", task("1"))
    pm.enable_pool("docker")
    assert pm.get_pool_for_skill("database").name == "docker"  # type: ignore[union-attr]
    assert cfg.agent_pools[1].enabled  # the config object itself is not changed


def test_unhealthy_pool_is_skipped_while_another_can_take_the_task() -> None:
    clock = Clock()
    pm = AgentPoolManager(seed_config(), unhealthy_after=3, health_window=60, clock=clock)
    for _ in range(2):
        pm.record_launch_error("docker", "image not found")
    assert pm.is_healthy("docker")
    pm.record_launch_error("docker", "image not found")
    st = pm.get_pool_status("docker")
    assert not st.healthy and st.recent_launch_errors == 3 and st.last_error == "image not found"
    assert pm.get_pool_for_skill("backend").name == "k8s"  # type: ignore[union-attr]
    assert pm.get_pool_for_skill("database").name == "docker"  # type: ignore[union-attr]
    clock.now += 120  # errors outside the window no longer count
    assert pm.is_healthy("docker")
    clock.now -= 120
    pm.record_launch_success("docker")
    assert pm.is_healthy("docker")
    assert pm.get_pool_for_skill("backend").name == "docker"  # type: ignore[union-attr]


def test_version_changes_with_load() -> None:
    pm = AgentPoolManager(seed_config())
    v = pm.version
    pm.acquire("local", task("1"))
    assert pm.version > v
    v = pm.version
    pm.set_pool_enabled("local", False)
    assert pm.version > v


def test_acquire_shape_counts_like_acquire() -> None:
    """The Scheduler's acquire (the shape its group checked) leaves the same accounting."""
    from necrocode.dispatcher.errors import DispatcherStateError
    from necrocode.dispatcher.pool_manager import cpu_millis

    one, two = AgentPoolManager(seed_config()), AgentPoolManager(seed_config())
    t = task("a", cpu=1.5, mem=1024, skill="backend")
    one.acquire("docker", t)
    two.acquire_shape(two.get_pool("docker"), t.key, cpu_millis(1.5), 1024)
    assert one.get_pool_status("docker") == two.get_pool_status("docker")
    assert one.holders("docker") == two.holders("docker") == [t.key]
    assert one.global_running == two.global_running == 1
    with pytest.raises(DispatcherStateError):
        two.acquire_shape(two.get_pool("k8s"), t.key, 1500, 1024)
    assert two.release("docker", t) and two.global_running == 0
