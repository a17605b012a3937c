"""What the `kubernetes` tests share about the cluster: namespaces, the RBAC manifest, clients
for a token, applying a manifest, a ServiceAccount's token. (Tests import this, never conftest:
several test folders have a conftest module of that name.)"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import yaml
from controlplane import Endpoints
from kubernetes import client
from support import wait_until

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "config" / "manifests" / "dispatcher-rbac.yaml"
AGENTS_NS = "necrocode-agents"
DISPATCHER_NS = "necrocode"
DISPATCHER_SA = "necrocode-dispatcher"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def api_client_for(endpoints: Endpoints, token: str) -> Any:
    cfg = client.Configuration()
    cfg.host = endpoints.server
    cfg.ssl_ca_cert = str(endpoints.ca)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


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
