"""A real Prometheus scrapes the Dispatcher's /metrics every second while tasks run.

Prometheus (Debian's ``prometheus`` package) starts on 127.0.0.1 with a temporary storage dir;
the test polls its HTTP API (the first sample takes about 5 s) until the assignments counter
and the wait-time histogram count match what the Dispatcher did, checks that every Grafana and
alert expression is valid PromQL against the real server, and stops it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "necrocode-dispatcher.json"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def require_tool(name: str) -> str:
    """Path of ``name``; skip when absent, but fail in CI where .ci/run installs it."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: install Debian's 'prometheus' package"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + "; .ci/run installs it", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0,
             interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Prometheus:
    """A Prometheus server of the test's own, scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.binary = require_tool("prometheus")
        self.workdir = workdir
        self.target = target
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ALERTS, self.workdir / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "necrocode-dispatcher", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [self.target]}]}],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        for _attempt in range(3):  # another process may grab the free port first
            self.port = free_port()
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={self.workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
            if wait_for(self._ready_or_dead, "Prometheus to become ready", timeout=60) == "ready":
                return
            self.stop()
        pytest.fail("Prometheus did not start; its log:\n" + self.log.read_text()[-3000:])

    def _ready_or_dead(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return "dead"
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                return "ready" if resp.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:  # 400 with a JSON error body for bad PromQL
            return json.load(err)

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["status"] == "success", (expr, data)
        return list(data["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        """The value of a one-element instant vector, None while there is no sample."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    require_tool("prometheus")
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        prom = Prometheus(tmp_path / f"prometheus-{len(started)}", target)
        started.append(prom)
        prom.start()
        return prom

    yield start
    for prom in started:
        prom.stop()


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, Grafana variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"]["query"])
            assert m
            exprs.append(m.group(1))
    return [e.replace("$__rate_interval", "1m").replace("$instance", ".*")
            .replace("$pool", ".*") for e in exprs]


def check_queries_and_rules(prom: Prometheus) -> None:
    """Dashboard expressions are valid PromQL with data behind them; the alert rules evaluate."""
    for expr in dashboard_queries():
        prom.query(expr)  # asserts status == success (a syntax error gives status "error")
    for name in ("necrocode_dispatcher_queued_tasks", "necrocode_dispatcher_pool_max_concurrency",
                 "necrocode_dispatcher_build_info", "necrocode_dispatcher_paused"):
        assert prom.query(name), f"{name} not scraped"

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = prom.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = wait_for(rules_evaluated, "every alert rule to evaluate with health ok")
    assert len(rules) == len(yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"])


# --- the collector behind the real HTTP API server ---------------------------------------------
class MetricsOnlyHandler:
    """An ApiHandler that serves only /metrics (the engine's own handler does the rest)."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(runner_id)

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(runner_id)

    def status(self) -> dict[str, Any]:
        return {}

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(verb)

    def metrics(self) -> tuple[bytes, str]:
        body, content_type = self.collector.exposition()
        return body, content_type


def test_prometheus_scrapes_the_collector_through_the_api_server(
    prometheus_factory: Callable[[str], Prometheus],
) -> None:
    from necrocode.dispatcher.api.server import ApiServer
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.metrics import MetricsCollector
    from necrocode.dispatcher.models import AgentPool, Task

    config = DispatcherConfig(agent_pools=[AgentPool("local", max_concurrency=2)],
                              skill_mapping={"default": ["local"]})
    collector = MetricsCollector(config)
    server = ApiServer("127.0.0.1", 0, MetricsOnlyHandler(collector), b"secret", "admin")
    url = server.start()
    try:
        prom = prometheus_factory(url.removeprefix("http://"))
        for i in range(3):  # what the engine reports for three short tasks
            task = Task(id=str(i), taskset="scrape")
            collector.record_assignment(task, "local")
            collector.record_start(task, "local", 0.1 * i)
            collector.record_finish(task, "local", "done", 0.5)
            collector.observe_round(0.001)
        wait_for(lambda: prom.scalar(
            'sum(necrocode_dispatcher_assignments_total{job="necrocode-dispatcher"})') == 3,
            "the assignments counter to reach 3 in Prometheus")
        wait_for(lambda: prom.scalar("sum(necrocode_dispatcher_task_wait_seconds_count)") == 3,
                 "the wait-time histogram count to reach 3 in Prometheus")
        assert prom.scalar('up{job="necrocode-dispatcher"}') == 1
        check_queries_and_rules(prom)
    finally:
        server.stop()


# --- a real Dispatcher: engine, local processes, its own HTTP API ------------------------------
def test_prometheus_scrapes_a_running_dispatcher(
    prometheus_factory: Callable[[str], Prometheus], tmp_path: Path,
) -> None:
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.core import DispatcherCore
    from necrocode.dispatcher.models import (
        AgentPool,
        EventType,
        PoolType,
        Task,
        Taskset,
        TaskState,
    )

    config = DispatcherConfig(
        registry_path=str(tmp_path / "reg" / "registry.db"), state_dir=str(tmp_path / "st"),
        poll_interval=0.5, retry_max_attempts=2, retry_backoff_base=0.1, retry_jitter=0.0,
        runner_stop_grace=0.5,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)],
        skill_mapping={"default": ["local"]})
    core = DispatcherCore(config)
    core.start()
    try:
        assert core.api_url
        prom = prometheus_factory(core.api_url.removeprefix("http://"))
        nap = ["python3", "-c", "import time; time.sleep(0.3)"]
        tasks = [
            Task(id="1", title="true", command=["true"]),
            Task(id="2", title="nap", command=nap, required_skill="py"),
            Task(id="3", title="after 1", command=["true"], dependencies=["1"]),
            Task(id="4", title="nap", command=nap),
            Task(id="5", title="fails twice", command=["sh", "-c", "exit 3"]),
        ]
        core.submit(Taskset(name="scrape", tasks=tasks))

        def finished() -> bool:
            counts = core.registry.count_tasks(taskset="scrape")
            return counts[TaskState.DONE] == 4 and counts[TaskState.FAILED] == 1

        wait_for(finished, "the taskset to finish (4 done, 1 failed)")

        def events(kind: EventType) -> int:
            return len(core.registry.get_events(event_types=[kind]))

        # every attempt is assigned and started: 4 tasks once, the failing one twice
        wait_for(lambda: events(EventType.RUNNER_STARTED) == 6, "6 RunnerStarted events")
        assigned, started = events(EventType.TASK_ASSIGNED), events(EventType.RUNNER_STARTED)
        assert assigned == started == 6

        wait_for(lambda: prom.scalar(
            'sum(necrocode_dispatcher_assignments_total{job="necrocode-dispatcher"})') == assigned,
            f"the assignments counter to reach {assigned} in Prometheus", timeout=90)
        wait_for(lambda: prom.scalar("sum(necrocode_dispatcher_task_wait_seconds_count)")
                 == started, f"the wait-time histogram count to reach {started}", timeout=90)
        wait_for(lambda: prom.scalar(
            'sum(necrocode_dispatcher_task_run_seconds_count{outcome="done"})') == 4,
            "4 done runs in the run-time histogram")
        assert prom.scalar('necrocode_dispatcher_failures_total{reason="exit_code"}') == 2
        assert prom.scalar("necrocode_dispatcher_retries_total") == 1
        assert prom.scalar('necrocode_dispatcher_pool_max_concurrency{pool="local"}') == 2
        assert prom.scalar('necrocode_dispatcher_tasks{state="done"}') == 4
        assert prom.scalar('up{job="necrocode-dispatcher"}') == 1
        # the dict view says the same as the exposition Prometheus scraped
        figures = core.metrics.get_metrics()
        assert figures["assignments_total"]["local"] == assigned
        assert figures["task_wait_seconds"]["count"] == started
        check_queries_and_rules(prom)
    finally:
        core.stop(timeout=5)
