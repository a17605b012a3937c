"""Property tests of the Scheduler over random workloads, checked against a simple oracle.

Random pools (limits, quotas, enabled), skill mappings, tasks (skills, shapes, priorities,
tenants, retry times) and a random interleaving of rounds, completions, new tasks, priority
changes and removals. Every round is replayed decision by decision against an oracle that keeps
its own counters:

- no pool limit, quota or the global limit is ever exceeded;
- every task is handed out at most once, only if queued and not in retry backoff;
- the pool is the least utilised mapped pool that fits (ties by mapping order), healthy pools
  before unhealthy ones;
- among the tasks placeable at that moment, the policy's order holds;
- a round without a limit leaves no placeable task behind (work conserving).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import AgentPool, Resources, Task
from necrocode.dispatcher.policies import FairSharePolicy
from necrocode.dispatcher.pool_manager import AgentPoolManager, cpu_millis
from necrocode.dispatcher.scheduler import Scheduler
from necrocode.dispatcher.task_queue import TaskQueue

POLICIES = ["fifo", "priority", "skill-based", "fair-share"]
SKILLS = ["a", "b", "c", ""]
SHAPES = [(0.5, 256), (1.0, 1024), (2.0, 2048), (4.0, 4096)]


@dataclass
class Oracle:
    """Counters kept independently of the AgentPoolManager."""

    pools: dict[str, AgentPool]
    max_global: int
    running: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, int] = field(default_factory=dict)
    mem: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.pools:
            self.running.setdefault(name, 0)
            self.cpu.setdefault(name, 0)
            self.mem.setdefault(name, 0)

    @property
    def total(self) -> int:
        return sum(self.running.values())

    def fits(self, name: str, task: Task) -> bool:
        p = self.pools[name]
        if not p.enabled or self.running[name] >= p.max_concurrency:
            return False
        if self.total >= self.max_global:
            return False
        if p.cpu_quota is not None and (
            self.cpu[name] + cpu_millis(task.resources.cpu) > cpu_millis(p.cpu_quota)
        ):
            return False
        return p.memory_quota is None or self.mem[name] + task.resources.memory_mb <= (
            p.memory_quota
        )

    def choices(self, pm: AgentPoolManager, task: Task) -> list[str]:
        return [p.name for p in pm.pools_for_skill(task.required_skill) if self.fits(p.name, task)]

    def best(self, pm: AgentPoolManager, task: Task) -> str | None:
        names = self.choices(pm, task)
        if not names:
            return None
        healthy = [n for n in names if pm.is_healthy(n)]
        names = healthy or names  # unhealthy pools only when no healthy one fits
        return min(names, key=lambda n: (self.running[n] / self.pools[n].max_concurrency,
                                         names.index(n)))

    def take(self, name: str, task: Task, sign: int = 1) -> None:
        self.running[name] += sign
        self.cpu[name] += sign * cpu_millis(task.resources.cpu)
        self.mem[name] += sign * task.resources.memory_mb


pool_st = st.builds(
    lambda cap, cpu, mem, on: (cap, cpu, mem, on),
    st.sampled_from([0, 1, 2, 3, 4, 5]),
    st.sampled_from([None, None, 1.0, 2.0, 3.5, 6.0, 10.0]),
    st.sampled_from([None, None, 1024, 3000, 8192, 20000]),
    st.sampled_from([True, True, True, False]),
)

op_st = st.tuples(st.sampled_from(
    ["round", "round", "round", "done", "done", "done", "add", "prio", "rm", "tick", "sick"]),
                  st.integers(0, 10_000))


@st.composite
def workloads(draw: Any) -> dict[str, Any]:
    pools = draw(st.lists(pool_st, min_size=1, max_size=4))
    names = [f"p{i}" for i in range(len(pools))]
    mapping: dict[str, list[str]] = {}
    for skill in ["a", "b", "c", "default"]:
        if draw(st.integers(0, 3)):
            order = draw(st.permutations(names))
            mapping[skill] = list(order)[: draw(st.integers(1, len(order)))]
    return {
        "pools": [AgentPool(n, max_concurrency=c, cpu_quota=q, memory_quota=m, enabled=e)
                  for n, (c, q, m, e) in zip(names, pools, strict=True)],
        "mapping": mapping,
        "max_global": draw(st.integers(1, 12)),
        "seed": draw(st.integers(0, 2**16)),
        "initial": draw(st.integers(3, 40)),
        "ops": draw(st.lists(op_st, min_size=1, max_size=40)),
        "aging": draw(st.sampled_from([0.0, 0.0, 30.0])),
    }


def new_task(rng: random.Random, i: int, now: float) -> Task:
    cpu, mem = rng.choice(SHAPES)
    return Task(
        id=str(i),
        taskset=rng.choice(["x", "y"]),
        required_skill=rng.choice(SKILLS),
        priority=rng.randint(-2, 3),
        tenant=rng.choice(["t0", "t1", "t2"]),
        resources=Resources(cpu, mem),
        ready_at=now - rng.randint(0, 5),
        next_attempt_at=rng.choice([None, None, None, now + rng.randint(-3, 10)]),
    )


def check_round(
    policy_name: str, s: Scheduler, pm: AgentPoolManager, oracle: Oracle,
    before: dict[str, Task], out: list[tuple[Task, AgentPool]], now: float, limited: bool,
    usage: dict[str, float],
) -> None:
    remaining = dict(before)
    policy = s.policy

    def placeable(t: Task) -> bool:
        if t.next_attempt_at is not None and t.next_attempt_at > now:
            return False
        return oracle.best(pm, t) is not None

    for task, pool in out:
        assert task.key in remaining, f"{task.key} handed out twice or never queued"
        assert task.next_attempt_at is None or task.next_attempt_at <= now
        assert oracle.fits(pool.name, task), f"{pool.name} over a limit with {task.key}"
        assert pool.name == oracle.best(pm, task)
        cands = [t for t in remaining.values() if placeable(t)]
        if policy_name == "fair-share":
            assert isinstance(policy, FairSharePolicy)
            share = {t.tenant: usage.get(t.tenant, 0.0) / policy.weight(t.tenant) for t in cands}
            assert share[task.tenant] <= min(share.values()) + 1e-6
            cands = [t for t in cands if t.tenant == task.tenant]
        elif policy_name == "skill-based":
            cands = [t for t in cands if t.required_skill == task.required_skill]
        best = min(policy.sort_key(t, now) for t in cands)
        assert policy.sort_key(task, now) <= best
        del remaining[task.key]
        oracle.take(pool.name, task)
        if policy_name == "fair-share":
            usage[task.tenant] = usage.get(task.tenant, 0.0) + s.config.fair_share_entry_charge
    if not limited:
        left = [t.key for t in remaining.values() if placeable(t)]
        assert not left, f"placeable tasks left behind: {left}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from(POLICIES))
def test_random_workloads_respect_limits_and_order(w: dict[str, Any], policy_name: str) -> None:
    cfg = DispatcherConfig(
        agent_pools=w["pools"], skill_mapping=w["mapping"], max_global_concurrency=w["max_global"],
        priority_aging_seconds=w["aging"], fair_share_weights={"t0": 1, "t1": 1, "t2": 2},
    )
    pm = AgentPoolManager(cfg)
    s = Scheduler(policy_name, cfg)
    oracle = Oracle(dict(pm.pools), w["max_global"])
    rng = random.Random(w["seed"])
    q = TaskQueue()
    now = 1000.0
    n = 0
    for _ in range(w["initial"]):
        q.enqueue(new_task(rng, n, now))
        n += 1
    running: list[tuple[Task, AgentPool]] = []
    handed: set[str] = set()
    for op, arg in w["ops"]:
        if op == "round":
            before = {t.key: t for t in q.tasks()}
            usage = {t: s.tenant_usage(t, now) for t in ("t0", "t1", "t2")}
            limit = None if arg % 3 else 1 + arg % 4
            out = s.schedule(q, pm, now=now, limit=limit)
            assert limit is None or len(out) <= limit
            check_round(policy_name, s, pm, oracle, before, out, now,
                        limited=limit is not None and len(out) == limit, usage=usage)
            for task, _pool in out:
                assert task.key not in handed
                handed.add(task.key)
                assert task.key not in q
            running.extend(out)
        elif op == "done" and running:
            task, pool = running.pop(arg % len(running))
            assert pm.release(pool.name, task)
            oracle.take(pool.name, task, -1)
            s.record_usage(task.tenant, float(arg % 100), now)
        elif op == "add":
            for _ in range(1 + arg % 5):
                q.enqueue(new_task(rng, n, now))
                n += 1
        elif op == "prio" and len(q):
            keys = sorted(t.key for t in q.tasks())
            q.update_priority(keys[arg % len(keys)], arg % 7 - 3)
        elif op == "rm" and len(q):
            keys = sorted(t.key for t in q.tasks())
            q.remove(keys[arg % len(keys)])
        elif op == "tick":
            now += arg % 13
        elif op == "sick":
            name = sorted(pm.pools)[arg % len(pm.pools)]
            if arg % 2:
                for _ in range(3):
                    pm.record_launch_error(name, "boom")
            else:
                pm.record_launch_success(name)
        for name in pm.pools:
            status = pm.get_pool_status(name)
            assert status.running == oracle.running[name]
            assert cpu_millis(status.cpu_in_use) == oracle.cpu[name]
            assert status.memory_in_use == oracle.mem[name]
        assert pm.global_running == oracle.total <= w["max_global"]


def simulate_fair_share(durations: dict[str, tuple[float, float]], seed: int = 42
                        ) -> dict[str, float]:
    """Weights 1:1:2, 10,000 / 100 / 100 tasks, 8 runners, a virtual clock.

    Returns each tenant's share of the runner-seconds used until the first tenant has nothing
    left to queue (all three are backlogged until then).
    """
    cfg = DispatcherConfig(
        agent_pools=[AgentPool("p", max_concurrency=8)],
        skill_mapping={"default": ["p"]},
        max_global_concurrency=8,
        scheduling_policy="fair-share",
        fair_share_weights={"big": 1, "small": 1, "heavy": 2},
        fair_share_half_life=3600.0,
        fair_share_entry_charge=60.0,
    )
    rng = random.Random(seed)
    q = TaskQueue()
    counts = {"big": 10_000, "small": 100, "heavy": 100}
    n = 0
    for tenant, count in counts.items():  # the big tenant submits first, all at once
        for _ in range(count):
            q.enqueue(Task(id=str(n), taskset=tenant, ready_at=0.0, priority=0))
            n += 1
    pm = AgentPoolManager(cfg)
    s = Scheduler(cfg.scheduling_policy, cfg)
    now = 0.0
    ends: list[tuple[float, int, Task, float]] = []
    runs: list[tuple[str, float, float]] = []
    left = dict(counts)
    while all(left.values()):
        for task, _pool in s.schedule(q, pm, now=now):
            duration = rng.uniform(*durations[task.tenant])
            heapq.heappush(ends, (now + duration, n, task, duration))
            runs.append((task.tenant, now, now + duration))
            n += 1
            left[task.tenant] -= 1
        now, _, done, ran = heapq.heappop(ends)
        pm.release("p", done)
        s.record_usage(done.tenant, ran, now)
    used = dict.fromkeys(counts, 0.0)
    for tenant, start, end in runs:
        used[tenant] += max(0.0, min(end, now) - start)
    total = sum(used.values())
    return {t: used[t] / total for t in used}


EXPECTED = {"big": 0.25, "small": 0.25, "heavy": 0.5}


def test_fair_share_weights_hold_while_all_tenants_are_backlogged() -> None:
    """Weights 1:1:2, 10,000 / 100 / 100 tasks: capacity within 5% of 1:1:2."""
    shares = simulate_fair_share({t: (60.0, 180.0) for t in EXPECTED})
    for tenant, share in shares.items():
        assert abs(share - EXPECTED[tenant]) <= 0.05 * EXPECTED[tenant], shares


@pytest.mark.parametrize(
    "durations",
    [
        {"big": (300.0, 600.0), "small": (30.0, 60.0), "heavy": (60.0, 180.0)},  # big runs long
        {"big": (30.0, 60.0), "small": (300.0, 600.0), "heavy": (60.0, 180.0)},  # small runs long
    ],
)
def test_fair_share_counts_runner_seconds_not_tasks(
    durations: dict[str, tuple[float, float]],
) -> None:
    """Tenants whose tasks run 10x longer still get their weight's share of runner-seconds."""
    shares = simulate_fair_share(durations)
    for tenant, share in shares.items():
        assert abs(share - EXPECTED[tenant]) <= 0.1 * EXPECTED[tenant], shares


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 60), st.sampled_from(POLICIES),
       st.sampled_from([0.0, 20.0]))
def test_order_predicts_what_schedule_hands_out(seed: int, n: int, policy_name: str,
                                                aging: float) -> None:
    cfg = DispatcherConfig(
        agent_pools=[AgentPool("p", max_concurrency=1000)], skill_mapping={},
        max_global_concurrency=1000, priority_aging_seconds=aging,
        fair_share_weights={"t0": 1, "t1": 1, "t2": 2},
    )
    rng = random.Random(seed)
    q = TaskQueue()
    for i in range(n):
        q.enqueue(new_task(rng, i, 1000.0))
    s = Scheduler(policy_name, cfg)
    s.record_usage("t1", float(seed % 300), now=900.0)
    predicted = [t.key for t in s.order(q, AgentPoolManager(cfg), now=1000.0)]
    handed = [t.key for t, _ in s.schedule(q, AgentPoolManager(cfg), now=1000.0)]
    assert handed == predicted[: len(handed)]
    assert {t.key for t in q.tasks()} == set(predicted[len(handed):])  # only backoff left
    assert all((t.next_attempt_at or 0.0) > 1000.0 for t in q.tasks())
