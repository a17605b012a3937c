"""Benchmark: the real Kubernetes control plane of tests/k8s (etcd, kube-apiserver and
kube-controller-manager v1.20.2 with the kubelet stand-in).

Needs the binaries (``bash tests/k8s/build.sh``):

    python tests/bench/bench_kubernetes.py [--starts 3] [--jobs 10] [--failovers 3]

Prints three tables:
- control-plane start: processes started to ``/readyz`` answering;
- a runner's Job through KubernetesLauncher (the Dispatcher's ServiceAccount): ``launch()`` to the
  pod Running (the real Job controller creates it, the stand-in binds and starts it), and to the
  completion seen by ``poll()`` for a pod that runs 0.5 s;
- leader failover: ``kill -9`` of the leading replica process to the standby leading, with
  duration 3 s, renew deadline 2 s, retry period 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(HERE / "k8s"), str(HERE)]

from controlplane import ControlPlane, binaries_missing  # noqa: E402
from k8s_cluster import (  # noqa: E402
    DISPATCHER_NS,
    DISPATCHER_SA,
    RBAC,
    api_client_for,
    apply,
    service_account_token,
)
from k8s_support import SLOT, Exits, delete_managed_jobs, k8s_pool, launch_env  # noqa: E402
from kubelet import FakeKubelet, Plan  # noqa: E402
from necrocode.dispatcher.launchers.kubernetes import KubernetesLauncher  # noqa: E402
from necrocode.dispatcher.models import Task  # noqa: E402
from support import wait_until  # noqa: E402
from test_k8s_leader import Replica  # noqa: E402


def row(name: str, values: list[float]) -> str:
    return (f"| {name} | {len(values)} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} |")


def header(title: str) -> None:
    print(f"\n{title}\n\n| step | n | median s | min s | max s |\n|---|---|---|---|---|")


def bench_starts(n: int) -> None:
    times = []
    for _ in range(n):
        with tempfile.TemporaryDirectory(prefix="necrocode-bench-k8s-") as tmp:
            plane = ControlPlane(Path(tmp))
            began = time.monotonic()
            try:
                plane.start()
                times.append(time.monotonic() - began)
            finally:
                plane.stop()
    header("Control plane (etcd + kube-apiserver + kube-controller-manager)")
    print(row("start to /readyz", times))


def bench_jobs(admin: Any, sa_api: Any, kubelet: FakeKubelet, n: int) -> None:
    running, done = [], []
    with tempfile.TemporaryDirectory() as tmp:
        launcher = KubernetesLauncher(launch_env(Path(tmp), Exits()), api_client=sa_api,
                                      poll_interval=0.05)
        try:
            for i in range(n):
                task = Task(id=f"bench{i}", taskset="bench", title="", command=["agent"])
                kubelet.plan(task.key, Plan(run_for=0.5))
                began = time.monotonic()
                runner = launcher.launch(task, SLOT, k8s_pool())
                key = runner.handle or ""
                wait_until(lambda key=key: any(
                    ns == "necrocode-agents" and name.startswith(key) and tl.running
                    for (ns, name), tl in list(kubelet.timelines.items())), 30, "running", 0.01)
                running.append(time.monotonic() - began)
                wait_until(lambda runner=runner: launcher.poll(runner), 30, "completion", 0.01)
                done.append(time.monotonic() - began)
                launcher.release(runner)
        finally:
            launcher.close()
            delete_managed_jobs(admin)
    header("A runner's Job (KubernetesLauncher, ServiceAccount of dispatcher-rbac.yaml)")
    print(row("launch() -> pod Running", running))
    print(row("launch() -> completion seen by poll() (pod runs 0.5 s)", done))


def bench_failover(endpoints: Any, token: str, n: int) -> None:
    times = []
    for i in range(n):
        lease = f"bench-lease-{os.getpid()}-{i}"
        replicas = [Replica(endpoints, token, lease, name) for name in ("a", "b")]
        try:
            leader = wait_until(lambda pair=replicas: [r for r in pair if r.times("leading")],
                                30, "a leader", 0.02)[0]
            standby = next(r for r in replicas if r is not leader)
            time.sleep(1.0)  # a few renewals
            killed = time.time()
            leader.proc.send_signal(signal.SIGKILL)
            took = wait_until(lambda other=standby: other.times("leading"), 30, "takeover",
                              0.01)[0]
            times.append(took - killed)
        finally:
            for replica in replicas:
                replica.close()
    header("Leader failover (Lease duration 3 s, renew deadline 2 s, retry 0.5 s)")
    print(row("kill -9 of the leader -> standby leading", times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    if binaries_missing():
        print("build the control plane first: bash tests/k8s/build.sh", file=sys.stderr)
        return 1
    bench_starts(args.starts)
    with tempfile.TemporaryDirectory(prefix="necrocode-bench-k8s-") as tmp:
        plane = ControlPlane(Path(tmp))
        endpoints = plane.start()
        try:
            admin = api_client_for(endpoints, endpoints.admin_token)
            apply(admin, RBAC)
            token = service_account_token(admin, DISPATCHER_NS, DISPATCHER_SA)
            wait_until(lambda: service_account_token(admin, "necrocode-agents", "default"), 60,
                       "the agents' default ServiceAccount", 0.1)
            sa_api = api_client_for(endpoints, token)
            kubelet = FakeKubelet(admin, endpoints.cert, endpoints.key).start()
            try:
                bench_jobs(admin, sa_api, kubelet, args.jobs)
                bench_failover(endpoints, token, args.failovers)
            finally:
                kubelet.stop()
        finally:
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
