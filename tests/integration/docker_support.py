"""Helpers for tests and benchmarks that use a real Docker engine.

No image can be pulled here, so the runner image is an empty rootfs made with ``docker import``
and the host's Python (interpreter, venv, the project's source) is bind-mounted read-only; the
containers use the host network so runners reach the Dispatcher's API on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TEST_IMAGE = "necrocode-test:empty"
MANAGED = "necrocode.managed=true"
LABEL_ATTEMPT_DIR = "necrocode.attempt-dir"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def connect() -> tuple[Any | None, str]:
    """(client, "") when a Docker engine answers, else (None, why not)."""
    try:
        import docker
    except ImportError:
        return None, "the docker package is not installed (pip install docker)"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return None, f"no Docker engine at {where}: {exc}"
    return client, ""


def ensure_test_image(client: Any) -> bool:
    """Import the empty-rootfs test image if missing; True when this call created it."""
    import docker.errors

    try:
        client.images.get(TEST_IMAGE)
        return False
    except docker.errors.ImageNotFound:
        pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w"):
        pass
    repo, _, tag = TEST_IMAGE.partition(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    return True


def project_root() -> Path:
    import necrocode.dispatcher as pkg

    return Path(pkg.__file__).resolve().parents[1]


def host_python_mounts() -> list[str]:
    """Read-only bind mounts that make the host's Python and this project work in the container."""
    wanted = ["/usr", "/lib", "/lib64", "/bin", "/etc/alternatives"]
    wanted += [sys.prefix, sys.base_prefix, str(project_root())]
    exe = Path(sys.executable).resolve()
    wanted.append(str(exe.parent.parent))
    chosen: list[str] = []
    for raw in sorted({str(Path(p)) for p in wanted}, key=len):
        if not Path(raw).exists():
            continue
        if any(raw == c or raw.startswith(c.rstrip("/") + "/") for c in chosen):
            continue
        chosen.append(raw)
    return [f"{p}:{p}:ro" for p in chosen]


def docker_pool_config(**overrides: Any) -> dict[str, Any]:
    """The ``config:`` of a docker pool that works with the test image."""
    cfg: dict[str, Any] = {
        "image": TEST_IMAGE,
        "network": "host",
        "mounts": host_python_mounts(),
        "python": sys.executable,
        "mount_repo_pool": True,
        "pull": False,
        "env": {"HOME": "/tmp"},
    }
    cfg.update(overrides)
    return cfg


def managed_containers(client: Any, under: str | None = None) -> list[Any]:
    """Managed containers; with ``under``, only those whose attempt directory lies there (the
    containers of one test session: several sessions may share an engine)."""
    found = client.containers.list(all=True, filters={"label": MANAGED})
    if under is None:
        return list(found)
    return [c for c in found
            if str((c.labels or {}).get(LABEL_ATTEMPT_DIR, "")).startswith(under)]


def remove_managed(client: Any, under: str | None = None) -> list[str]:
    """Force-remove managed containers (of this session when ``under`` is given); the names
    of those that were left."""
    left = []
    for container in managed_containers(client, under):
        left.append(container.name)
        try:
            container.remove(force=True, v=True)
        except Exception:
            pass
    return left


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Received:
    """Requests a :class:`HeartbeatReceiver` got."""

    heartbeats: dict[str, list[float]] = field(default_factory=dict)
    completions: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


class HeartbeatReceiver:
    """A tiny stand-in for the Dispatcher API: records runner heartbeats and completions."""

    def __init__(self) -> None:
        self.received = Received()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b"{}"
                parts = self.path.strip("/").split("/")
                ok = len(parts) == 4 and parts[:2] == ["v1", "runners"]
                if ok:
                    receiver._record(parts[2], parts[3], body, self.headers.get("Authorization"))
                payload = json.dumps({"ok": ok}).encode()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802
                payload = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _record(self, runner_id: str, verb: str, body: bytes, auth: str | None) -> None:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = {}
        with self.cond:
            if verb == "heartbeat":
                self.received.heartbeats.setdefault(runner_id, []).append(time.time())
            elif verb == "complete":
                self.received.completions[runner_id] = data
            if auth:
                self.received.tokens[runner_id] = auth
            self.cond.notify_all()

    def heartbeats(self, runner_id: str) -> list[float]:
        with self.lock:
            return list(self.received.heartbeats.get(runner_id, []))

    def __enter__(self) -> HeartbeatReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def iter_lines(path: Path) -> Iterator[str]:
    if path.exists():
        yield from path.read_text(errors="replace").splitlines()


class EngineProxy:
    """A Unix socket in front of the real Docker engine that a test can cut: while cut, every
    request fails as it does when the engine's socket is gone; the engine itself (and what it
    runs) is untouched."""

    def __init__(self, target: str, path: Path) -> None:
        self.target = target.removeprefix("unix://")
        self.path = path
        self.url = f"unix://{path}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Answer again."""
        with self._lock:
            if self._listener is not None:
                return
            self.path.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.path))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse and drop every connection, as if the engine's socket were gone."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        self.path.unlink(missing_ok=True)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ContainerWatch:
    """Counts, every 50 ms, the running containers of one task on the real engine, and keeps
    the highest count seen (a task must never have two at once)."""

    def __init__(self, client: Any, task_key: str) -> None:
        self.client = client
        self.label = f"necrocode.task={task_key}"
        self.most = 0
        self.ids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                found = self.client.containers.list(filters={"label": self.label})
            except Exception:
                continue
            self.ids.update(c.id for c in found)
            self.most = max(self.most, len(found))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
