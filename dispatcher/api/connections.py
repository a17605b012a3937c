"""Admission of HTTP API connections: caps in total and per client, idle ones make room.

Each connection of the API gets a thread and a file descriptor, so both are capped: at most
:attr:`ConnectionLimits.max_connections` at once (and never more than a quarter of the process's
file-descriptor limit: launches need descriptors too), at most
:attr:`ConnectionLimits.max_per_client` from one address. A connection that has not sent a whole
request head yet is *idle*; when a cap is reached, the oldest idle connection (of that client,
else of anyone) is closed to make room for the new one, so a crowd of silent connections can
never keep a runner's heartbeat out. Only when every connection is busy is a new one refused
(HTTP 503 with ``Retry-After``). Connections waiting to be accepted sit in the kernel's listen
backlog (:attr:`ConnectionLimits.backlog`), which costs no thread and no descriptor.
"""

from __future__ import annotations

import logging
import resource
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["ConnectionGate", "ConnectionLimits"]


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds of the API server (config keys ``api_max_connections``,
    ``api_max_connections_per_client``, ``api_read_timeout``)."""

    max_connections: int = 128
    max_per_client: int = 64
    read_timeout: float = 10.0  # seconds a connection may wait between two reads
    backlog: int = 1024  # connections the kernel queues before they are accepted

    def effective_max(self) -> int:
        """The total cap, lowered to a quarter of the file-descriptor limit."""
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (OSError, ValueError):
            return self.max_connections
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(4, min(self.max_connections, soft // 4))


@dataclass
class _Conn:
    client: str
    since: float
    idle: bool = True


class ConnectionGate:
    """Admits, tracks and evicts the server's connections; thread-safe."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.max_total = limits.effective_max()
        self.max_per_client = min(limits.max_per_client, self.max_total)
        self._lock = threading.Lock()
        self._open: dict[socket.socket, _Conn] = {}
        self._per_client: Counter[str] = Counter()
        self.evicted = 0
        self.refused = 0
        self._warned = False

    def admit(self, sock: socket.socket, client: str) -> bool:
        """Take a new connection (closing an idle one to make room); False: refuse it."""
        with self._lock:
            if self._per_client[client] >= self.max_per_client and not self._evict(client):
                return self._refuse(client, "per client")
            if len(self._open) >= self.max_total and not self._evict(None):
                return self._refuse(client, "in total")
            self._open[sock] = _Conn(client, time.monotonic())
            self._per_client[client] += 1
            return True

    def busy(self, sock: socket.socket) -> None:
        """The connection sent a whole request head: it is not idle any more."""
        with self._lock:
            conn = self._open.get(sock)
            if conn is not None:
                conn.idle = False

    def done(self, sock: socket.socket) -> None:
        """The connection is finished (closed by either side)."""
        with self._lock:
            conn = self._open.pop(sock, None)
            if conn is not None:
                self._per_client[conn.client] -= 1
                if self._per_client[conn.client] <= 0:
                    del self._per_client[conn.client]

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def _evict(self, client: str | None) -> bool:
        idle = [(c.since, s) for s, c in self._open.items()
                if c.idle and (client is None or c.client == client)]
        if not idle:
            return False
        _, sock = min(idle, key=lambda item: item[0])
        conn = self._open.pop(sock)
        self._per_client[conn.client] -= 1
        if self._per_client[conn.client] <= 0:
            del self._per_client[conn.client]
        try:
            sock.shutdown(socket.SHUT_RDWR)  # its thread reads EOF and ends
        except OSError:
            pass
        self.evicted += 1
        return True

    def _refuse(self, client: str, which: str) -> bool:
        self.refused += 1
        if not self._warned:
            self._warned = True
            logger.warning("HTTP API: connection from %s refused: %d busy connections %s "
                           "(api_max_connections %d, per client %d); further refusals are "
                           "counted, not logged", client,
                           self._per_client[client] if which == "per client"
                           else len(self._open), which, self.max_total, self.max_per_client)
        return False
