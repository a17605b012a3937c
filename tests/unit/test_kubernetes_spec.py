"""Pure parts of the Kubernetes launcher; the shipped manifests loaded with the client's models."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.config_loader import config_from_mapping
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.kubernetes_spec import (
    KubernetesPoolSettings,
    build_job,
    job_exit,
    job_name,
    label_value,
    load_job_template,
)
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, Slot, Task

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "config" / "manifests"
RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$")

kubernetes = pytest.importorskip("kubernetes")


@given(st.text(min_size=1, max_size=200))
@settings(max_examples=300, deadline=None)
def test_job_name_is_always_an_rfc1123_label(runner_id: str) -> None:
    name = job_name(runner_id)
    assert RFC1123.match(name) and len(name) <= 63


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_label_value_is_always_valid(value: str) -> None:
    out = label_value(value)
    assert LABEL.match(out) and len(out) <= 63


@pytest.mark.parametrize(
    ("runner_id", "expected"),
    [
        ("r-ts-1-a1-0a1b2c", "necrocode-r-ts-1-a1-0a1b2c"),  # already valid: kept as is
        ("r-Chat-1.2-a1-0a1b2c", None),  # upper case and dots: sanitised + hash suffix
        ("r-" + "x" * 80 + "-a1-0a1b2c", None),  # too long: cut + hash suffix
    ],
)
def test_job_name_keeps_valid_ids_and_hashes_changed_ones(runner_id: str,
                                                          expected: str | None) -> None:
    name = job_name(runner_id)
    if expected is not None:
        assert name == expected
    else:
        assert re.search(r"-[0-9a-f]{8}$", name) and len(name) <= 63


def test_job_names_differ_when_only_case_or_tail_differs() -> None:
    names = {job_name("r-Task-a1-abc"), job_name("r-task-a1-abc"),
             job_name("r-" + "y" * 90 + "-a1-000001"), job_name("r-" + "y" * 90 + "-a1-000002")}
    assert len(names) == 4


def pods(exit_code: int | None = None, reason: str = "", *, phase: str = "Running",
         pod_reason: str = "") -> list[dict[str, Any]]:
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "reason": reason}}
    status: dict[str, Any] = {"phase": phase,
                              "containerStatuses": [{"name": "runner", "state": state}]}
    if pod_reason:
        status["reason"] = pod_reason
    return [{"metadata": {"name": "p"}, "status": status}]


def _deleting(pod_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for pod in pod_list:
        pod["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return pod_list


def job(*conds: tuple[str, str], **status: Any) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": "True", "reason": r}
                                      for t, r in conds], **status}}


@pytest.mark.parametrize(
    ("job_obj", "pod_list", "code", "reason"),
    [
        (job(active=1), pods(), None, None),  # still running
        (job(("Complete", "")), pods(0, "Completed", phase="Succeeded"), 0, "exited"),
        (job(("Failed", "BackoffLimitExceeded")), pods(3, "Error", phase="Failed"), 3, "exited"),
        (job(("Failed", "BackoffLimitExceeded")), pods(137, "OOMKilled", phase="Failed"), 137,
         "OOMKilled"),
        (job(("Failed", "DeadlineExceeded")), [], None, "DeadlineExceeded"),
        (job(active=1), pods(phase="Failed", pod_reason="Evicted"), None, "pod lost: Evicted"),
        (job(active=1), pods(phase="Unknown"), None, "pod lost: phase Unknown"),
        (None, pods(), None, "Job deleted outside"),  # someone deleted the Job
        (job(("Failed", "PodFailurePolicy")), [], None, "Job failed: PodFailurePolicy"),
        # the Job controller deletes the pods of a Job past its deadline, then marks it
        # Failed: a pod being deleted under a Job without a verdict is not lost yet
        (job(active=1), _deleting(pods()), None, None),
        (job(("Failed", "DeadlineExceeded")), _deleting(pods()), None, "DeadlineExceeded"),
        (job(("Failed", "BackoffLimitExceeded")), _deleting(pods()), None,
         "pod lost: pod deleted"),
    ],
    ids=["running", "complete", "failed", "oom", "deadline", "evicted", "unknown", "deleted",
         "other-failure", "deleting-no-verdict", "deleting-deadline", "deleting-failed"],
)
def test_job_exit(job_obj: dict[str, Any] | None, pod_list: list[dict[str, Any]],
                  code: int | None, reason: str | None) -> None:
    result = job_exit(job_obj, pod_list)
    if reason is None:
        assert result is None
        return
    assert result is not None
    assert result.exit_code == code and result.reason.startswith(reason), result
    assert result.oom_killed is (reason == "OOMKilled")


def test_settings_validate_propagation_and_env() -> None:
    with pytest.raises(RunnerLaunchError, match="propagation_policy.*Orphan"):
        KubernetesPoolSettings.from_pool(AgentPool(name="k", type=PoolType.KUBERNETES,
                                                   config={"propagation_policy": "Orphan"}))
    with pytest.raises(RunnerLaunchError, match=r"agent_pools\.k\.config\.env"):
        KubernetesPoolSettings.from_pool(AgentPool(name="k", type=PoolType.KUBERNETES,
                                                   config={"env": ["A=1"]}))


# --- manifests, checked with the client's models ---------------------------------------------

def deserialize(doc: dict[str, Any], kind: str) -> Any:
    """Load ``doc`` into the client's model class ``kind`` (validates required fields/types)."""
    api = kubernetes.client.ApiClient()
    text = json.dumps(doc)
    try:
        return api.deserialize(text, kind, "application/json")
    except TypeError:  # older clients: deserialize(response, type)
        class Response:
            data = text

        return api.deserialize(Response(), kind)


def round_trip(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """``doc`` through the model and back: a key the model does not know would be lost."""
    model = deserialize(doc, kind)
    out: dict[str, Any] = kubernetes.client.ApiClient().sanitize_for_serialization(model)
    return out


MODEL_OF = {"Namespace": "V1Namespace", "ServiceAccount": "V1ServiceAccount", "Role": "V1Role",
            "RoleBinding": "V1RoleBinding", "ConfigMap": "V1ConfigMap",
            "PersistentVolumeClaim": "V1PersistentVolumeClaim", "Deployment": "V1Deployment",
            "Service": "V1Service", "Job": "V1Job"}


def manifest_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


@pytest.mark.parametrize(("where", "doc"), manifest_docs(), ids=[w for w, _ in manifest_docs()])
def test_every_manifest_loads_into_the_client_models_unchanged(where: str,
                                                              doc: dict[str, Any]) -> None:
    assert doc["kind"] in MODEL_OF, f"{where}: no model check for kind {doc['kind']}"
    assert round_trip(doc, MODEL_OF[doc["kind"]]) == doc, f"{where}: unknown or mistyped keys"


def test_rbac_grants_exactly_what_the_launcher_uses() -> None:
    docs = dict(manifest_docs())
    role = docs["dispatcher-rbac.yaml:Role/necrocode-runner-launcher"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"])
             for r in role["rules"]}
    assert rules == {(("batch",), ("jobs",)): ["create", "delete", "get", "list"],
                     (("",), ("secrets",)): ["create"],
                     (("",), ("pods",)): ["delete", "list"], (("",), ("pods/log",)): ["get"]}
    leases = docs["dispatcher-rbac.yaml:Role/necrocode-leader-election"]
    assert leases["metadata"]["namespace"] == "necrocode"
    assert [(r["apiGroups"], r["resources"], sorted(r["verbs"])) for r in leases["rules"]] == \
        [(["coordination.k8s.io"], ["leases"], ["create", "get", "update"])]
    binding = docs["dispatcher-rbac.yaml:RoleBinding/necrocode-dispatcher-launches-runners"]
    assert binding["subjects"][0]["name"] == "necrocode-dispatcher"
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == "necrocode-agents"
    deployment = docs["dispatcher-deployment.yaml:Deployment/necrocode-dispatcher"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "necrocode-dispatcher"
    service = docs["dispatcher-deployment.yaml:Service/necrocode-dispatcher"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_configmap_config_loads_and_carries_the_shipped_job_template() -> None:
    docs = dict(manifest_docs())
    data = docs["dispatcher-deployment.yaml:ConfigMap/necrocode-dispatcher-config"]["data"]
    config = config_from_mapping(yaml.safe_load(data["dispatcher.yaml"]), source="configmap")
    assert config.api_host == "0.0.0.0" and config.api_port == 8080
    pool = config.get_pool("k8s")
    assert pool is not None and pool.type is PoolType.KUBERNETES
    assert pool.config["api_url"] == "http://necrocode-dispatcher.necrocode.svc:8080"
    shipped = yaml.safe_load((MANIFESTS / "runner-job.yaml").read_text())
    assert yaml.safe_load(data["runner-job.yaml"]) == shipped


def test_built_job_from_the_shipped_template_is_a_valid_v1_job(
    tmp_path: Path, task_factory: Callable[..., Task]
) -> None:
    template = load_job_template(str(MANIFESTS / "runner-job.yaml"))
    pool = AgentPool(name="k8s", type=PoolType.KUBERNETES, cpu_quota=10, memory_quota=20480,
                     config={"namespace": "necrocode-agents", "service_account": "runner"})
    env = LaunchEnvironment(api_url="http://x:1", token_for=lambda r: "t", runs_dir=tmp_path)
    task = task_factory(command=["agent"], timeout=30, resources=Resources(cpu=2, memory_mb=4096))
    body = build_job(template, task, Slot("s", "/x"), pool, "r-1", 1, env, tmp_path,
                     KubernetesPoolSettings.from_pool(pool))
    model = deserialize(body, "V1Job")
    assert model.spec.backoff_limit == 0 and model.spec.active_deadline_seconds == 30
    container = model.spec.template.spec.containers[0]
    assert container.resources.limits == {"cpu": "2000m", "memory": "4096Mi"}
    assert model.spec.template.spec.service_account_name == "runner"
    assert round_trip(body, "V1Job") == body
    assert template == load_job_template(str(MANIFESTS / "runner-job.yaml"))  # not mutated


def test_dockerfile_copies_what_exists_and_runs_the_wrapper() -> None:
    text = (ROOT / "config" / "docker" / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    assert 'CMD ["python3", "-m", "necrocode.dispatcher.agent_runner"]' in text
    assert re.search(r"^USER 10001", text, re.M)  # matches runAsUser in runner-job.yaml
