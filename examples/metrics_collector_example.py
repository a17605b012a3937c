"""MetricsCollector: record what the Dispatcher does and export it for Prometheus.

Each collector has its own prometheus_client registry, so several Dispatchers can live in one
process. A running Dispatcher serves the same text on `GET /metrics` of its HTTP API, and
`necroui metrics` prints it.

Run:  python examples/metrics_collector_example.py
"""

from __future__ import annotations

import sys

from necrocode.dispatcher import DispatcherConfig, MetricsCollector
from necrocode.dispatcher.models import AgentPool, Task


def main() -> int:
    config = DispatcherConfig()
    config.agent_pools.append(AgentPool(name="local", max_concurrency=2))
    config.skill_mapping = {"default": ["local"]}
    metrics = MetricsCollector(config)

    pool = config.agent_pools[0]
    for i, wait in enumerate([0.2, 1.5, 4.0]):
        task = Task(id=str(i), title=f"task {i}")
        metrics.record_assignment(task, pool)
        metrics.record_start(task, pool, wait_seconds=wait)
        metrics.record_finish(task, pool, "done" if i < 2 else "failed", run_seconds=10.0 + i)
    metrics.record_failure("exit_code")
    metrics.record_retry(Task(id="2", title="task 2"))
    metrics.observe_round(0.002)
    metrics.collect()

    figures = metrics.get_metrics()
    for name in sorted(figures):
        if "assignments" in name or "retries" in name or "task_wait" in name:
            print(f"{name} = {figures[name]}")

    text = metrics.export_prometheus()
    wanted = ("necrocode_dispatcher_assignments_total",
              "necrocode_dispatcher_task_wait_seconds_count")
    for line in text.splitlines():
        if line.startswith(wanted):
            print(line)
    return 0 if "necrocode_dispatcher_assignments_total" in text else 1


if __name__ == "__main__":
    sys.exit(main())
