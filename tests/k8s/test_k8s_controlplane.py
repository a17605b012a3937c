"""The control plane and the kubelet stand-in themselves: what the launcher tests rely on."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from k8s_cluster import AGENTS_NS
from kubelet import FakeKubelet, Plan
from kubernetes import client
from support import wait_until

pytestmark = pytest.mark.kubernetes


def plain_job(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec, "template": {
                "metadata": {"annotations": {"necrocode/task": name}},
                "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                         "containers": [{"name": "main", "image": "busybox"}]}}}}


def test_server_is_v1_20_with_ttl_after_finished_kept(cluster: Any) -> None:
    assert client.VersionApi(cluster).get_code().git_version == "v1.20.2"
    batch = client.BatchV1Api(cluster)
    name = f"ttl-{secrets.token_hex(3)}"
    batch.create_namespaced_job(AGENTS_NS, plain_job(name, ttlSecondsAfterFinished=60))
    try:
        stored = json.loads(batch.read_namespaced_job(name, AGENTS_NS,
                                                      _preload_content=False).data)
        # without the TTLAfterFinished gate v1.20 drops the field silently
        assert stored["spec"]["ttlSecondsAfterFinished"] == 60
    finally:
        batch.delete_namespaced_job(name, AGENTS_NS, propagation_policy="Background")


def test_stand_in_runs_a_job_to_completion_and_serves_its_log(
    cluster: Any, kubelet: FakeKubelet
) -> None:
    batch, core = client.BatchV1Api(cluster), client.CoreV1Api(cluster)
    name = f"done-{secrets.token_hex(3)}"
    kubelet.plan(name, Plan(run_for=0.3, log="hello from the pod\n"))
    batch.create_namespaced_job(AGENTS_NS, plain_job(name))
    try:
        def complete() -> bool:
            job = json.loads(batch.read_namespaced_job(name, AGENTS_NS,
                                                       _preload_content=False).data)
            conds = (job.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)

        wait_until(complete, 30, "the Job controller to mark the Job Complete", 0.1)
        (pod,) = core.list_namespaced_pod(AGENTS_NS, label_selector=f"job-name={name}").items
        assert pod.spec.node_name == kubelet.node and pod.status.phase == "Succeeded"
        text = core.read_namespaced_pod_log(pod.metadata.name, AGENTS_NS, container="main")
        assert text == "hello from the pod\n"  # apiserver -> the stand-in's /containerLogs
    finally:
        batch.delete_namespaced_job(name, AGENTS_NS, propagation_policy="Background")
