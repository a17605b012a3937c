"""Spawner: the local launcher's side of the spawn server (:mod:`.spawn_server`).

One server per launcher, started at the first launch. :meth:`Spawner.spawn` sends a request and
waits for the pid; a reader thread takes the answers and the exit notices, and calls
``on_exit(runner_id, rc)`` once a child's status is on disk and the child reaped. When the server
cannot be started or has gone, :attr:`Spawner.alive` is False and the launcher starts its
agents itself (the ``sh`` trampoline records their status then).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

__all__ = ["SpawnError", "Spawner"]

#: Seconds a spawn may wait for the server's answer before the launch is given up.
SPAWN_TIMEOUT = 30.0
#: Seconds the server may take to say it is ready.
START_TIMEOUT = 10.0

_SERVER = str(Path(__file__).with_name("spawn_server.py"))


class SpawnError(Exception):
    """The server refused the spawn (``str`` says why) or did not answer."""


class Spawner:
    """Starts commands through one spawn server process; thread-safe."""

    def __init__(self, on_exit: Callable[[str, int], None], *,
                 on_lost: Callable[[], None] = lambda: None,
                 cgroup_home: str | None = None, log_path: Path | None = None) -> None:
        self._on_exit = on_exit
        self._log_path = log_path
        self._on_lost = on_lost
        self._cgroup_home = cgroup_home
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._failed = False
        self._closed = False
        self.pid: int | None = None
        self.cgroups = False  # runners start inside their cgroup

    @property
    def alive(self) -> bool:
        """The server answers (or has not been needed yet and may be started)."""
        return not self._failed and not self._closed

    def spawn(self, request: dict[str, Any]) -> int:
        """Start ``request`` (see the server's protocol); its pid. Raises SpawnError."""
        sock = self._ensure()
        fut: Future[dict[str, Any]] = Future()
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self._waiting[rid] = fut
        line = json.dumps({**request, "id": rid}).encode() + b"\n"
        try:
            with self._send_lock:
                sock.sendall(line)
            answer = fut.result(timeout=SPAWN_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            with self._lock:
                self._waiting.pop(rid, None)
            self._lost(f"no answer to a spawn: {exc or 'timed out'}")
            raise SpawnError(f"the spawn server did not answer ({exc or 'timed out'})") from exc
        if "pid" not in answer:
            raise SpawnError(str(answer.get("error") or "refused"))
        return int(answer["pid"])

    def close(self) -> None:
        """Let the server go: it exits once its last child ended (children are left alone)."""
        with self._lock:
            self._closed = True
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- internals -----------------------------------------------------------------------
    def _ensure(self) -> socket.socket:
        with self._lock:
            if self._sock is not None and not self._failed:
                return self._sock
            if self._failed or self._closed:
                raise SpawnError("the spawn server is not running")
            ours, theirs = socket.socketpair()
            try:
                # its own output goes to a file: it outlives us, and must not hold our pipes
                with _server_log(self._log_path) as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-I", "-S", _SERVER, str(theirs.fileno()),
                         self._cgroup_home or ""],
                        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=log,
                        stderr=log, start_new_session=True, cwd="/")
            except OSError as exc:
                ours.close()
                self._failed = True
                raise SpawnError(f"cannot start the spawn server: {exc}") from exc
            finally:
                theirs.close()
            ready = _read_line(ours, START_TIMEOUT)
            if ready is None or "ready" not in ready:
                ours.close()
                self._failed = True
                raise SpawnError("the spawn server did not start")
            self._sock, self._proc = ours, proc
            self.pid = int(ready["ready"])
            self.cgroups = bool(ready.get("cgroup"))
            threading.Thread(target=self._read, args=(ours,), daemon=True,
                             name="necrocode-spawn-reader").start()
            return ours

    def _read(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    self._dispatch(json.loads(line))
        self._lost("the spawn server closed its socket")
        proc = self._proc
        if proc is not None:
            proc.wait()  # it exits after its last child; reap it (off every other thread)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            self._on_exit(str(message["exit"]), int(message["rc"]))
            return
        with self._lock:
            fut = self._waiting.pop(int(message.get("id") or 0), None)
        if fut is not None:
            fut.set_result(message)

    def _lost(self, why: str) -> None:
        with self._lock:
            was_closed, self._failed = self._closed, True
            waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            fut.set_result({"error": why})
        if not was_closed:
            logger.warning("local runners: %s; agents are started without it from now on", why)
            self._on_lost()


def _server_log(path: Path | None) -> IO[bytes]:
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(path, "ab")
        except OSError as exc:
            logger.warning("cannot open %s for the spawn server's messages: %s", path, exc)
    return open(os.devnull, "wb")


def _read_line(sock: socket.socket, timeout: float) -> dict[str, Any] | None:
    sock.settimeout(timeout)
    buf = b""
    try:
        while b"\n" not in buf:
            data = sock.recv(4096)
            if not data:
                return None
            buf += data
    except OSError:
        return None
    finally:
        sock.settimeout(None)
    line, _, rest = buf.partition(b"\n")
    if rest:  # cannot happen: the server says nothing more before a request
        return None
    value = json.loads(line)
    return value if isinstance(value, dict) else None


def spawner_enabled() -> bool:
    """The spawn server is used unless ``NECROCODE_SPAWNER=direct`` says otherwise."""
    return os.environ.get("NECROCODE_SPAWNER", "server") != "direct"
