"""A kubelet stand-in for the real control plane: one Ready node that runs pods by script.

No container runs. The stand-in registers a Ready node and renews its status, binds every
unscheduled pod to it (there is no scheduler either), moves pods Pending -> Running -> Succeeded or
Failed with the exit code and reason a test chose (:class:`Plan`: success, failure, OOMKilled,
eviction, or running until deleted), honours deletion grace periods (a container that ignores TERM
dies at the end of the pod's grace period, one that honours it a moment after the delete), and
serves ``/containerLogs/NS/POD/CONTAINER`` over HTTPS, so ``read_namespaced_pod_log`` goes through
the real apiserver to it. All through the official Python client, as the admin.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

log = logging.getLogger(__name__)

NODE = "necrocode-node-0"
ANN_TASK = "necrocode/task"


@dataclass(frozen=True)
class Plan:
    """What the stand-in does with a pod: run ``run_for`` seconds, then end as told."""

    run_for: float | None = None  # None: run until deleted
    exit_code: int = 0
    reason: str = ""  # container termination reason; "" -> Completed / Error
    evict: bool = False  # end as an evicted pod (phase Failed, reason Evicted) instead
    ignore_term: bool = False  # on delete, die only at the end of the grace period
    term_delay: float = 0.2  # seconds a TERM-honouring container takes to exit
    log: str = ""  # the container's log


@dataclass
class _Run:
    plan: Plan
    started: float | None = None
    ended: bool = False
    deleted_at: float | None = None  # when the stand-in saw the deletion
    log: str = ""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str) -> float:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC).timestamp()


@dataclass
class Timeline:
    """When the stand-in did what to a pod (wall-clock seconds), for the figures."""

    bound: float | None = None
    running: float | None = None
    ended: float | None = None
    removed: float | None = None
    grace: int | None = None  # deletionGracePeriodSeconds as last seen (a delete may shorten it)


class FakeKubelet:
    """Runs the pods of a real apiserver by script (see the module doc)."""

    def __init__(self, api_client: Any, cert: Path, key: Path, node: str = NODE,
                 interval: float = 0.1) -> None:
        self.core = client.CoreV1Api(api_client)
        self.node = node
        self.interval = interval
        self.default = Plan()
        self._plans: list[tuple[Callable[[dict[str, Any]], bool], Plan]] = []
        self._endings: dict[str, tuple[int, str]] = {}  # task key -> (exit code, reason)
        self._runs: dict[str, _Run] = {}  # pod uid -> run
        self._logs: dict[tuple[str, str], str] = {}  # (namespace, pod) -> log
        self.timelines: dict[tuple[str, str], Timeline] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self._server = self._log_server(cert, key)
        self.port = int(self._server.server_address[1])

    # --- scripting --------------------------------------------------------------------------
    def plan(self, task_key: str, plan: Plan) -> None:
        """Pods of the runner Jobs of ``task_key`` follow ``plan`` (latest plan wins)."""
        self.when(lambda pod: _annotations(pod).get(ANN_TASK) == task_key, plan)

    def when(self, match: Callable[[dict[str, Any]], bool], plan: Plan) -> None:
        with self._lock:
            self._plans.insert(0, (match, plan))

    def end(self, task_key: str, exit_code: int = 0, reason: str = "") -> None:
        """The running pods of ``task_key``'s Jobs exit now with ``exit_code``."""
        with self._lock:
            self._endings[task_key] = (exit_code, reason)
        self._wake.set()

    def _plan_for(self, pod: dict[str, Any]) -> Plan:
        with self._lock:
            for match, plan in self._plans:
                if match(pod):
                    return plan
        return self.default

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeKubelet:
        self._register()
        for target, name in ((self._server.serve_forever, "kubelet-logs"),
                             (self._heartbeat, "kubelet-heartbeat"), (self._loop, "kubelet"),
                             (self._watch, "kubelet-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}}}
        try:
            self.core.create_node(body, _preload_content=False)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        self._node_status()

    def _node_status(self) -> None:
        now = _now()
        status = {"status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {"kubeletVersion": "v1.20.2", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "none://0",
                         "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
                         "machineID": "", "systemUUID": "", "bootID": ""},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet stand-in is ready", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
        }}
        self.core.patch_node_status(self.node, status, _preload_content=False)

    def _heartbeat(self) -> None:
        while not self._stop.wait(10.0):
            try:
                self._node_status()
            except Exception as exc:  # the apiserver may be restarting; try again
                log.warning("node status update failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:
                self.errors.append(str(exc))
                log.warning("kubelet stand-in sync failed: %s", exc)
            # poll while a pod has a timed step ahead (its run or grace period); otherwise a
            # pod event wakes the loop (an idle node costs the apiserver one watch)
            busy = any(not run.ended and (run.plan.run_for is not None
                                          or run.deleted_at is not None or run.started is None)
                       for run in list(self._runs.values()))
            self._wake.wait(self.interval if busy else 5.0)
            self._wake.clear()

    def _watch(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for _ in stream.stream(self.core.list_pod_for_all_namespaces,
                                       timeout_seconds=30, _request_timeout=40):
                    self._wake.set()
                    if self._stop.is_set():
                        break
            except Exception as exc:  # the apiserver may be restarting; watch again
                log.warning("kubelet stand-in pod watch ended: %s", exc)
                self._stop.wait(0.5)
            finally:
                stream.stop()

    # --- pods -------------------------------------------------------------------------------
    def sync(self) -> None:
        """One pass over every pod: bind, start, end, kill and remove as due."""
        resp = self.core.list_pod_for_all_namespaces(_preload_content=False)
        pods = json.loads(resp.data)["items"]
        seen = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            uid = meta["uid"]
            seen.add(uid)
            if not spec.get("nodeName"):
                if not meta.get("deletionTimestamp"):
                    self._bind(pod)
                continue
            if spec["nodeName"] != self.node:
                continue
            run = self._runs.get(uid)
            if run is None:
                run = self._runs[uid] = _Run(self._plan_for(pod))
            self._step(pod, run)
        for uid in [u for u in self._runs if u not in seen]:
            del self._runs[uid]

    def _bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
        try:
            self.core.create_namespaced_pod_binding(meta["name"], meta["namespace"], body,
                                                    _preload_content=False)
            self._timeline(pod).bound = time.time()
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _timeline(self, pod: dict[str, Any]) -> Timeline:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        return self.timelines.setdefault(key, Timeline())

    def _step(self, pod: dict[str, Any], run: _Run) -> None:
        meta = pod["metadata"]
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        now = time.monotonic()
        if meta.get("deletionTimestamp"):
            if run.deleted_at is None:
                run.deleted_at = now
            self._timeline(pod).grace = meta.get("deletionGracePeriodSeconds")
            if phase in ("Succeeded", "Failed") or run.ended or run.started is None:
                self._remove(pod)
                return
            if run.plan.ignore_term:
                due = _parse(meta["deletionTimestamp"])
                if time.time() < due:
                    return
                self._end(pod, run, 137, "Error")
            elif now - run.deleted_at >= run.plan.term_delay:
                self._end(pod, run, 143, "Error")
            return
        if run.started is None:
            run.started = now
            self._running(pod, run)
            return
        with self._lock:
            ending = self._endings.get(_annotations(pod).get(ANN_TASK, ""))
        if ending is not None and not run.ended:
            self._end(pod, run, ending[0], ending[1] or ("Completed" if ending[0] == 0
                                                          else "Error"))
            return
        if run.ended or run.plan.run_for is None or now - run.started < run.plan.run_for:
            return
        plan = run.plan
        if plan.evict:
            self._end(pod, run, 137, "Error", evicted=True)
        else:
            self._end(pod, run, plan.exit_code,
                      plan.reason or ("Completed" if plan.exit_code == 0 else "Error"))

    def _container(self, pod: dict[str, Any]) -> str:
        return str(pod["spec"]["containers"][0]["name"])

    def _running(self, pod: dict[str, Any], run: _Run) -> None:
        now = _now()
        self._set_log(pod, run.plan.log)
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                     "ready": True, "restartCount": 0, "started": True,
                     "state": {"running": {"startedAt": now}}}
                    for c in pod["spec"]["containers"]]
        self._patch_status(pod, {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "containerStatuses": statuses})
        self._timeline(pod).running = time.time()

    def _end(self, pod: dict[str, Any], run: _Run, code: int, reason: str, *,
             evicted: bool = False) -> None:
        run.ended = True
        self._set_log(pod, run.plan.log)
        now = _now()
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                     "ready": False, "restartCount": 0, "started": False,
                     "state": {"terminated": {"exitCode": code, "reason": reason,
                                              "startedAt": now, "finishedAt": now}}}
                    for c in pod["spec"]["containers"]]
        status: dict[str, Any] = {
            "phase": "Succeeded" if code == 0 and not evicted else "Failed",
            "conditions": [{"type": t, "status": "False", "lastTransitionTime": now,
                            "reason": "PodCompleted"} for t in ("Ready", "ContainersReady")],
            "containerStatuses": statuses}
        if evicted:
            status["reason"] = "Evicted"
            status["message"] = "The node was low on resource: memory. "
        self._patch_status(pod, status)
        self._timeline(pod).ended = time.time()

    def _remove(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"], meta["namespace"], grace_period_seconds=0,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
                _preload_content=False)
            self._timeline(pod).removed = time.time()
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"],
                                                  {"status": status}, _preload_content=False)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    # --- logs -------------------------------------------------------------------------------
    def _set_log(self, pod: dict[str, Any], text: str) -> None:
        with self._lock:
            self._logs[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = text

    def _log_server(self, cert: Path, key: Path) -> http.server.ThreadingHTTPServer:
        logs, lock = self._logs, self._lock

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) >= 3 and parts[0] == "containerLogs":
                    with lock:
                        text = logs.get((parts[1], parts[2]))
                    if text is not None:
                        data = text.encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "text/plain")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                self.send_error(404, "no such container")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        return server


def _annotations(pod: dict[str, Any]) -> dict[str, str]:
    return pod["metadata"].get("annotations") or {}

