"""Fixtures of the `kubernetes` tests: one real control plane and one kubelet stand-in per session.

The control plane is the one `.ci/k8s.sh` started (``NECROCODE_K8S_KUBECONFIG``), else one this
session starts from the cached binaries. In CI (``CI=true``) a missing control plane fails these
tests; elsewhere they skip with the command that builds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import BIN, BUILD_COMMAND, ControlPlane, Endpoints, binaries_missing
from k8s_cluster import (
    AGENTS_NS,
    DISPATCHER_NS,
    DISPATCHER_SA,
    RBAC,
    api_client_for,
    apply,
    in_ci,
    service_account_token,
)
from kubelet import FakeKubelet
from kubernetes import client
from support import wait_until


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


@pytest.fixture(scope="session")
def admin(control_plane: Endpoints) -> Iterator[Any]:
    """An ApiClient of the cluster admin (system:masters)."""
    api = api_client_for(control_plane, control_plane.admin_token)
    yield api
    api.close()


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
