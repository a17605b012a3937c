"""promtool on what we ship: the exposition, the alerting rules, the example Prometheus config.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it). Locally the tests skip
when it is missing; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.metrics import MetricsCollector
from necrocode.dispatcher.models import AgentPool, PoolType, Task

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
PROM_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"


def require_tool(name: str) -> str:
    """Path of ``name``; skip when absent, but fail in CI where it must be installed."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: install Debian's 'prometheus' package (it brings promtool)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + "; .ci/run installs it")
    pytest.skip(message)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def busy_collector() -> MetricsCollector:
    config = DispatcherConfig(
        agent_pools=[AgentPool("local", PoolType.LOCAL_PROCESS, max_concurrency=2),
                     AgentPool("docker", PoolType.DOCKER, max_concurrency=4, cpu_quota=4,
                               memory_quota=4096)],
        skill_mapping={"backend": ["docker"], "default": ["local"]})
    m = MetricsCollector(config)
    t = Task(id="1")
    for pool, outcome in (("local", "done"), ("docker", "failed"), ("docker", "lost")):
        m.record_assignment(t, pool)
        m.record_start(t, pool, 1.5)
        m.record_finish(t, pool, outcome, 12.0)
    m.record_retry(t)
    m.record_failure("exit code 2")
    m.record_heartbeat_timeout("docker")
    m.record_launch_error("docker")
    m.observe_round(0.002)
    return m


@pytest.mark.parametrize(
    "collector",
    [
        MetricsCollector,  # fresh, no config, no snapshot
        busy_collector,  # every metric with samples
    ],
)
def test_promtool_check_metrics_reports_nothing(collector: object) -> None:
    m = collector()  # type: ignore[operator]
    result = promtool("check", "metrics", stdin=m.export_prometheus())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr)


def test_promtool_check_rules_accepts_the_alerts() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config_accepts_the_example_config() -> None:
    result = promtool("check", "config", str(PROM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the alerts fire when they should, and only then (promtool test rules) ---------------------
def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"necrocode_dispatcher_{name}{{{inner}}}", "values": values}


RULE_TESTS = [
    {
        "interval": "1m",
        "input_series": [
            # d1: tasks queued, the counter flat, not paused -> stuck
            _series("queued_tasks", {"instance": "d1", "skill": "backend"}, "3x40"),
            _series("assignments_total", {"instance": "d1", "pool": "local"}, "5x40"),
            _series("paused", {"instance": "d1"}, "0x40"),
            # d2: the same but paused -> not an alert
            _series("queued_tasks", {"instance": "d2", "skill": "backend"}, "3x40"),
            _series("assignments_total", {"instance": "d2", "pool": "local"}, "5x40"),
            _series("paused", {"instance": "d2"}, "1x40"),
            # d3: tasks queued and assignments happening -> fine
            _series("queued_tasks", {"instance": "d3", "skill": "backend"}, "3x40"),
            _series("assignments_total", {"instance": "d3", "pool": "local"}, "0+1x40"),
            _series("paused", {"instance": "d3"}, "0x40"),
            # d4: no assignment series at all (no pool ever assigned) -> stuck
            _series("queued_tasks", {"instance": "d4", "skill": "x"}, "1x40"),
            _series("paused", {"instance": "d4"}, "0x40"),
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "NecroCodeDispatcherQueueStuck", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "NecroCodeDispatcherQueueStuck", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "instance": "d1"}},
                {"exp_labels": {"severity": "warning", "instance": "d4"}},
            ]},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            _series("pool_utilization_ratio", {"instance": "d1", "pool": "full"}, "1x40"),
            _series("pool_utilization_ratio", {"instance": "d1", "pool": "half"}, "0.5x40"),
            _series("heartbeat_timeouts_total", {"instance": "d1", "pool": "flaky"}, "0+1x40"),
            _series("heartbeat_timeouts_total", {"instance": "d1", "pool": "calm"}, "0x40"),
            _series("launch_errors_total", {"instance": "d1", "pool": "broken"}, "0 0 0 1x40"),
            _series("launch_errors_total", {"instance": "d1", "pool": "calm"}, "0x40"),
            _series("pool_healthy", {"instance": "d1", "pool": "broken"}, "0x40"),
            _series("pool_enabled", {"instance": "d1", "pool": "broken"}, "1x40"),
            _series("task_run_seconds_count", {"instance": "d1", "pool": "p", "outcome": "done"},
                    "0+1x60"),
            _series("task_run_seconds_count",
                    {"instance": "d1", "pool": "p", "outcome": "failed"}, "0+3x60"),
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "NecroCodeDispatcherPoolSaturated",
             "exp_alerts": []},
            {"eval_time": "16m", "alertname": "NecroCodeDispatcherPoolSaturated", "exp_alerts": [
                {"exp_labels": {"severity": "info", "instance": "d1", "pool": "full"}}]},
            {"eval_time": "25m", "alertname": "NecroCodeDispatcherHeartbeatTimeoutsRising",
             "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "instance": "d1", "pool": "flaky"}}]},
            {"eval_time": "8m", "alertname": "NecroCodeDispatcherLaunchErrors", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "instance": "d1", "pool": "broken"}}]},
            {"eval_time": "8m", "alertname": "NecroCodeDispatcherPoolUnhealthy", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "instance": "d1", "pool": "broken"}}]},
            {"eval_time": "50m", "alertname": "NecroCodeDispatcherFailureRateHigh",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "instance": "d1"}}]},
        ],
    },
]


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:  # annotations are prose; the test checks labels only
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(
        {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": RULE_TESTS}))
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
