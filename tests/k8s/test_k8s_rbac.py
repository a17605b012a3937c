"""RBAC for real: the Role of config/manifests/dispatcher-rbac.yaml is what the launcher needs
(every other launcher test runs with that ServiceAccount's token), no more; and a missing verb
is an error that names the verb and the resource."""

from __future__ import annotations

import base64
import copy
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import Endpoints
from k8s_cluster import (
    AGENTS_NS,
    DISPATCHER_NS,
    RBAC,
    api_client_for,
    service_account_token,
)
from k8s_support import (
    SLOT,
    Exits,
    delete_managed_jobs,
    k8s_pool,
    launch_env,
    make_launcher,
    read_job,
    wait_exit,
    wait_running,
)
from kubelet import FakeKubelet, Plan
from kubernetes import client
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.models import Task

pytestmark = pytest.mark.kubernetes


def can(api: Any, verb: str, resource: str, namespace: str, group: str = "",
        subresource: str = "") -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": verb, "group": group,
                                              "resource": resource, "namespace": namespace,
                                              "subresource": subresource}}}
    resp = client.AuthorizationV1Api(api).create_self_subject_access_review(
        review, _preload_content=False)
    return bool(json.loads(resp.data)["status"]["allowed"])


# (verb, API group, resource, subresource, namespace): what the launcher and the elector call
NEEDED = [
    ("create", "batch", "jobs", "", AGENTS_NS), ("get", "batch", "jobs", "", AGENTS_NS),
    ("list", "batch", "jobs", "", AGENTS_NS), ("delete", "batch", "jobs", "", AGENTS_NS),
    ("create", "", "secrets", "", AGENTS_NS),
    ("list", "", "pods", "", AGENTS_NS), ("delete", "", "pods", "", AGENTS_NS),
    ("get", "", "pods", "log", AGENTS_NS),
    ("get", "coordination.k8s.io", "leases", "", DISPATCHER_NS),
    ("create", "coordination.k8s.io", "leases", "", DISPATCHER_NS),
    ("update", "coordination.k8s.io", "leases", "", DISPATCHER_NS),
]
NOT_GRANTED = [
    ("get", "", "secrets", "", AGENTS_NS),  # tokens are written, never read back
    ("list", "", "secrets", "", AGENTS_NS),
    ("create", "", "pods", "", AGENTS_NS),  # pods come from the Job controller only
    ("update", "batch", "jobs", "", AGENTS_NS),
    ("create", "batch", "jobs", "", "default"),  # only the agents' namespace
    ("update", "coordination.k8s.io", "leases", "", AGENTS_NS),
]


def test_the_manifest_grants_what_is_called_and_nothing_else(dispatcher_api: Any) -> None:
    for verb, group, resource, sub, ns in NEEDED:
        assert can(dispatcher_api, verb, resource, ns, group, sub), (verb, resource, sub, ns)
    for verb, group, resource, sub, ns in NOT_GRANTED:
        assert not can(dispatcher_api, verb, resource, ns, group, sub), (verb, resource, ns)


def identity_without(admin: Any, endpoints: Endpoints, resource: str, verb: str) -> Any:
    """An ApiClient of a new ServiceAccount bound to the manifest's launcher Role less one verb."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    role = copy.deepcopy(next(d for d in docs if d["kind"] == "Role"
                              and d["metadata"]["namespace"] == AGENTS_NS))
    for rule in role["rules"]:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    role["rules"] = [r for r in role["rules"] if r["verbs"]]
    name = f"limited-{secrets.token_hex(3)}"
    role["metadata"] = {"name": name, "namespace": AGENTS_NS}
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(DISPATCHER_NS, {"metadata": {"name": name}})
    rbac.create_namespaced_role(AGENTS_NS, role)
    rbac.create_namespaced_role_binding(AGENTS_NS, {
        "metadata": {"name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": DISPATCHER_NS}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}})
    return api_client_for(endpoints, service_account_token(admin, DISPATCHER_NS, name))


def test_a_stop_the_server_refuses_is_unconfirmed_and_names_the_missing_verb(
    cluster: Any, control_plane: Endpoints, kubelet: FakeKubelet, tmp_path: Path,
    task_factory: Callable[..., Task],
) -> None:
    api = identity_without(cluster, control_plane, "jobs", "delete")
    launcher = make_launcher(api, launch_env(tmp_path, Exits()))
    try:
        task = task_factory(command=["agent"])
        runner = launcher.launch(task, SLOT, k8s_pool())
        wait_running(cluster, runner.handle or "")
        stopped = launcher.stop(runner, grace=1)
        assert not stopped.confirmed
        assert "HTTP 403" in stopped.reason
        assert "needs the verb 'delete' on 'jobs' in namespace 'necrocode-agents'" in \
            stopped.reason and "dispatcher-rbac.yaml" in stopped.reason
        assert read_job(cluster, runner.handle or "") is not None  # still there, still watched
        kubelet.end(task.key, 0)
        assert wait_exit(launcher, runner).exit_code == 0
    finally:
        launcher.close()
        api.close()
        delete_managed_jobs(cluster)


def test_a_launch_without_secrets_create_fails_clearly_and_leaves_no_job(
    cluster: Any, control_plane: Endpoints, kubelet: FakeKubelet, tmp_path: Path,
    task_factory: Callable[..., Task],
) -> None:
    api = identity_without(cluster, control_plane, "secrets", "create")
    launcher = make_launcher(api, launch_env(tmp_path, Exits()))
    task = task_factory(command=["agent"])
    try:
        with pytest.raises(RunnerLaunchError) as err:
            launcher.launch(task, SLOT, k8s_pool())
        text = str(err.value)
        assert "refused to create secrets" in text and "HTTP 403" in text
        assert "needs the verb 'create' on 'secrets'" in text and not err.value.retryable
        left = client.BatchV1Api(cluster).list_namespaced_job(
            AGENTS_NS, label_selector=f"necrocode.task={task.key.replace('/', '.')}").items
        assert [j for j in left if not j.metadata.deletion_timestamp] == []
    finally:
        launcher.close()
        api.close()
        delete_managed_jobs(cluster)


def test_health_names_a_missing_list_verb(
    cluster: Any, control_plane: Endpoints, tmp_path: Path
) -> None:
    api = identity_without(cluster, control_plane, "jobs", "list")
    launcher = make_launcher(api, launch_env(tmp_path, Exits()))
    try:
        ok, why = launcher.health(k8s_pool())
        assert not ok
        assert "needs the verb 'list' on 'jobs' in namespace 'necrocode-agents'" in why
    finally:
        launcher.close()
        api.close()


def test_the_runner_pod_gets_its_token_from_the_secret(
    dispatcher_api: Any, cluster: Any, kubelet: FakeKubelet, tmp_path: Path,
    task_factory: Callable[..., Task],
) -> None:
    """What a kubelet resolves: the pod's env names the Secret, which holds this runner's token."""
    launcher = make_launcher(dispatcher_api, launch_env(tmp_path, Exits()))
    try:
        task = task_factory(command=["agent"])
        kubelet.plan(task.key, Plan(run_for=0.2))
        runner = launcher.launch(task, SLOT, k8s_pool())
        pod = wait_running(cluster, runner.handle or "")
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        ref = env["NECROCODE_RUNNER_TOKEN"]["valueFrom"]["secretKeyRef"]
        secret = client.CoreV1Api(cluster).read_namespaced_secret(ref["name"], AGENTS_NS)
        assert base64.b64decode(secret.data[ref["key"]]).decode() == f"tok-{runner.runner_id}"
        assert wait_exit(launcher, runner).exit_code == 0
    finally:
        launcher.close()
        delete_managed_jobs(cluster)
