"""MetricsCollector: hooks, gauges from snapshots, get_metrics() vs. the exposition."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from necrocode.dispatcher import MetricsCollector
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.metrics import (
    FAILURE_REASONS,
    PREFIX,
    _LabelGuard,
    normalize_failure_reason,
    normalize_outcome,
)
from necrocode.dispatcher.models import (
    AgentPool,
    PoolStatus,
    PoolType,
    RunnerState,
    Task,
    TaskState,
)
from necrocode.dispatcher.snapshot import (
    Counters,
    Pending,
    PendingReason,
    QueuedTaskView,
    RunningTaskView,
    Snapshot,
)
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

MIB = 1024 * 1024


@pytest.fixture
def config() -> DispatcherConfig:
    return DispatcherConfig(
        agent_pools=[
            AgentPool("local", PoolType.LOCAL_PROCESS, max_concurrency=2),
            AgentPool("docker", PoolType.DOCKER, max_concurrency=4, cpu_quota=4,
                      memory_quota=8192),
        ],
        skill_mapping={"backend": ["docker"], "default": ["local"]},
    )


def queued(key: str, skill: str = "", state: TaskState = TaskState.READY) -> QueuedTaskView:
    taskset, _, task_id = key.rpartition("/")
    return QueuedTaskView(
        key=key, taskset=taskset, task_id=task_id, title=key, state=state, skill=skill,
        tenant=taskset, priority=0, ready_at=0.0, created_at=0.0, attempts=0,
        in_queue=state == TaskState.READY,
        pending=Pending(PendingReason.QUEUED, "queued"))


def running(key: str, pool: str, state: RunnerState = RunnerState.RUNNING) -> RunningTaskView:
    taskset, _, task_id = key.rpartition("/")
    return RunningTaskView(
        key=key, taskset=taskset, task_id=task_id, title=key, skill="", tenant=taskset,
        priority=0, runner_id=f"r-{task_id}", pool=pool, slot_id=None, attempt=1,
        started_at=0.0, last_sign_of_life=0.0, runner_state=state)


def pool_status(name: str, running_: int, max_: int, cpu: float = 0.0, mem_mb: int = 0,
                enabled: bool = True, healthy: bool = True) -> PoolStatus:
    return PoolStatus(
        pool_name=name, pool_type=PoolType.LOCAL_PROCESS, running=running_, max_concurrency=max_,
        utilization=running_ / max_, cpu_in_use=cpu, cpu_quota=None, memory_in_use=mem_mb,
        memory_quota=None, enabled=enabled, healthy=healthy)


def snapshot(version: int = 1, state: str = "running", **kw: Any) -> Snapshot:
    return Snapshot(version=version, taken_at=0.0, state=state, policy="priority",
                    max_global_concurrency=10, registry_path=":memory:", api_url=None, **kw)


def exposition_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the text format, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: MetricsCollector, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(PREFIX + name, labels)


# --- the exposition exists from the start ------------------------------------------------------
def test_fresh_collector_exports_config_pools_and_skills_at_zero(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    text = m.export_prometheus()
    assert text.strip()
    assert value(m, "pool_max_concurrency", pool="docker") == 4
    assert value(m, "running_tasks", pool="local") == 0
    assert value(m, "queued_tasks", skill="backend") == 0
    assert value(m, "queued_tasks", skill="default") == 0
    assert value(m, "pool_memory_quota_bytes", pool="docker") == 8192 * MIB
    assert value(m, "pool_cpu_quota_cores", pool="docker") == 4
    assert value(m, "pool_cpu_quota_cores", pool="local") is None  # no quota, no series
    assert value(m, "paused") == 0
    assert value(m, "assignments_total", pool="local") == 0  # counters seeded for rate()
    assert value(m, "launch_errors_total", pool="docker") == 0
    assert value(m, "failures_total", reason="other") == 0
    assert value(m, "build_info", version=m.get_metrics()["build_info"]["version"]) == 1


def test_without_config_the_exposition_is_not_empty() -> None:
    m = MetricsCollector()
    m.collect()  # the seed's troubleshooting case: collect() then export must give something
    text = m.export_prometheus()
    assert f"{PREFIX}paused 0.0" in text
    assert f"{PREFIX}build_info" in text
    assert f"{PREFIX}task_wait_seconds_count 0.0" in text


# --- isolation ---------------------------------------------------------------------------------
def test_two_collectors_in_one_process_do_not_collide(config: DispatcherConfig) -> None:
    a = MetricsCollector(config)
    b = MetricsCollector(config)  # would raise "Duplicated timeseries" on a shared registry
    a.record_assignment(Task(id="1"), "local")
    a.record_assignment(Task(id="2"), "local")
    b.record_assignment(Task(id="1"), "local")
    assert value(a, "assignments_total", pool="local") == 2
    assert value(b, "assignments_total", pool="local") == 1
    assert REGISTRY.get_sample_value(PREFIX + "assignments_total", {"pool": "local"}) is None


def test_a_given_registry_is_used() -> None:
    reg = CollectorRegistry()
    m = MetricsCollector(registry=reg)
    m.record_retry(Task(id="1"))
    assert m.registry is reg
    assert reg.get_sample_value(PREFIX + "retries_total") == 1


# --- hooks -------------------------------------------------------------------------------------
def test_engine_hooks_count_and_observe(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    docker = config.get_pool("docker")
    t = Task(id="1.1", taskset="chat")
    m.record_assignment(t, docker)  # an AgentPool ...
    m.record_assignment(t, "local")  # ... or a pool name
    m.record_start(t, docker, 2.0)
    m.record_start(t, "local", -0.5)  # clock skew is clamped to 0
    m.record_finish(t, docker, "done", 12.0)
    m.record_finish(t, docker, RunnerState.FAILED, 1.0)
    m.record_finish(t, "local", TaskState.CANCELLED, 0.2)
    m.record_retry(t)
    m.record_failure("exit code 3")
    m.record_failure("heartbeat timeout after 60s")
    m.record_heartbeat_timeout(docker)
    m.record_launch_error("docker")
    m.observe_round(0.003)

    assert value(m, "assignments_total", pool="docker") == 1
    assert value(m, "assignments_total", pool="local") == 1
    assert value(m, "task_wait_seconds_count") == 2
    assert value(m, "task_wait_seconds_sum") == 2.0
    assert value(m, "task_run_seconds_count", pool="docker", outcome="done") == 1
    assert value(m, "task_run_seconds_sum", pool="docker", outcome="done") == 12.0
    assert value(m, "task_run_seconds_count", pool="docker", outcome="failed") == 1
    assert value(m, "task_run_seconds_count", pool="local", outcome="cancelled") == 1
    assert value(m, "retries_total") == 1
    assert value(m, "failures_total", reason="exit_code") == 1
    assert value(m, "failures_total", reason="heartbeat_timeout") == 1
    assert value(m, "heartbeat_timeouts_total", pool="docker") == 1
    assert value(m, "launch_errors_total", pool="docker") == 1
    assert value(m, "scheduling_round_seconds_count") == 1

    d = m.get_metrics()
    assert d["assignments_total"] == {"docker": 1, "local": 1}
    assert d["task_wait_seconds"]["count"] == 2
    assert d["task_wait_seconds"]["buckets"]["+Inf"] == 2
    assert d["task_run_seconds"]["docker"]["done"]["sum"] == 12.0
    assert d["retries_total"] == 1
    assert d["failures_total"]["exit_code"] == 1
    assert set(d["failures_total"]) == set(FAILURE_REASONS)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("exit code 1", "exit_code"),  # the agent's own failure
        ("agent exited with status 2", "exit_code"),
        ("killed by signal 9", "killed"),
        ("OOMKilled", "killed"),  # Kubernetes / Docker wording
        ("task timeout (600s)", "timeout"),
        ("Timed out after 10s", "timeout"),
        ("heartbeat timeout", "heartbeat_timeout"),  # beats "timeout": checked first
        ("runner lost", "lost"),
        ("container vanished", "lost"),
        ("RunnerLaunchError: docker daemon unreachable", "launch_error"),
        ("invalid task definition", "invalid_task"),
        ("non_retryable", "invalid_task"),
        ("timeout", "timeout"),  # already normalised values pass through
        ("", "other"),
        (None, "other"),
        ("the moon is full", "other"),  # anything else: bounded
    ],
)
def test_failure_reasons_are_normalised_into_a_fixed_set(reason: object, expected: str) -> None:
    assert normalize_failure_reason(reason) == expected
    assert expected in FAILURE_REASONS


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("done", "done"),
        ("completed", "done"),  # RunnerState wording
        (RunnerState.COMPLETED, "done"),
        (TaskState.DONE, "done"),
        ("failed", "failed"),
        (RunnerState.LOST, "lost"),
        ("canceled", "cancelled"),  # US spelling
        ("timed_out", "timeout"),
        ("weird", "other"),
    ],
)
def test_outcomes_are_normalised(outcome: object, expected: str) -> None:
    assert normalize_outcome(outcome) == expected


# --- gauges from snapshots ---------------------------------------------------------------------
def test_gauges_follow_the_snapshot(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    snap = snapshot(
        version=3,
        state="paused",
        pools=(pool_status("local", 1, 2, cpu=1.0, mem_mb=512),
               pool_status("docker", 4, 4, cpu=3.5, mem_mb=2048, healthy=False)),
        queued=(queued("chat/1", "backend"), queued("chat/2", "backend"), queued("chat/3"),
                queued("chat/4", "frontend"),
                queued("chat/9", "backend", state=TaskState.BLOCKED)),  # not queued: BLOCKED
        running=(running("chat/5", "local"),
                 running("chat/6", "docker", RunnerState.LAUNCHING)),
        counters=Counters(total=9, blocked=1, ready=4, running=2, done=2),
    )
    m.update_from_snapshot(snap)
    assert value(m, "queued_tasks", skill="backend") == 2
    assert value(m, "queued_tasks", skill="default") == 1  # no skill -> "default"
    assert value(m, "queued_tasks", skill="frontend") == 1
    assert value(m, "running_tasks", pool="docker") == 4
    assert value(m, "pool_utilization_ratio", pool="local") == 0.5
    assert value(m, "pool_cpu_cores_in_use", pool="docker") == 3.5
    assert value(m, "pool_memory_bytes_in_use", pool="local") == 512 * MIB
    assert value(m, "pool_healthy", pool="docker") == 0
    assert value(m, "runners", state="running") == 1
    assert value(m, "runners", state="launching") == 1
    assert value(m, "runners", state="lost") == 0
    assert value(m, "tasks", state="done") == 2
    assert value(m, "paused") == 1
    assert m.get_metrics()["queue_size"] == 4
    assert m.get_metrics()["running_total"] == 5

    # the next snapshot replaces every gauge; skills that emptied go to 0, config ones stay
    m.update_from_snapshot(snapshot(version=4, queued=(queued("chat/7", "backend"),)))
    assert value(m, "queued_tasks", skill="backend") == 1
    assert value(m, "queued_tasks", skill="frontend") is None
    assert value(m, "queued_tasks", skill="default") == 0
    assert value(m, "running_tasks", pool="docker") == 0
    assert value(m, "pool_max_concurrency", pool="docker") == 4
    assert value(m, "paused") == 0


def test_pools_seen_in_snapshots_get_their_counters_seeded() -> None:
    m = MetricsCollector()  # no config: pools are only known from the snapshot
    m.update_from_snapshot(snapshot(pools=(pool_status("gpu", 0, 1),)))
    m.export_prometheus()
    assert value(m, "assignments_total", pool="gpu") == 0
    assert value(m, "heartbeat_timeouts_total", pool="gpu") == 0


class FakePoolManager:
    """Just what MetricsCollector.collect() reads of an AgentPoolManager."""

    def __init__(self, statuses: list[PoolStatus]) -> None:
        self.statuses = statuses

    def get_all_pool_status(self) -> list[PoolStatus]:
        return list(self.statuses)


def test_collect_pulls_from_bound_sources(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    snaps = [snapshot(version=1, queued=(queued("a/1", "backend"),))]
    pm = FakePoolManager([pool_status("local", 2, 2)])
    m.bind(snapshot_source=lambda: snaps[-1], pool_manager=pm)
    m.collect()
    assert value(m, "queued_tasks", skill="backend") == 1
    assert value(m, "running_tasks", pool="local") == 2
    snaps.append(snapshot(version=2))
    pm.statuses = [pool_status("local", 1, 2)]
    text = m.export_prometheus()  # a scrape collects by itself when sources are bound
    assert f'{PREFIX}queued_tasks{{skill="backend"}} 0.0' in text
    assert f'{PREFIX}running_tasks{{pool="local"}} 1.0' in text


class FakeRegistry:
    """Just what MetricsCollector.update_from_registry() reads of a TaskRegistry."""

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks

    def count_tasks(self, *, taskset: str | None = None) -> dict[TaskState, int]:
        counts = dict.fromkeys(TaskState, 0)
        for t in self.tasks:
            counts[t.state] += 1
        return counts

    def list_tasks(self, *, state: TaskState | None = None, **_: Any) -> list[Task]:
        return [t for t in self.tasks if state is None or t.state == state]


def test_update_from_registry_without_an_engine(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    m.update_from_registry(FakeRegistry([
        Task(id="1", required_skill="backend"), Task(id="2"),
        Task(id="3", state=TaskState.DONE), Task(id="4", state=TaskState.BLOCKED)]))
    assert value(m, "queued_tasks", skill="backend") == 1
    assert value(m, "queued_tasks", skill="default") == 1
    assert value(m, "tasks", state="done") == 1
    assert value(m, "tasks", state="blocked") == 1


# --- bounded labels ----------------------------------------------------------------------------
def test_no_task_or_runner_id_ever_becomes_a_label(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    for i in range(50):
        t = Task(id=f"t{i}", taskset="big")
        m.record_assignment(t, "local")
        m.record_start(t, "local", 1.0)
        m.record_finish(t, "local", "done", 1.0)
        m.record_failure(f"runner r-{i} of big/t{i} exited 1")
    m.update_from_snapshot(snapshot(running=tuple(running(f"big/t{i}", "local")
                                                  for i in range(50))))
    text = m.export_prometheus()
    labels = {v for fam in text_string_to_metric_families(text) for s in fam.samples
              for v in s.labels.values()}
    assert not any("big/" in v or re.fullmatch(r"(r-)?t?\d+", v) for v in labels), labels
    assert len(exposition_values(text)) < 400


def test_label_values_past_the_limit_fold_into_other() -> None:
    guard = _LabelGuard("pool", limit=3)
    assert [guard(p) for p in ("a", "b", "c", "d", "a", "e")] == ["a", "b", "c", "other", "a",
                                                                  "other"]


# --- get_metrics() agrees with the exposition --------------------------------------------------
# get_metrics() nests multi-label figures in the metric's label order
LABEL_ORDER = {"task_run_seconds": ("pool", "outcome")}


def _lookup(d: dict[str, Any], name: str, labels: dict[str, str]) -> Any:
    """The get_metrics() figure for one exposition sample."""
    base = name.removeprefix(PREFIX)
    for metric, order in LABEL_ORDER.items():
        if base.startswith(metric):
            labels = {k: labels[k] for k in (*order, "le") if k in labels}
    for suffix, field in (("_bucket", "buckets"), ("_count", "count"), ("_sum", "sum")):
        hist = base.removesuffix(suffix)
        if base.endswith(suffix) and isinstance(d.get(hist), dict):
            node = d[hist]
            le = labels.pop("le", None)
            for v in labels.values():
                node = node[v]
            return node[field][le] if field == "buckets" else node[field]
    if base == "build_info":
        return 1 if d["build_info"] == labels else None
    node = d[base]
    for v in labels.values():
        node = node[v]
    return node


def test_get_metrics_agrees_with_the_exposition(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    t = Task(id="1")
    for pool, wait, outcome, run in (("local", 0.3, "done", 4.0), ("docker", 40.0, "failed", 9.0),
                                     ("docker", 2.0, "lost", 70.0)):
        m.record_assignment(t, pool)
        m.record_start(t, pool, wait)
        m.record_finish(t, pool, outcome, run)
    m.record_retry(t)
    m.record_failure("killed")
    m.record_launch_error("docker")
    m.record_heartbeat_timeout("docker")
    m.observe_round(0.01)
    m.update_from_snapshot(snapshot(
        pools=(pool_status("local", 1, 2, cpu=0.5, mem_mb=100),),
        queued=(queued("a/1", "backend"), queued("a/2")),
        running=(running("a/3", "local"),), counters=Counters(ready=2, running=1)))

    samples = exposition_values(m.export_prometheus())
    d = m.get_metrics()
    compared = 0
    for (name, labels), sample_value in samples.items():
        if name.endswith("_created"):
            continue  # creation timestamps are not figures
        got = _lookup(d, name, dict(labels))
        assert got == pytest.approx(sample_value), (name, labels)
        compared += 1
    assert compared > 100
    # and nothing in the dict that the exposition lacks (besides the two derived sums)
    names = {n.removeprefix(PREFIX) for n, _ in samples}
    for key in d:
        if key in ("queue_size", "running_total"):
            continue
        assert key in names or f"{key}_count" in names or not d[key], key
    assert d["queue_size"] == 2


def test_hooks_and_scrapes_from_several_threads(config: DispatcherConfig) -> None:
    m = MetricsCollector(config)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for i in range(300):
                m.record_assignment(Task(id=str(i)), "local")
                m.update_from_snapshot(snapshot(version=i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        assert m.export_prometheus()
    for th in threads:
        th.join()
    assert not errors
    assert value(m, "assignments_total", pool="local") == 900
