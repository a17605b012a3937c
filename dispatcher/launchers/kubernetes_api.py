"""How the Kubernetes launcher talks to the API server: the client, JSON bodies, and errors that
name what was refused (the verb, the resource, the namespace) and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from ..errors import RunnerLaunchError
from .base import short_error

RBAC_MANIFEST = "config/manifests/dispatcher-rbac.yaml"


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a client error, None when the server was not reached."""
    value = getattr(exc, "status", None)
    return int(value) if isinstance(value, int) and value else None


def body_json(response: Any) -> Any:
    """The decoded JSON of a ``_preload_content=False`` response (or a plain value)."""
    data = response.data if hasattr(response, "data") else response
    if isinstance(data, bytes | bytearray):
        data = data.decode()
    return json.loads(data) if isinstance(data, str) and data else data


def server_message(exc: BaseException) -> str:
    """The ``message`` of the server's Status body, else the error's first line."""
    body = getattr(exc, "body", "") or ""
    if isinstance(body, bytes | bytearray):
        body = body.decode(errors="replace")
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError, TypeError):
        message = None
    return str(message or body or short_error(exc)).strip()


def describe_refusal(exc: BaseException, verb: str, resource: str, namespace: str) -> str:
    """One sentence about a failed call: unreachable, forbidden (naming the RBAC rule that is
    missing), or the server's own message."""
    code = status_of(exc)
    if code is None:
        return (f"cannot reach the Kubernetes API to {verb} {resource} in namespace "
                f"{namespace!r} ({short_error(exc)}); check KUBECONFIG and "
                "`kubectl cluster-info`")
    text = (f"the Kubernetes API refused to {verb} {resource} in namespace {namespace!r} "
            f"(HTTP {code}: {server_message(exc)})")
    if code == 403:
        text += (f"; the Dispatcher's ServiceAccount needs the verb {verb!r} on {resource!r} "
                 f"in namespace {namespace!r} ({RBAC_MANIFEST})")
    elif code == 401:
        text += "; the Dispatcher's credentials are not accepted (token expired or wrong?)"
    return text


def load_api_client(configuration: Any | None) -> Any:
    """An ApiClient from ``configuration``, else in-cluster config, else KUBECONFIG."""
    try:
        from kubernetes import client, config
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RunnerLaunchError(
            "the kubernetes pool needs the `kubernetes` package: pip install "
            "'kubernetes>=27.2.0' (or 'necrocode-dispatcher[kubernetes]')",
            retryable=False,
        ) from exc
    cfg = configuration
    if cfg is None:
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except Exception as in_cluster_exc:
            try:
                # read KUBECONFIG now: the client only looks at it when imported
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                        client_configuration=cfg)
            except Exception as exc:
                raise RunnerLaunchError(
                    "cannot load a Kubernetes configuration: not running in a cluster "
                    f"({in_cluster_exc}) and no usable kubeconfig ({exc}); set KUBECONFIG "
                    "and check `kubectl cluster-info`"
                ) from exc
    return client.ApiClient(cfg)


class JobCalls:
    """The API calls the launcher makes on one runner's Job and pods, by name and namespace.

    Reads raise (``RunnerLaunchError`` naming what was refused, or the client's error when the
    server cannot be reached); deletes answer what went wrong, "" when done or already gone.
    """

    def __init__(self, api_client: Callable[[], Any]) -> None:
        self._api_client = api_client

    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._api_client())

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api_client())

    def list_managed(self, namespace: str, resource: str, selector: str) -> dict[str, Any]:
        """A list (``jobs`` or ``pods``) by label selector."""
        try:
            if resource == "jobs":
                resp = self.batch().list_namespaced_job(namespace, label_selector=selector,
                                                        _preload_content=False)
            else:
                resp = self.core().list_namespaced_pod(namespace, label_selector=selector,
                                                       _preload_content=False)
        except Exception as exc:
            raise RunnerLaunchError(describe_refusal(exc, "list", resource, namespace)) from exc
        return dict(body_json(resp) or {})

    def job_present(self, name: str, namespace: str) -> bool:
        """True while the server has the Job; raises when the server cannot be asked."""
        try:
            self.batch().read_namespaced_job(name, namespace, _preload_content=False)
            return True
        except Exception as exc:
            if status_of(exc) == 404:
                return False
            if status_of(exc) is None:
                raise
            raise RunnerLaunchError(describe_refusal(exc, "get", "jobs", namespace)) from exc

    def pods_of(self, job: str, namespace: str) -> list[dict[str, Any]]:
        """The pods of a Job (v1.20 labels them ``job-name``)."""
        return list(self.list_managed(namespace, "pods", f"job-name={job}").get("items") or [])

    def pod_log(self, pod: str, namespace: str, container: str) -> bytes:
        resp = self.core().read_namespaced_pod_log(pod, namespace, container=container,
                                                   _preload_content=False)
        data = resp.data if hasattr(resp, "data") else resp
        return data if isinstance(data, bytes) else str(data).encode()

    def delete_job(self, name: str, namespace: str, policy: str,
                   grace: float | None = None) -> str:
        kwargs: dict[str, Any] = {"propagation_policy": policy}
        if grace is not None:
            kwargs["grace_period_seconds"] = max(0, int(round(grace)))
        try:
            self.batch().delete_namespaced_job(name, namespace, _preload_content=False, **kwargs)
        except Exception as exc:
            if status_of(exc) != 404:
                return (f"deleting Job {namespace}/{name} failed: "
                        f"{describe_refusal(exc, 'delete', 'jobs', namespace)}")
        return ""

    def delete_pod(self, name: str, namespace: str, grace: int) -> str:
        try:
            self.core().delete_namespaced_pod(name, namespace, grace_period_seconds=grace,
                                              _preload_content=False)
        except Exception as exc:
            if status_of(exc) != 404:
                return describe_refusal(exc, "delete", "pods", namespace)
        return ""
