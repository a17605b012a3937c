"""The Grafana dashboard and the alert rules name only metrics the collector exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from necrocode.dispatcher.metrics import PREFIX, MetricsCollector
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "necrocode-dispatcher.json"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def exported_names() -> set[str]:
    """Every series name a collector can export (histogram/counter suffixes included)."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(MetricsCollector().export_prometheus()):
        if fam.type == "histogram":
            names |= {fam.name + s for s in ("_bucket", "_count", "_sum")}
        elif fam.type == "counter":
            names.add(fam.name + "_total")
        else:
            names.add(fam.name)
        names |= {s.name for s in fam.samples}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels and keywords left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (pool) (rate(a_total{x="b{c}"}[5m]))', {"a_total"}),  # label text ignored
        ("histogram_quantile(0.9, sum by (le) (rate(h_bucket[$__rate_interval])))",
         {"h_bucket"}),
        ("a > 0 and on (instance) b == 0 unless c", {"a", "b", "c"}),
        ("x / 1e3 + vector(0)", {"x"}),  # numbers and functions are not names
    ],
)
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _walk_panels(p.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _walk_panels(dashboard["panels"]) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert m, query
            exprs.append(m.group(1))
    return exprs


def test_dashboard_loads_and_has_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "necrocode-dispatcher"
    titles = {p["title"] for p in _walk_panels(dashboard["panels"])}
    for needed in ("Queued tasks by skill", "Saturation per pool", "Running tasks per pool",
                   "Wait time (READY to start) p50 / p90 / p99", "Run time p50 / p90 by pool",
                   "Failure rate", "Assignments and retries", "Heartbeat timeouts",
                   "Launch errors", "Scheduling round duration"):
        assert needed in titles
    ids = [p["id"] for p in _walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    quantiles = " ".join(dashboard_exprs(dashboard))
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate({PREFIX}task_wait_seconds_bucket" \
            in quantiles


def test_every_dashboard_expression_names_exported_metrics() -> None:
    exported = exported_names()
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) > 20
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)
        used |= names
    # every metric the issue asks to chart is charted
    for base in ("queued_tasks", "running_tasks", "pool_utilization_ratio",
                 "task_wait_seconds_bucket", "task_run_seconds_bucket", "assignments_total",
                 "retries_total", "failures_total", "heartbeat_timeouts_total",
                 "launch_errors_total", "scheduling_round_seconds_bucket"):
        assert PREFIX + base in used, base


def test_every_alert_expression_names_exported_metrics() -> None:
    exported = exported_names()
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "NecroCodeDispatcherQueueStuck", "NecroCodeDispatcherPoolSaturated",
        "NecroCodeDispatcherHeartbeatTimeoutsRising", "NecroCodeDispatcherLaunchErrors"}
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= exported, (rule["alert"], names - exported)


def test_dashboard_panels_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    cells: dict[tuple[int, int], str] = {}
    for panel in _walk_panels(dashboard["panels"]):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_provisioning_files_load() -> None:
    prov = ROOT / "config" / "grafana" / "provisioning"
    assert yaml.safe_load((prov / "dashboards.yml").read_text())["providers"][0]["type"] == "file"
    assert yaml.safe_load((prov / "datasource.yml").read_text())["datasources"][0]["type"] == \
        "prometheus"
