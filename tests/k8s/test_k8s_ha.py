"""High availability for real: two headless Dispatcher processes with ``ha:`` elect a leader
through a Lease on the real apiserver (the Dispatcher's ServiceAccount), share one registry
file, and run their runners as Jobs. Only the leader dispatches; after a kill -9 of the leader
the standby takes over within the Lease duration, adopts the leader's Job by its labels and
finishes the task; no task ever gets a second Job."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import Endpoints
from k8s_cluster import AGENTS_NS, DISPATCHER_NS, DISPATCHER_SA, service_account_token
from k8s_support import API_URL, TEMPLATE
from kubelet import FakeKubelet, Plan
from kubernetes import client
from necrocode.dispatcher.models import EventType, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry
from support import wait_until

pytestmark = pytest.mark.kubernetes
DURATION, RENEW, RETRY = 3.0, 2.0, 0.5


def kubeconfig(endpoints: Endpoints, token: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "d",
        "clusters": [{"name": "c", "cluster": {"server": endpoints.server,
                                              "certificate-authority": str(endpoints.ca)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "d", "context": {"cluster": "c", "user": "u"}}]}))
    return path


class Replica:
    """``necroui --no-tui`` with an ``ha:`` section, as one replica of a Deployment would run."""

    def __init__(self, folder: Path, name: str, registry: Path, lease: str, kube: Path) -> None:
        self.name = name
        self.config = folder / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump({
            "dispatcher": {"registry_path": str(registry), "state_dir": str(folder / name),
                           "poll_interval": 0.2, "heartbeat_timeout": 120,
                           "runner_stop_grace": 1, "api_enabled": False},
            "agent_pools": {"k8s": {"type": "kubernetes", "max_concurrency": 4,
                                    "config": {"namespace": AGENTS_NS,
                                               "job_template": TEMPLATE,
                                               "api_url": API_URL}}},
            "skill_mapping": {"default": ["k8s"]},
            "ha": {"lease": lease, "namespace": DISPATCHER_NS, "duration": DURATION,
                   "renew_deadline": RENEW, "retry_period": RETRY, "identity": name}}))
        self.log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "necroui", "--config", str(self.config), "--no-tui"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kube)})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def setup(cluster: Any, control_plane: Endpoints, kubelet: FakeKubelet,
          tmp_path: Path) -> Iterator[dict[str, Any]]:
    token = service_account_token(cluster, DISPATCHER_NS, DISPATCHER_SA)
    kube = kubeconfig(control_plane, token, tmp_path / "dispatcher.kubeconfig")
    registry = tmp_path / "registry.db"
    lease = f"necrocode-ha-{secrets.token_hex(3)}"
    yield {"kube": kube, "registry": registry, "lease": lease, "folder": tmp_path}


def jobs_of(admin: Any, task_key: str) -> list[str]:
    resp = client.BatchV1Api(admin).list_namespaced_job(
        AGENTS_NS, label_selector="necrocode.managed=true", _preload_content=False)
    import json

    items = json.loads(resp.data)["items"]
    return [j["metadata"]["name"] for j in items
            if (j["metadata"].get("annotations") or {}).get("necrocode/task") == task_key]


def events(registry: Path, key: str | None = None) -> list[Any]:
    if not registry.exists():
        return []
    reg = SQLiteRegistry(registry)
    try:
        return reg.get_events(task_key=key)
    finally:
        reg.close()


def elected(registry: Path) -> list[str]:
    return [e.details.get("replica") for e in events(registry)
            if e.event_type is EventType.LEADER_ELECTED]


def test_kill_9_of_the_leader_hands_its_job_to_the_standby(
        setup: dict[str, Any], cluster: Any, kubelet: FakeKubelet) -> None:
    folder, registry = setup["folder"], setup["registry"]
    ha_key = f"ha-{secrets.token_hex(2)}"
    kubelet.plan(f"{ha_key}/long", Plan(run_for=10.0, log="long done\n"))
    tasks = folder / "tasks.yaml"
    tasks.write_text(yaml.safe_dump({"taskset": ha_key, "tasks": [
        {"id": "long", "title": "runs across the failover", "command": ["agent"]}]}))
    replicas: list[Replica] = []
    try:
        a = Replica(folder, "replica-a", registry, setup["lease"], setup["kube"])
        replicas.append(a)
        wait_until(lambda: elected(registry) == ["replica-a"], 60, "replica-a leads", 0.1)
        b = Replica(folder, "replica-b", registry, setup["lease"], setup["kube"])
        replicas.append(b)
        subprocess.run([sys.executable, "-m", "necroui", "--config", str(a.config), "submit",
                        str(tasks)], check=True, capture_output=True, timeout=60)
        key = f"{ha_key}/long"
        wait_until(lambda: jobs_of(cluster, key), 60, "the leader's Job", 0.1)
        started = wait_until(lambda: [e for e in events(registry, key)
                                      if e.event_type is EventType.RUNNER_STARTED], 30,
                             "its RunnerStarted", 0.1)
        assert len(started) == 1
        time.sleep(1.0)
        assert elected(registry) == ["replica-a"]  # b waits as a standby
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(timeout=10)
        adopted = wait_until(lambda: [e for e in events(registry, key)
                                      if e.event_type is EventType.RUNNER_ADOPTED], 60,
                             "the standby adopts the Job", 0.1)
        failover = time.monotonic() - killed
        assert failover < DURATION + 10 * RETRY + 5.0, failover
        assert adopted[0].runner_id == started[0].runner_id
        reg = SQLiteRegistry(registry)
        try:
            done = wait_until(lambda: (t := reg.get_task(key)).state is TaskState.DONE and t,
                              60, "long done under the new leader", 0.2)
        finally:
            reg.close()
        assert done.attempts == 0
        kinds = [e.event_type for e in events(registry, key)]
        assert kinds.count(EventType.TASK_ASSIGNED) == 1  # never assigned twice
        assert len(jobs_of(cluster, key)) <= 1  # one Job, released once done
        assert elected(registry) == ["replica-a", "replica-b"]
    finally:
        for replica in replicas:
            replica.close()
