"""A small loopback Kubernetes API server for the KubernetesLauncher tests.

It speaks the batch/v1 Job, core/v1 Pod and Secret paths the launcher calls (create, get, list
with equality label selectors, delete with propagation, pod logs, the runner token's Secret) and
lets a test drive what a cluster would do: a Job's pod succeeds, fails, is OOM-killed, is evicted
(pod lost), or passes its deadline. Every request is recorded so tests can check what the launcher
sent, field by field.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeCluster:
    """The state behind the fake API: Jobs and Pods by (namespace, name)."""

    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    foreground_delay: float = 0.3  # a Foreground delete keeps the Job this long
    rv: itertools.count = field(default_factory=lambda: itertools.count(100))
    current_rv: str = "99"  # resourceVersion of the newest change (what a list reports)


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif labels.get(term) is None:
            return False
    return True


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without the fake's private bookkeeping keys."""
    return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}


class FakeKubernetesAPI:
    """Serve a FakeCluster on 127.0.0.1; drive pod/Job outcomes from the test."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.lock = threading.RLock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else None

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                body = self._body() if method in ("POST", "DELETE", "PUT", "PATCH") else None
                status, payload, ctype = api.route(method, url.path, query, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubernetesAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # --- routing ----------------------------------------------------------------------------
    def route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, str]:
        with self.lock:
            self.cluster.requests.append(Request(method, path, query, body))
            self._expire_deletions()
            parts = path.strip("/").split("/")
            json_type = "application/json"
            if parts[:2] == ["apis", "batch"] and len(parts) >= 6 and parts[5] == "jobs":
                ns = parts[4]
                name = parts[6] if len(parts) > 6 else None
                if method == "POST" and name is None:
                    return self._create_job(ns, body)
                if method == "GET" and name is None:
                    return 200, self._list("batch/v1", "JobList", self.cluster.jobs, ns,
                                           query.get("labelSelector")), json_type
                if method == "GET" and name:
                    job = self.cluster.jobs.get((ns, name))
                    if job is None:
                        return self._not_found("jobs", name)
                    return 200, _public(job), json_type
                if method == "DELETE" and name:
                    return self._delete_job(ns, name, query, body)
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[4] == "pods":
                ns = parts[3]
                if method == "GET" and len(parts) == 5:
                    return 200, self._list("v1", "PodList", self.cluster.pods, ns,
                                           query.get("labelSelector")), json_type
                if method == "DELETE" and len(parts) == 6:
                    if self.cluster.pods.pop((ns, parts[5]), None) is None:
                        return self._not_found("pods", parts[5])
                    return 200, {"kind": "Status", "status": "Success"}, json_type
                if method == "GET" and len(parts) == 7 and parts[6] == "log":
                    if (ns, parts[5]) not in self.cluster.pods:
                        return self._not_found("pods", parts[5])
                    text = self.cluster.logs.get((ns, parts[5]), "")
                    return 200, text.encode(), "text/plain"
            if parts[:2] == ["api", "v1"] and len(parts) == 5 and parts[4] == "secrets" \
                    and method == "POST":
                secret = copy.deepcopy(body)
                secret["metadata"].update(namespace=parts[3], uid=secrets.token_hex(8))
                self.cluster.secrets[(parts[3], secret["metadata"]["name"])] = secret
                return 201, secret, json_type
            if path == "/version":
                return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake"}, json_type
            return self._not_found("route", path)

    def _next_rv(self) -> str:
        self.cluster.current_rv = str(next(self.cluster.rv))
        return self.cluster.current_rv

    def _list(self, api_version: str, kind: str, store: dict[tuple[str, str], dict[str, Any]],
              ns: str, selector: str | None) -> dict[str, Any]:
        items = [_public(obj) for (n, _), obj in sorted(store.items())
                 if n == ns and _matches(obj["metadata"].get("labels") or {}, selector)]
        return {"apiVersion": api_version, "kind": kind,
                "metadata": {"resourceVersion": self.cluster.current_rv}, "items": items}

    @staticmethod
    def _not_found(kind: str, name: str) -> tuple[int, Any, str]:
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404,
                     "message": f'{kind} "{name}" not found'}, "application/json"

    def _create_job(self, ns: str, body: dict[str, Any]) -> tuple[int, Any, str]:
        name = body["metadata"]["name"]
        if (ns, name) in self.cluster.jobs:
            return 409, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "AlreadyExists", "code": 409,
                         "message": f'jobs.batch "{name}" already exists'}, "application/json"
        job = copy.deepcopy(body)
        meta = job["metadata"]
        meta.update(namespace=ns, uid=secrets.token_hex(8), resourceVersion=self._next_rv(),
                    creationTimestamp=_now_iso())
        job["status"] = {"active": 1, "startTime": _now_iso()}
        self.cluster.jobs[(ns, name)] = job
        template = job["spec"]["template"]
        pod_labels = dict((template.get("metadata") or {}).get("labels") or {})
        pod_labels.update({"job-name": name, "batch.kubernetes.io/job-name": name,
                           "controller-uid": meta["uid"]})
        pod_name = f"{name}-{secrets.token_hex(3)[:5]}"
        containers = template["spec"]["containers"]
        self.cluster.pods[(ns, pod_name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": pod_labels,
                         "uid": secrets.token_hex(8), "resourceVersion": self._next_rv()},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Running", "startTime": _now_iso(), "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                 "restartCount": 0, "state": {"running": {"startedAt": _now_iso()}}}
                for c in containers]},
        }
        return 201, job, "application/json"

    def _delete_job(self, ns: str, name: str, query: dict[str, str],
                    body: Any) -> tuple[int, Any, str]:
        job = self.cluster.jobs.get((ns, name))
        if job is None:
            return self._not_found("jobs", name)
        policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
        grace = query.get("gracePeriodSeconds") or (body or {}).get("gracePeriodSeconds")
        self.cluster.deletes.append({"namespace": ns, "name": name, "propagationPolicy": policy,
                                     "gracePeriodSeconds": grace})
        for key in [k for k, p in self.cluster.pods.items()
                    if k[0] == ns and p["metadata"]["labels"].get("job-name") == name]:
            del self.cluster.pods[key]
        self._next_rv()
        if policy == "Foreground":
            job["metadata"]["deletionTimestamp"] = _now_iso()
            job["metadata"]["finalizers"] = ["foregroundDeletion"]
            job["_gone_at"] = time.monotonic() + self.cluster.foreground_delay
        else:
            del self.cluster.jobs[(ns, name)]
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                     "details": {"name": name, "group": "batch", "kind": "jobs"}}, \
            "application/json"

    def _expire_deletions(self) -> None:
        now = time.monotonic()
        for key in [k for k, j in self.cluster.jobs.items() if j.get("_gone_at", now + 1) <= now]:
            del self.cluster.jobs[key]
            self._next_rv()

    # --- what the test drives ---------------------------------------------------------------
    def job(self, name: str, ns: str = "default") -> dict[str, Any] | None:
        with self.lock:
            self._expire_deletions()
            job = self.cluster.jobs.get((ns, name))
            return copy.deepcopy(job) if job else None

    def jobs(self, ns: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            self._expire_deletions()
            return [copy.deepcopy(j) for (n, _), j in self.cluster.jobs.items()
                    if ns is None or n == ns]

    def pod_of(self, job_name: str, ns: str = "default") -> tuple[str, dict[str, Any]]:
        with self.lock:
            for (n, name), pod in self.cluster.pods.items():
                if n == ns and pod["metadata"]["labels"].get("job-name") == job_name:
                    return name, pod
        raise KeyError(f"no pod for job {job_name}")

    def finish(self, job_name: str, exit_code: int = 0, *, log: str = "", reason: str = "",
               ns: str = "default") -> None:
        """The Job's pod exits with ``exit_code``; the Job becomes Complete or Failed."""
        with self.lock:
            pod_name, pod = self.pod_of(job_name, ns)
            pod["metadata"]["resourceVersion"] = self._next_rv()
            self.cluster.logs[(ns, pod_name)] = log
            status = pod["status"]
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            for cs in status["containerStatuses"]:
                cs["ready"] = False
                cs["state"] = {"terminated": {
                    "exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0
                                                                else "Error"),
                    "startedAt": status["startTime"], "finishedAt": _now_iso()}}
            job = self.cluster.jobs[(ns, job_name)]
            job["metadata"]["resourceVersion"] = self._next_rv()
            if exit_code == 0:
                job["status"] = {"succeeded": 1, "completionTime": _now_iso(),
                                 "startTime": job["status"].get("startTime"),
                                 "conditions": [self._cond("Complete", "", "")]}
            else:
                job["status"] = {"failed": 1, "startTime": job["status"].get("startTime"),
                                 "conditions": [self._cond("Failed", "BackoffLimitExceeded",
                                                           "Job has reached the specified "
                                                           "backoff limit")]}

    def exceed_deadline(self, job_name: str, ns: str = "default") -> None:
        """activeDeadlineSeconds passed: the pod is killed and the Job fails DeadlineExceeded."""
        with self.lock:
            for key in [k for k, p in self.cluster.pods.items()
                        if k[0] == ns and p["metadata"]["labels"].get("job-name") == job_name]:
                del self.cluster.pods[key]
            job = self.cluster.jobs[(ns, job_name)]
            job["metadata"]["resourceVersion"] = self._next_rv()
            job["status"] = {"failed": 1, "startTime": job["status"].get("startTime"),
                             "conditions": [self._cond("Failed", "DeadlineExceeded",
                                                       "Job was active longer than specified "
                                                       "deadline")]}

    def evict(self, job_name: str, ns: str = "default") -> None:
        """The node lost the pod: it is Failed with reason Evicted; the Job has no verdict yet."""
        with self.lock:
            _, pod = self.pod_of(job_name, ns)
            pod["metadata"]["resourceVersion"] = self._next_rv()
            pod["status"] = {"phase": "Failed", "reason": "Evicted",
                             "message": "The node was low on resource: memory.",
                             "startTime": pod["status"].get("startTime")}

    @staticmethod
    def _cond(kind: str, reason: str, message: str) -> dict[str, Any]:
        cond = {"type": kind, "status": "True", "lastProbeTime": _now_iso(),
                "lastTransitionTime": _now_iso()}
        if reason:
            cond.update(reason=reason, message=message)
        return cond
