"""Helpers of the `kubernetes` tests: pools, launchers on the real server, and reading it back."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from k8s_cluster import AGENTS_NS, ROOT
from kubernetes import client
from necrocode.dispatcher.launchers.base import LaunchEnvironment, RunnerExit
from necrocode.dispatcher.launchers.kubernetes import KubernetesLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Runner, Slot
from support import wait_until

TEMPLATE = str(ROOT / "config" / "manifests" / "runner-job.yaml")
SLOT = Slot(slot_id="repo-0", slot_path="/srv/necrocode/workspaces/repo-0", branch="nc/1.2")
API_URL = "http://necrocode-dispatcher.necrocode.svc:8080"


class Exits:
    """Records the launcher's ``on_exit`` calls (the watcher settled a runner)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, runner_id: str) -> None:
        with self.lock:
            self.ids.append(runner_id)


def launch_env(tmp_path: Path, exits: Exits, stop_grace: float = 3.0) -> LaunchEnvironment:
    return LaunchEnvironment(api_url="http://127.0.0.1:8080", token_for=lambda r: f"tok-{r}",
                             runs_dir=tmp_path / "runs", stop_grace=stop_grace, on_exit=exits)


def k8s_pool(name: str = "k8s", **config: Any) -> AgentPool:
    cfg: dict[str, Any] = {"namespace": AGENTS_NS, "job_template": TEMPLATE, "api_url": API_URL}
    cfg.update(config)
    return AgentPool(name=name, type=PoolType.KUBERNETES, max_concurrency=10, cpu_quota=10,
                     memory_quota=20480, config=cfg)


def make_launcher(api: Any, env: LaunchEnvironment, poll: float = 0.1) -> KubernetesLauncher:
    return KubernetesLauncher(env, api_client=api, poll_interval=poll)


def wait_exit(launcher: KubernetesLauncher, runner: Runner, timeout: float = 60) -> RunnerExit:
    result: RunnerExit = wait_until(lambda: launcher.poll(runner), timeout,
                                    f"the outcome of {runner.handle}", 0.05)
    return result


def read_job(admin: Any, name: str) -> dict[str, Any] | None:
    try:
        resp = client.BatchV1Api(admin).read_namespaced_job(name, AGENTS_NS,
                                                            _preload_content=False)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(json.loads(resp.data))


def pods_of(admin: Any, job: str) -> list[dict[str, Any]]:
    resp = client.CoreV1Api(admin).list_namespaced_pod(AGENTS_NS, label_selector=f"job-name={job}",
                                                       _preload_content=False)
    return list(json.loads(resp.data)["items"])


def read_secret(admin: Any, name: str) -> dict[str, Any] | None:
    try:
        resp = client.CoreV1Api(admin).read_namespaced_secret(name, AGENTS_NS,
                                                              _preload_content=False)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(json.loads(resp.data))


def wait_running(admin: Any, job: str, timeout: float = 30) -> dict[str, Any]:
    """The Job's pod once the stand-in reports it Running."""
    def running() -> dict[str, Any] | None:
        for pod in pods_of(admin, job):
            if (pod.get("status") or {}).get("phase") == "Running":
                return pod
        return None

    pod: dict[str, Any] = wait_until(running, timeout, f"a running pod of {job}", 0.05)
    return pod


def delete_managed_jobs(admin: Any) -> None:
    """Remove what a test left (its pods and token Secrets go with the Jobs)."""
    client.BatchV1Api(admin).delete_collection_namespaced_job(
        AGENTS_NS, label_selector="necrocode.managed=true", propagation_policy="Background")
