"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``tests/k8s/build.sh`` (cached under ``~/.cache/necrocode/k8s-v1.20.2/bin``).
Everything else is made here in one folder: a CA and a serving certificate for 127.0.0.1 (openssl),
the service-account key pair, a static token file (an admin in ``system:masters``) and an admin
kubeconfig. Free ports are picked at start, so several control planes can run side by side.

    python tests/k8s/controlplane.py start DIR   # starts detached, prints KEY=VALUE lines
    python tests/k8s/controlplane.py stop DIR

Tests use :class:`ControlPlane` directly when no control plane was started for them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VERSION = "v1.20.2"
CACHE = Path(os.environ.get("NECROCODE_K8S_CACHE")
             or Path.home() / ".cache" / "necrocode" / f"k8s-{VERSION}")
BIN = CACHE / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
BUILD_COMMAND = "bash tests/k8s/build.sh"
ADMIN_TOKEN_NAME = "admin-token"
FEATURE_GATES = "TTLAfterFinished=true"


def binaries_missing(bin_dir: Path = BIN) -> list[str]:
    """Names of the control-plane binaries not (yet) built into ``bin_dir``."""
    return [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    """CA, a serving cert for 127.0.0.1/localhost signed by it, and the service-account keys."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
             "/CN=necrocode-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    (folder / "san.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=folder)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "30", "-extfile", "san.cnf", "-extensions", "ext",
             "-out", "server.crt", cwd=folder)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


def kubeconfig(server: str, ca: Path, token: str, user: str = "admin") -> dict[str, object]:
    """A kubeconfig document for ``server`` with a bearer token."""
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "necrocode-test",
        "clusters": [{"name": "necrocode-test",
                      "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "necrocode-test",
                      "context": {"cluster": "necrocode-test", "user": user}}],
    }


@dataclass(frozen=True)
class Endpoints:
    """Where a started control plane answers."""

    server: str  # https://127.0.0.1:PORT
    kubeconfig: Path  # admin (system:masters)
    ca: Path
    cert: Path  # serving certificate (also for the kubelet stand-in)
    key: Path
    admin_token: str


class ControlPlane:
    """Starts and stops etcd + kube-apiserver + kube-controller-manager in ``folder``."""

    def __init__(self, folder: Path, bin_dir: Path = BIN, *, die_with_parent: bool = True) -> None:
        self.folder = folder
        self.bin_dir = bin_dir
        # a test session's control plane goes when the session dies (even by kill -9); the one
        # `controlplane.py start` leaves for CI outlives the command
        self.die_with_parent = die_with_parent
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_in: float | None = None

    @property
    def pki(self) -> Path:
        return self.folder / "pki"

    def endpoints(self) -> Endpoints:
        info = json.loads((self.folder / "endpoints.json").read_text())
        return Endpoints(info["server"], Path(info["kubeconfig"]), self.pki / "ca.crt",
                         self.pki / "server.crt", self.pki / "server.key", info["admin_token"])

    def start(self, timeout: float = 120.0) -> Endpoints:
        """Start the three processes (detached from this one's session); wait for readiness."""
        missing = binaries_missing(self.bin_dir)
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)} in {self.bin_dir}: run "
                               f"{BUILD_COMMAND}")
        began = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        make_certificates(self.pki)
        admin_token = os.urandom(16).hex()
        (self.folder / "tokens.csv").write_text(
            f'{admin_token},admin,admin,"system:masters"\n')
        etcd_client, etcd_peer, secure = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{secure}"
        admin_cfg = self.folder / "admin.kubeconfig"
        admin_cfg.write_text(json.dumps(kubeconfig(server, self.pki / "ca.crt", admin_token)))
        pki = self.pki
        self._spawn("etcd", [
            "--name", "necrocode", "--data-dir", str(self.folder / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"necrocode=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",
        ])
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1", f"--secure-port={secure}", "--insecure-port=0",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={self.folder / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            "--kubelet-preferred-address-types=InternalIP",
            f"--feature-gates={FEATURE_GATES}", "--v=1",
        ])
        self._wait_ready(server, admin_token, began + timeout)
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={admin_cfg}", "--leader-elect=false", "--bind-address=127.0.0.1",
            "--port=0", "--secure-port=0",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}", "--use-service-account-credentials=false",
            f"--feature-gates={FEATURE_GATES}", "--v=1",
        ])
        (self.folder / "endpoints.json").write_text(json.dumps({
            "server": server, "kubeconfig": str(admin_cfg), "admin_token": admin_token,
            "pids": {name: proc.pid for name, proc in self.procs.items()},
        }))
        self.started_in = time.monotonic() - began
        return self.endpoints()

    def _spawn(self, name: str, args: list[str]) -> None:
        logfile = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(
            [str(self.bin_dir / name), *args], stdout=logfile, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_term_with_parent if self.die_with_parent else None)
        logfile.close()

    def _wait_ready(self, server: str, token: str, deadline: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        request = urllib.request.Request(f"{server}/readyz",
                                         headers={"Authorization": f"Bearer {token}"})
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; its log: "
                                       f"{self.folder / (name + '.log')}\n{self.tail(name)}")
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready at {server}: {last}\n"
                           f"{self.tail('kube-apiserver')}")

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.folder / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the processes this object started, or those recorded in the folder."""
        pids = {name: proc.pid for name, proc in self.procs.items()}
        if not pids and (self.folder / "endpoints.json").exists():
            pids = json.loads((self.folder / "endpoints.json").read_text()).get("pids") or {}
        for name in reversed(BINARIES):
            pid = pids.get(name)
            if pid:
                stop_pid(int(pid), self.procs.get(name))
        self.procs.clear()


def _term_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None, wait: float = 10.0) -> None:
    """TERM, wait up to ``wait`` seconds, then KILL one process that this module started."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=5)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: controlplane.py start|stop DIR", file=sys.stderr)
        return 2
    plane = ControlPlane(Path(argv[1]).resolve(), die_with_parent=False)
    if argv[0] == "stop":
        plane.stop()
        return 0
    try:
        ep = plane.start()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"control plane did not start: {exc}", file=sys.stderr)
        plane.stop()
        return 1
    print(f"NECROCODE_K8S_KUBECONFIG={ep.kubeconfig}")
    print(f"NECROCODE_K8S_DIR={plane.folder}")
    print(f"# kube-apiserver {VERSION} ready at {ep.server} in {plane.started_in:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
