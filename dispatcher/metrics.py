"""Prometheus metrics of the Dispatcher (the seed's MetricsCollector).

Every :class:`MetricsCollector` owns its own ``prometheus_client.CollectorRegistry``, so two
Dispatchers in one process never collide and nothing lands in the global default registry.

Two kinds of figures:

* **Events** the engine reports through hooks (counters and histograms): ``record_assignment``,
  ``record_start`` (wait time READY -> running), ``record_finish`` (run time by pool and outcome),
  ``record_retry``, ``record_failure`` (reason normalised into :data:`FAILURE_REASONS`),
  ``record_heartbeat_timeout``, ``record_launch_error``, ``observe_round``.
* **State** (gauges) read from the newest :class:`~.snapshot.Snapshot` handed to
  ``update_from_snapshot`` (or pulled by ``collect()`` from a bound source). Gauges are computed
  at scrape time from that one snapshot, so a scrape is consistent and costs nothing per
  publication. Before any snapshot, the pools and skills of the config are exported at zero, so
  the exposition is never empty.

All names carry the ``necrocode_dispatcher_`` prefix and use base units (seconds, bytes). Label
values come from bounded sets only (pool names, skills, fixed reasons and outcomes) — never a
task id or runner id.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from .agents.metrics import AgentMetrics
from .models import PoolStatus, PoolType, RunnerState, TaskState

if TYPE_CHECKING:
    from .config import DispatcherConfig
    from .registry.base import TaskRegistry
    from .snapshot import Snapshot

log = logging.getLogger(__name__)

PREFIX = "necrocode_dispatcher_"
MIB = 1024 * 1024

#: Failure reasons (label values of ``failures_total``). Free text is mapped onto these.
FAILURE_REASONS: tuple[str, ...] = (
    "exit_code",  # the agent exited non-zero
    "killed",  # killed by a signal (OOM killer, operator, platform)
    "timeout",  # ran past the task's timeout
    "heartbeat_timeout",  # no sign of life within heartbeat_timeout
    "lost",  # runner vanished from its platform
    "launch_error",  # the runner could not be started
    "invalid_task",  # bad task definition (command not found, bad argv)
    "other",
)
#: Outcomes of a finished run (label values of ``task_run_seconds``).
OUTCOMES: tuple[str, ...] = ("done", "failed", "lost", "cancelled", "timeout", "other")
#: Label values per label beyond which new values are folded into "other".
MAX_LABEL_VALUES = 200

WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
RUN_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
ROUND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# Checked in order; the first keyword found in the lowered reason wins.
_REASON_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("heartbeat_timeout", ("heartbeat",)),
    ("launch_error", ("launch",)),
    ("timeout", ("timeout", "timed out", "timed_out", "deadline")),
    ("lost", ("lost", "vanish", "disappear", "not found on platform", "orphan")),
    ("killed", ("signal", "killed", "sigkill", "sigterm", "oom")),
    ("invalid_task", ("invalid", "definition", "no such file", "not executable",
                      "command not found", "non_retryable", "non-retryable")),
    ("exit_code", ("exit", "returncode", "return code", "non-zero", "nonzero", "failed")),
)
_OUTCOME_ALIASES = {
    "done": "done", "completed": "done", "complete": "done", "success": "done", "ok": "done",
    "failed": "failed", "failure": "failed", "error": "failed",
    "lost": "lost",
    "cancelled": "cancelled", "canceled": "cancelled",
    "timeout": "timeout", "timed_out": "timeout", "timedout": "timeout",
}


def normalize_failure_reason(reason: object) -> str:
    """Map a free-text failure reason (or an enum) onto one of :data:`FAILURE_REASONS`."""
    text = str(getattr(reason, "value", reason) or "").strip().lower()
    if text in FAILURE_REASONS:
        return text
    for name, words in _REASON_KEYWORDS:
        if any(word in text for word in words):
            return name
    return "other"


def normalize_outcome(outcome: object) -> str:
    """Map an outcome (string, TaskState, RunnerState) onto one of :data:`OUTCOMES`."""
    text = str(getattr(outcome, "value", outcome) or "").strip().lower()
    return _OUTCOME_ALIASES.get(text, "other")


def _pool_name(pool: object) -> str:
    """Name of a pool given as a str, AgentPool or PoolStatus."""
    if pool is None:
        return "unknown"
    if isinstance(pool, str):
        return pool or "unknown"
    name = getattr(pool, "name", None) or getattr(pool, "pool_name", None)
    return str(name) if name else "unknown"


def _skill_label(skill: str | None) -> str:
    return skill or "default"


@dataclass(frozen=True)
class _Figures:
    """Gauge values taken from one snapshot (or the config, before the first snapshot)."""

    queued: dict[str, int] = field(default_factory=dict)  # skill -> READY tasks
    tasks: dict[str, int] = field(default_factory=dict)  # task state -> count
    pools: dict[str, PoolStatus] = field(default_factory=dict)
    runners: dict[str, int] = field(default_factory=dict)  # runner state -> count
    paused: int = 0


class _LabelGuard:
    """Keeps one label's value set bounded: values past the limit become "other"."""

    def __init__(self, what: str, limit: int = MAX_LABEL_VALUES) -> None:
        self._what = what
        self._limit = limit
        self._seen: set[str] = set()
        self._warned = False
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
            if not self._warned:
                self._warned = True
                log.warning("more than %d distinct %s label values; further ones are "
                            "reported as 'other'", self._limit, self._what)
            return "other"


class MetricsCollector:
    """Collects the Dispatcher's metrics and exports them in the Prometheus text format.

    ``MetricsCollector(config)`` builds a private registry (pass ``registry=`` to use your own).
    The engine calls the ``record_*`` hooks and ``update_from_snapshot``; ``GET /metrics`` serves
    :meth:`exposition`; :meth:`get_metrics` gives the same figures as a dict.
    """

    def __init__(
        self,
        config: DispatcherConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        version: str | None = None,
    ) -> None:
        from . import __version__

        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._figures_version: int | None = None
        self._figures = self._config_figures()
        self._snapshot_source: Callable[[], Snapshot | None] | None = None
        self._pool_manager: Any = None
        self._pool_label = _LabelGuard("pool")
        self._skill_label = _LabelGuard("skill")
        reg = self.registry

        self.build_info = Info(PREFIX + "build", "Version of the running Dispatcher.", registry=reg)
        self.build_info.info({"version": version or __version__})
        self.assignments = Counter(PREFIX + "assignments", "Tasks assigned to a pool.",
                                   ["pool"], registry=reg)
        self.retries = Counter(PREFIX + "retries", "Tasks re-queued for another attempt.",
                               registry=reg)
        self.failures = Counter(PREFIX + "failures", "Failed attempts, by normalised reason.",
                                ["reason"], registry=reg)
        self.heartbeat_timeouts = Counter(PREFIX + "heartbeat_timeouts",
                                          "Runners declared lost for lack of heartbeats.",
                                          ["pool"], registry=reg)
        self.launch_errors = Counter(PREFIX + "launch_errors", "Runner launches that failed.",
                                     ["pool"], registry=reg)
        self.task_wait = Histogram(PREFIX + "task_wait_seconds",
                                   "Time from READY to the runner's start.",
                                   buckets=WAIT_BUCKETS, registry=reg)
        self.task_run = Histogram(PREFIX + "task_run_seconds",
                                  "Run time of finished runners, by pool and outcome.",
                                  ["pool", "outcome"], buckets=RUN_BUCKETS, registry=reg)
        self.scheduling_round = Histogram(PREFIX + "scheduling_round_seconds",
                                          "Duration of one scheduling round of the engine.",
                                          buckets=ROUND_BUCKETS, registry=reg)
        reg.register(_StateCollector(self))
        self.agents = AgentMetrics(reg, _LabelGuard("tenant"))  # record(agent, tenant, usage)

        # Series that exist from the start, so rate() and increase() work from the first event.
        for reason in FAILURE_REASONS:
            self.failures.labels(reason=reason)
        for pool in self._figures.pools:
            self._touch_pool_counters(pool)

    # --- sources --------------------------------------------------------------------------
    def bind(
        self,
        *,
        snapshot_source: Callable[[], Snapshot | None] | None = None,
        pool_manager: Any = None,
    ) -> None:
        """Let :meth:`collect` pull the newest snapshot and/or live pool status by itself."""
        self._snapshot_source = snapshot_source
        self._pool_manager = pool_manager

    def collect(self) -> None:
        """Refresh the gauges from the bound sources, else from the last snapshot given."""
        if self._snapshot_source is not None:
            snap = self._snapshot_source()
            if snap is not None:
                self.update_from_snapshot(snap)
        figures = self._current_figures()
        if self._pool_manager is not None:
            statuses = list(self._pool_manager.get_all_pool_status())
            pools = dict(figures.pools)
            pools.update({s.pool_name: s for s in statuses})
            figures = _Figures(figures.queued, figures.tasks, pools, figures.runners,
                               figures.paused)
        with self._lock:
            self._figures = figures

    def update_from_snapshot(self, snapshot: Snapshot) -> None:
        """Take the engine's newest snapshot for the gauges (cheap: figures come at scrape)."""
        with self._lock:
            self._snapshot = snapshot

    def update_from_registry(self, registry: TaskRegistry) -> None:
        """Gauges from a registry alone (no engine running): READY tasks by skill, task states."""
        tasks = {state.value: n for state, n in registry.count_tasks().items()}
        queued = _Tally(_skill_label(t.required_skill)
                        for t in registry.list_tasks(state=TaskState.READY))
        base = self._config_figures()
        with self._lock:
            self._snapshot = None
            self._figures_version = None
            self._figures = _Figures(
                queued={**base.queued, **queued}, tasks={**base.tasks, **tasks},
                pools=base.pools, runners=base.runners, paused=0)

    # --- engine hooks ---------------------------------------------------------------------
    def record_assignment(self, task: object, pool: object) -> None:
        """A task was assigned to a pool."""
        self.assignments.labels(pool=self._pool_label(_pool_name(pool))).inc()

    def record_start(self, task: object, pool: object, wait_seconds: float) -> None:
        """A runner started; ``wait_seconds`` is the time since the task became READY."""
        self.task_wait.observe(max(0.0, float(wait_seconds)))

    def record_finish(self, task: object, pool: object, outcome: object,
                      run_seconds: float) -> None:
        """A runner ended (outcome: done|failed|lost|cancelled|timeout)."""
        self.task_run.labels(pool=self._pool_label(_pool_name(pool)),
                             outcome=normalize_outcome(outcome)).observe(
            max(0.0, float(run_seconds)))

    def record_retry(self, task: object) -> None:
        """A task was put back for another attempt."""
        self.retries.inc()

    def record_failure(self, reason: object) -> None:
        """An attempt failed; a free-text reason is normalised into :data:`FAILURE_REASONS`."""
        self.failures.labels(reason=normalize_failure_reason(reason)).inc()

    def record_heartbeat_timeout(self, pool: object) -> None:
        """A runner of ``pool`` was declared lost for lack of heartbeats."""
        self.heartbeat_timeouts.labels(pool=self._pool_label(_pool_name(pool))).inc()

    def record_launch_error(self, pool: object) -> None:
        """A runner of ``pool`` could not be launched."""
        self.launch_errors.labels(pool=self._pool_label(_pool_name(pool))).inc()

    def observe_round(self, seconds: float) -> None:
        """One scheduling round took ``seconds``."""
        self.scheduling_round.observe(max(0.0, float(seconds)))

    # --- export ---------------------------------------------------------------------------
    def export_prometheus(self) -> str:
        """The metrics in the Prometheus text exposition format."""
        return self.exposition()[0].decode("utf-8")

    def exposition(self) -> tuple[bytes, str]:
        """Body and content type for ``GET /metrics``."""
        if self._snapshot_source is not None or self._pool_manager is not None:
            self.collect()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def get_metrics(self) -> dict[str, Any]:
        """The figures of :meth:`export_prometheus` as a dict, keyed without the prefix.

        Gauges and counters without labels are numbers; with one label, ``{value: number}``;
        histograms are ``{"count", "sum", "buckets": {le: cumulative count}}``, nested by label
        values (``task_run_seconds[pool][outcome]``). ``queue_size`` and ``running_total`` are
        the sums of ``queued_tasks`` and ``running_tasks``.
        """
        if self._snapshot_source is not None or self._pool_manager is not None:
            self.collect()
        out: dict[str, Any] = {}
        for family in self.registry.collect():
            _family_to_dict(family, out)
        out["queue_size"] = sum(out.get("queued_tasks", {}).values())
        out["running_total"] = sum(out.get("running_tasks", {}).values())
        return out

    # --- internals ------------------------------------------------------------------------
    def _touch_pool_counters(self, pool: str) -> None:
        label = self._pool_label(pool)
        self.assignments.labels(pool=label)
        self.heartbeat_timeouts.labels(pool=label)
        self.launch_errors.labels(pool=label)

    def _config_figures(self) -> _Figures:
        pools: dict[str, PoolStatus] = {}
        queued: dict[str, int] = {}
        if self.config is not None:
            for p in self.config.agent_pools:
                pools[p.name] = PoolStatus(
                    pool_name=p.name, pool_type=p.type, running=0,
                    max_concurrency=p.max_concurrency, utilization=0.0, cpu_in_use=0.0,
                    cpu_quota=p.cpu_quota, memory_in_use=0, memory_quota=p.memory_quota,
                    enabled=p.enabled)
            queued = {_skill_label(s): 0
                      for s in self.config.skill_mapping}
        return _Figures(
            queued=queued, tasks={s.value: 0 for s in TaskState}, pools=pools,
            runners={s.value: 0 for s in RunnerState}, paused=0)

    def _current_figures(self) -> _Figures:
        """Figures of the newest snapshot, computed once per snapshot version."""
        with self._lock:
            snap = self._snapshot
            if snap is None or snap.version == self._figures_version:
                return self._figures
        figures = self._snapshot_figures(snap)
        with self._lock:
            if self._snapshot is snap:
                self._figures, self._figures_version = figures, snap.version
        for pool in figures.pools:
            self._touch_pool_counters(pool)
        return figures

    def _snapshot_figures(self, snap: Snapshot) -> _Figures:
        base = self._config_figures()
        queued = dict(base.queued)
        for q in snap.queued:
            if q.state == TaskState.READY:
                skill = self._skill_label(_skill_label(q.skill))
                queued[skill] = queued.get(skill, 0) + 1
        pools = dict(base.pools)
        pools.update({p.pool_name: p for p in snap.pools})
        running_by_pool = _Tally(r.pool for r in snap.running)
        for name, n in running_by_pool.items():
            if name not in pools:  # a runner of a pool the snapshot does not list
                pools[name] = PoolStatus(name, PoolType.LOCAL_PROCESS, n, 0, 0.0, 0.0, None, 0,
                                         None)
        runners = dict(base.runners)
        for r in snap.running:
            state = getattr(r.runner_state, "value", str(r.runner_state))
            runners[state] = runners.get(state, 0) + 1
        c = snap.counters
        tasks = {"blocked": c.blocked, "ready": c.ready, "running": c.running, "done": c.done,
                 "failed": c.failed, "cancelled": c.cancelled}
        return _Figures(queued=queued, tasks=tasks, pools=pools, runners=runners,
                        paused=1 if snap.state == "paused" else 0)


class _StateCollector:
    """Yields the gauge families of a collector's current figures at scrape time."""

    def __init__(self, owner: MetricsCollector) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return list(self._families(_Figures()))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._owner._current_figures()))

    @staticmethod
    def _families(f: _Figures) -> Iterator[Metric]:
        def gauge(name: str, doc: str, label: str | None,
                  values: dict[str, float] | float) -> GaugeMetricFamily:
            if label is None:
                assert not isinstance(values, dict)
                return GaugeMetricFamily(PREFIX + name, doc, value=values)
            fam = GaugeMetricFamily(PREFIX + name, doc, labels=[label])
            assert isinstance(values, dict)
            for key in sorted(values):
                fam.add_metric([key], values[key])
            return fam

        pools = [f.pools[name] for name in sorted(f.pools)]
        yield gauge("queued_tasks", "READY tasks waiting for a runner, by required skill.",
                    "skill", dict(f.queued))
        yield gauge("tasks", "Tasks in the registry, by state.", "state", dict(f.tasks))
        yield gauge("running_tasks", "Tasks with a live runner, by pool.", "pool",
                    {p.pool_name: p.running for p in pools})
        yield gauge("pool_max_concurrency", "Most runners a pool may run at once.", "pool",
                    {p.pool_name: p.max_concurrency for p in pools})
        yield gauge("pool_utilization_ratio", "Running / max_concurrency of a pool (0..1).",
                    "pool", {p.pool_name: p.utilization for p in pools})
        yield gauge("pool_cpu_cores_in_use", "CPU cores reserved by running tasks.", "pool",
                    {p.pool_name: p.cpu_in_use for p in pools})
        yield gauge("pool_memory_bytes_in_use", "Memory reserved by running tasks.", "pool",
                    {p.pool_name: p.memory_in_use * MIB for p in pools})
        yield gauge("pool_cpu_quota_cores", "CPU quota of a pool (pools with a quota).", "pool",
                    {p.pool_name: p.cpu_quota for p in pools if p.cpu_quota is not None})
        yield gauge("pool_memory_quota_bytes", "Memory quota of a pool (pools with a quota).",
                    "pool", {p.pool_name: p.memory_quota * MIB for p in pools
                             if p.memory_quota is not None})
        yield gauge("pool_enabled", "1 when the pool takes new tasks, 0 when disabled.", "pool",
                    {p.pool_name: int(p.enabled) for p in pools})
        yield gauge("pool_healthy", "0 when the pool's recent launches failed.", "pool",
                    {p.pool_name: int(p.healthy) for p in pools})
        yield gauge("runners", "Live runners, by runner state.", "state", dict(f.runners))
        yield gauge("paused", "1 while dispatching is paused.", None, f.paused)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _family_to_dict(family: Metric, out: dict[str, Any]) -> None:
    """Fold one metric family into ``out`` (see MetricsCollector.get_metrics)."""
    name = family.name.removeprefix(PREFIX)
    if family.type == "info":
        for s in family.samples:
            out[name + "_info"] = dict(s.labels)
        return
    if family.type == "histogram":
        hist: dict[Any, Any] = {}
        for s in family.samples:
            labels = dict(s.labels)
            le = labels.pop("le", None)
            node = hist
            for value in labels.values():
                node = node.setdefault(value, {})
            if s.name.endswith("_bucket"):
                node.setdefault("buckets", {})[le] = _number(s.value)
            elif s.name.endswith("_count"):
                node["count"] = _number(s.value)
            elif s.name.endswith("_sum"):
                node["sum"] = s.value
        out[name] = hist
        return
    key = name + "_total" if family.type == "counter" else name
    values: dict[str, Any] = {}
    scalar: float | int | None = None
    for s in family.samples:
        if s.name.endswith("_created"):
            continue
        if not s.labels:
            scalar = _number(s.value)
        else:
            node = values
            label_values = list(s.labels.values())
            for value in label_values[:-1]:
                node = node.setdefault(value, {})
            node[label_values[-1]] = _number(s.value)
    out[key] = scalar if scalar is not None and not values else values


__all__ = [
    "FAILURE_REASONS",
    "OUTCOMES",
    "MetricsCollector",
    "normalize_failure_reason",
    "normalize_outcome",
]
