"""Fixtures of the `kubernetes` tests: one real control plane and one kubelet stand-in per session.

The control plane is the one `.ci/k8s.sh` started (``NECROCODE_K8S_KUBECONFIG``), else one this
session starts from the cached binaries. In CI (``CI=true``) a missing control plane fails these
tests; elsewhere they skip with the command that builds it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import BIN, BUILD_COMMAND, ControlPlane, Endpoints, binaries_missing
from kubelet import FakeKubelet
from support import wait_until

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "config" / "manifests" / "dispatcher-rbac.yaml"
AGENTS_NS = "necrocode-agents"
DISPATCHER_NS = "necrocode"
DISPATCHER_SA = "necrocode-dispatcher"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """Endpoints of a running kube-apiserver + kube-controller-manager (+ etcd)."""
    given = os.environ.get("NECROCODE_K8S_DIR")
    if given and os.environ.get("NECROCODE_K8S_KUBECONFIG"):
        yield ControlPlane(Path(given)).endpoints()
        return
    missing = binaries_missing()
    if missing:
        why = (f"the Kubernetes tests need etcd, kube-apiserver and kube-controller-manager "
               f"v1.20.2 in {BIN} (missing: {', '.join(missing)}); build them once with "
               f"`{BUILD_COMMAND}` (about 10 minutes)")
        if in_ci():
            pytest.fail(f"CI=true but {why}", pytrace=False)
        pytest.skip(why)
    plane = ControlPlane(tmp_path_factory.mktemp("k8s"))
    try:
        endpoints = plane.start()
    except RuntimeError as exc:
        plane.stop()
        pytest.fail(f"the Kubernetes control plane did not start: {exc}", pytrace=False)
    yield endpoints
    plane.stop()


def api_client_for(endpoints: Endpoints, token: str) -> Any:
    cfg = client.Configuration()
    cfg.host = endpoints.server
    cfg.ssl_ca_cert = str(endpoints.ca)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


@pytest.fixture(scope="session")
def admin(control_plane: Endpoints) -> Iterator[Any]:
    """An ApiClient of the cluster admin (system:masters)."""
    api = api_client_for(control_plane, control_plane.admin_token)
    yield api
    api.close()


def apply(api: Any, path: Path) -> list[dict[str, Any]]:
    """Create every object of a manifest (those that exist already are left as they are)."""
    from kubernetes import utils

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        try:
            utils.create_from_dict(api, doc)
        except utils.FailToCreateError as exc:
            if any(e.status != 409 for e in exc.api_exceptions):
                raise
    return docs


def service_account_token(admin_api: Any, namespace: str, name: str) -> str:
    """The token the token controller made for a ServiceAccount (v1.20: a Secret)."""
    core = client.CoreV1Api(admin_api)

    def token() -> str:
        try:
            sa = json.loads(core.read_namespaced_service_account(
                name, namespace, _preload_content=False).data)
        except client.ApiException as exc:
            if exc.status == 404:  # the ServiceAccount controller has not made it yet
                return ""
            raise
        for ref in sa.get("secrets") or []:
            secret = json.loads(core.read_namespaced_secret(
                ref["name"], namespace, _preload_content=False).data)
            data = secret.get("data") or {}
            if data.get("token"):
                return base64.b64decode(data["token"]).decode()
        return ""

    return str(wait_until(token, 60, f"the token of ServiceAccount {namespace}/{name}", 0.1))


@pytest.fixture(scope="session")
def cluster(admin: Any) -> Any:
    """The manifests applied: namespaces, the Dispatcher's ServiceAccount, Role, RoleBinding;
    the default ServiceAccount of the agents' namespace exists (pods need it)."""
    apply(admin, RBAC)
    core = client.CoreV1Api(admin)

    def default_sa_ready() -> bool:
        try:
            sa = json.loads(core.read_namespaced_service_account(
                "default", AGENTS_NS, _preload_content=False).data)
        except client.ApiException:
            return False
        return bool(sa.get("secrets"))

    wait_until(default_sa_ready, 60, "the default ServiceAccount of necrocode-agents", 0.1)
    return admin


@pytest.fixture(scope="session")
def dispatcher_api(cluster: Any, control_plane: Endpoints) -> Iterator[Any]:
    """An ApiClient with the Dispatcher's ServiceAccount token: only what
    config/manifests/dispatcher-rbac.yaml grants."""
    token = service_account_token(cluster, DISPATCHER_NS, DISPATCHER_SA)
    api = api_client_for(control_plane, token)
    yield api
    api.close()


@pytest.fixture(scope="session")
def kubelet(cluster: Any, control_plane: Endpoints) -> Iterator[FakeKubelet]:
    """The kubelet stand-in: a Ready node that runs the session's pods by script."""
    node = FakeKubelet(cluster, control_plane.cert, control_plane.key).start()
    yield node
    node.stop()
