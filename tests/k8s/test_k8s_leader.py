"""Leader election over a real coordination.k8s.io/v1 Lease, with the Dispatcher's ServiceAccount
(the leader-election Role of config/manifests/dispatcher-rbac.yaml): two replica processes, and
in-process electors for what a test must steer (a stolen Lease, a server that went away)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import Endpoints
from k8s_cluster import DISPATCHER_NS, DISPATCHER_SA, api_client_for, service_account_token
from kubernetes import client
from necrocode.dispatcher.leader import KubernetesLeaseStore, LeaderElector
from support import wait_until

pytestmark = pytest.mark.kubernetes
HOLDER = Path(__file__).with_name("lease_holder.py")
DURATION, RENEW, RETRY = 3.0, 2.0, 0.5


class Replica:
    """A lease_holder.py process and the JSON lines it printed."""

    def __init__(self, endpoints: Endpoints, token: str, lease: str, identity: str) -> None:
        self.identity = identity
        self.events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(HOLDER), endpoints.server, str(endpoints.ca), DISPATCHER_NS,
             lease, identity, str(DURATION), str(RENEW), str(RETRY)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "NECROCODE_TEST_TOKEN": token})
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def times(self, event: str) -> list[float]:
        return [e["t"] for e in list(self.events) if e["event"] == event]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)


@pytest.fixture(scope="module")
def sa_token(cluster: Any) -> str:
    return service_account_token(cluster, DISPATCHER_NS, DISPATCHER_SA)


@pytest.fixture
def lease() -> str:
    return f"necrocode-dispatcher-{secrets.token_hex(3)}"


@pytest.fixture
def replicas(control_plane: Endpoints, sa_token: str, lease: str) -> Iterator[list[Replica]]:
    started = [Replica(control_plane, sa_token, lease, name) for name in ("replica-a",
                                                                          "replica-b")]
    yield started
    for replica in started:
        replica.close()


def leader_of(replicas: list[Replica]) -> tuple[Replica, Replica]:
    first = wait_until(lambda: [r for r in replicas if r.times("leading")], 30,
                       "one replica to lead", 0.05)
    (leader,) = first
    (standby,) = [r for r in replicas if r is not leader]
    return leader, standby


def test_the_standby_takes_over_after_kill_9_of_the_leader(
    replicas: list[Replica], cluster: Any, lease: str
) -> None:
    leader, standby = leader_of(replicas)
    wait_until(lambda: leader.times("dispatch"), 10, "the leader dispatching", 0.05)
    assert not standby.times("dispatch")  # only the leader dispatches
    record = client.CoordinationV1Api(cluster).read_namespaced_lease(lease, DISPATCHER_NS)
    assert record.spec.holder_identity == leader.identity
    assert record.spec.lease_duration_seconds == int(DURATION)
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(timeout=10)
    last = max(leader.times("dispatch"))
    took_over = wait_until(lambda: standby.times("leading"), 30, "the standby to lead", 0.05)[0]
    first = wait_until(lambda: standby.times("dispatch"), 10, "the new leader dispatching",
                       0.05)[0]
    assert took_over > last and first > last  # one leader at a time
    record = client.CoordinationV1Api(cluster).read_namespaced_lease(lease, DISPATCHER_NS)
    assert record.spec.holder_identity == standby.identity
    assert record.spec.lease_transitions == 1


def test_a_paused_leader_knows_it_lost_as_soon_as_it_runs_again(replicas: list[Replica]) -> None:
    """SIGSTOP: the leader cannot renew; the standby takes over; on SIGCONT the old leader's
    is_leader is already false (its renew deadline passed) and it never dispatches again."""
    leader, standby = leader_of(replicas)
    wait_until(lambda: leader.times("dispatch"), 10, "the leader dispatching", 0.05)
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        took_over = wait_until(lambda: standby.times("leading"), 30, "the standby to lead",
                               0.05)[0]
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    lost = wait_until(lambda: [e for e in list(leader.events) if e["event"] == "lost"], 30,
                      "the old leader to report the loss", 0.05)
    assert "renew_deadline" in lost[0]["why"] or "held by replica" in lost[0]["why"]
    wait_until(lambda: len(standby.times("dispatch")) > 5, 10, "the new leader dispatching", 0.05)
    assert all(t < took_over for t in leader.times("dispatch"))  # no two leaders at once


def in_process(api: Any, lease: str, identity: str, lost: list[str]) -> LeaderElector:
    return LeaderElector(KubernetesLeaseStore(api, lease, DISPATCHER_NS, request_timeout=RETRY),
                         identity, duration=DURATION, renew_deadline=RENEW, retry_period=RETRY,
                         on_lost=lost.append)


def test_a_leader_whose_lease_was_taken_steps_down_at_its_next_renewal(
    dispatcher_api: Any, cluster: Any, lease: str
) -> None:
    lost: list[str] = []
    elector = in_process(dispatcher_api, lease, "replica-a", lost)
    elector.start()
    try:
        assert elector.wait_until_leader(30) and elector.state.value == "leading"
        api = client.CoordinationV1Api(cluster)
        record = api.read_namespaced_lease(lease, DISPATCHER_NS)
        record.spec.holder_identity = "replica-z"  # another writer won (e.g. after a pause)
        api.replace_namespaced_lease(lease, DISPATCHER_NS, record)
        wait_until(lambda: lost, 10, "the leader to notice", 0.02)
        assert not elector.is_leader
        assert lost == ["the Lease is held by replica-z"]
        assert elector.holder == "replica-z"
    finally:
        elector.stop(release=False)


def test_release_hands_the_lease_over_without_waiting_for_it_to_expire(
    dispatcher_api: Any, lease: str
) -> None:
    a_lost: list[str] = []
    a = in_process(dispatcher_api, lease, "replica-a", a_lost)
    b = LeaderElector(KubernetesLeaseStore(dispatcher_api, lease, DISPATCHER_NS), "replica-b",
                      duration=60, renew_deadline=40, retry_period=RETRY)
    a.start()
    try:
        assert a.wait_until_leader(30)
        b.start()
        wait_until(lambda: b.holder == "replica-a", 10, "b to see a's Lease", 0.05)
        a.stop(release=True)
        assert a_lost == ["released"]
        assert b.wait_until_leader(20)  # well before a duration of 60 s could pass
    finally:
        a.stop(release=False)
        b.stop(release=True)


class CuttableProxy:
    """A TCP relay to the apiserver on 127.0.0.1 that a test can cut (the server 'goes away')."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.socks: list[socket.socket] = []
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.cut.set()
        try:  # wakes the accept() of the relay thread (close alone would not)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_a_leader_that_cannot_reach_the_server_steps_down_by_its_renew_deadline(
    control_plane: Endpoints, sa_token: str, lease: str
) -> None:
    port = int(control_plane.server.rsplit(":", 1)[1])
    proxy = CuttableProxy(port)
    api = api_client_for(control_plane, sa_token)
    api.configuration.host = f"https://127.0.0.1:{proxy.port}"
    api.configuration.retries = False
    lost: list[str] = []
    elector = in_process(api, lease, "replica-a", lost)
    elector.start()
    try:
        assert elector.wait_until_leader(30)
        proxy.close()
        wait_until(lambda: not elector.is_leader, 10, "leadership to end", 0.02)
        wait_until(lambda: lost, 10, "the loss to be reported", 0.02)
        assert lost == [f"could not renew within renew_deadline ({RENEW:g} s)"]
    finally:
        elector.stop(release=False)
        proxy.close()
        api.close()
