"""Leader election between Dispatcher replicas over a ``coordination.k8s.io/v1`` Lease.

The rules are those of client-go's leaderelection: the holder renews the Lease every
``retry_period``; a standby takes it over once it has seen no renewal for ``duration`` seconds
(measured on its own clock from when it last saw the record change, so clocks need not agree);
every write is conditional on the Lease's resourceVersion, so two replicas never both win.

Fencing: :attr:`LeaderElector.is_leader` is computed at the moment it is read: a leader whose last
successful renewal began more than ``renew_deadline`` seconds ago is not leader any more, even if
its renewing thread hangs on an unreachable server. A renewal that finds another holder (or a
Lease it may not write) ends leadership at once. ``renew_deadline < duration``: a leader always
knows it lost before a standby can take over.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .errors import DispatcherError
from .ha_config import HAConfig
from .launchers.kubernetes_api import describe_refusal

log = logging.getLogger(__name__)


class LeaseConflict(DispatcherError):
    """Someone else wrote the Lease first (create: it exists; update: resourceVersion moved)."""


class LeaseRefused(DispatcherError):
    """The server refused the Lease call for good (RBAC, invalid): retrying will not help."""


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says: who holds it and since when (wall-clock seconds)."""

    holder: str  # "" when released
    duration: float
    acquired_at: float
    renewed_at: float
    transitions: int = 0
    version: str = ""  # resourceVersion: writes are conditional on it


class LeaseStore(Protocol):
    """Where the Lease lives; :class:`KubernetesLeaseStore` in a cluster, fakes in unit tests."""

    def get(self) -> LeaseRecord | None:
        """The Lease, or None when it does not exist."""

    def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create it; LeaseConflict if it exists."""

    def update(self, record: LeaseRecord) -> LeaseRecord:
        """Replace it if ``record.version`` is still current; LeaseConflict otherwise."""


class LeaderState(str, enum.Enum):
    STANDBY = "standby"  # waiting for the Lease
    LEADING = "leading"  # holds the Lease: may dispatch
    STOPPED = "stopped"  # elector not running


class LeaderElector:
    """Acquire, renew and release one Lease; tell ``on_started_leading`` and ``on_lost``.

    Callbacks run on the elector's thread; they must return quickly (post to the engine).
    """

    def __init__(self, store: LeaseStore, identity: str, *, duration: float = 15.0,
                 renew_deadline: float = 10.0, retry_period: float = 2.0,
                 on_started_leading: Callable[[], None] | None = None,
                 on_lost: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if not 0 < retry_period < renew_deadline < duration:
            raise ValueError("need 0 < retry_period < renew_deadline < duration")
        self.store = store
        self.identity = identity
        self.duration = duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_lost = on_lost
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._leading = False
        self._valid_until = 0.0  # monotonic: leadership ends here unless renewed
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._became_leader = threading.Event()
        self.lost_reason = ""

    @classmethod
    def from_config(cls, config: HAConfig, store: LeaseStore, **callbacks: Any) -> LeaderElector:
        """An elector with the ``ha:`` section's timing and identity."""
        return cls(store, config.resolved_identity(), duration=config.duration,
                   renew_deadline=config.renew_deadline, retry_period=config.retry_period,
                   **callbacks)

    # --- what the engine reads ----------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True only while this replica holds a Lease it renewed within ``renew_deadline``."""
        with self._lock:
            return self._leading and self._clock() < self._valid_until

    @property
    def state(self) -> LeaderState:
        if self._thread is None or not self._thread.is_alive():
            return LeaderState.STOPPED
        return LeaderState.LEADING if self.is_leader else LeaderState.STANDBY

    @property
    def holder(self) -> str | None:
        """The holder identity last seen in the Lease (None before the first look)."""
        with self._lock:
            return self._observed.holder if self._observed is not None else None

    def wait_until_leader(self, timeout: float | None = None) -> bool:
        """Block until this replica leads (True) or ``timeout`` passes (False)."""
        return self._became_leader.wait(timeout) and self.is_leader

    # --- one step -----------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """One attempt: take a free or expired Lease, or renew ours. True when we hold it now.

        Raises LeaseRefused when the server refuses for good; other errors (unreachable server)
        propagate as they are.
        """
        began = self._clock()
        now = self._wall()
        current = self.store.get()
        if current is None:
            mine = LeaseRecord(self.identity, self.duration, now, now, 0)
            try:
                written = self.store.create(mine)
            except LeaseConflict:
                return False
            return self._won(written, began)
        self._observe(current, began)
        held_by_other = current.holder not in ("", self.identity)
        if held_by_other and self._observed_at + current.duration > began:
            return False  # another holder, renewed within its duration as far as we saw
        if current.holder == self.identity:
            mine = replace(current, duration=self.duration, renewed_at=now)
        else:
            mine = LeaseRecord(self.identity, self.duration, now, now, current.transitions + 1,
                               current.version)
        try:
            written = self.store.update(mine)
        except LeaseConflict:
            return False
        return self._won(written, began)

    def _observe(self, record: LeaseRecord, at: float) -> None:
        with self._lock:
            seen = self._observed
            if seen is None or (seen.holder, seen.renewed_at, seen.version) != (
                    record.holder, record.renewed_at, record.version):
                self._observed, self._observed_at = record, at

    def _won(self, record: LeaseRecord, began: float) -> bool:
        with self._lock:
            self._observed, self._observed_at = record, began
            self._valid_until = began + self.renew_deadline
            first = not self._leading
            self._leading = True
        if first:
            log.info("leader election: %s now holds the Lease", self.identity)
            self.lost_reason = ""
            self._became_leader.set()
            if self.on_started_leading is not None:
                self.on_started_leading()
        return True

    def _lose(self, reason: str) -> None:
        with self._lock:
            was = self._leading
            self._leading = False
            self._valid_until = 0.0
        if was:
            self.lost_reason = reason
            self._became_leader.clear()
            log.warning("leader election: %s lost the Lease: %s", self.identity, reason)
            if self.on_lost is not None:
                self.on_lost(reason)

    # --- the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        """Run elections on a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="necrocode-leader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            leading = self._leading
            try:
                held = self.try_acquire_or_renew()
                if leading and not held:
                    holder = self.holder or "someone else"
                    self._lose(f"the Lease is held by {holder}")
            except LeaseRefused as exc:
                self._lose(str(exc))
            except Exception as exc:  # server unreachable: keep trying until the deadline
                log.warning("leader election: cannot reach the Lease: %s", exc)
            if self._leading and not self.is_leader:
                self._lose(f"could not renew within renew_deadline ({self.renew_deadline:g} s)")
            wait = self.retry_period
            if self._leading:
                wait = max(0.0, min(wait, self._valid_until - self._clock()))
            self._stop.wait(wait)

    def stop(self, release: bool = True) -> None:
        """Stop the thread; with ``release`` hand the Lease over at once (holder cleared)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_period + 5.0)
        if release:
            self.release()
        self._lose("the elector stopped")

    def release(self) -> bool:
        """Give up a Lease we hold so a standby takes it without waiting; True if released."""
        if not self._leading:
            return False
        try:
            current = self.store.get()
            if current is None or current.holder != self.identity:
                return False
            self.store.update(replace(current, holder="", duration=1.0, renewed_at=self._wall()))
        except Exception as exc:
            log.warning("leader election: could not release the Lease: %s", exc)
            return False
        self._lose("released")
        return True


# --- the Lease in a cluster ---------------------------------------------------------------------

def _micro(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ"
    return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC).timestamp()


class KubernetesLeaseStore:
    """The Lease ``name`` in ``namespace`` through the official client (``api_client``)."""

    def __init__(self, api_client: Any, name: str, namespace: str,
                 request_timeout: float = 5.0) -> None:
        from kubernetes import client

        self.api = client.CoordinationV1Api(api_client)
        self.name = name
        self.namespace = namespace
        self.timeout = request_timeout

    def _record(self, data: dict[str, Any]) -> LeaseRecord:
        spec = data.get("spec") or {}
        return LeaseRecord(
            holder=spec.get("holderIdentity") or "",
            duration=float(spec.get("leaseDurationSeconds") or 0),
            acquired_at=_seconds(spec.get("acquireTime")),
            renewed_at=_seconds(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            version=str((data.get("metadata") or {}).get("resourceVersion") or ""))

    def _body(self, record: LeaseRecord) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record.version:
            meta["resourceVersion"] = record.version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": record.holder,
                         "leaseDurationSeconds": max(1, int(round(record.duration))),
                         "acquireTime": _micro(record.acquired_at),
                         "renewTime": _micro(record.renewed_at),
                         "leaseTransitions": record.transitions}}

    def _call(self, verb: str, fn: Callable[..., Any], *args: Any) -> LeaseRecord | None:
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self.timeout)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404 and verb == "get":
                return None
            if status == 409:
                raise LeaseConflict(f"Lease {self.namespace}/{self.name} changed meanwhile") \
                    from exc
            if status in (401, 403, 404, 422):
                raise LeaseRefused(describe_refusal(exc, verb, "leases", self.namespace)) \
                    from exc
            raise
        return self._record(json.loads(resp.data))

    def get(self) -> LeaseRecord | None:
        return self._call("get", self.api.read_namespaced_lease, self.name, self.namespace)

    def create(self, record: LeaseRecord) -> LeaseRecord:
        body = self._body(replace(record, version=""))
        out = self._call("create", self.api.create_namespaced_lease, self.namespace, body)
        assert out is not None
        return out

    def update(self, record: LeaseRecord) -> LeaseRecord:
        out = self._call("update", self.api.replace_namespaced_lease, self.name,
                         self.namespace, self._body(record))
        assert out is not None
        return out


class MemoryLeaseStore:
    """A Lease held in memory (one process): for tests of the engine's standby and takeover,
    and for replicas that are threads of one program."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._record: LeaseRecord | None = None
        self._version = 0

    def get(self) -> LeaseRecord | None:
        with self._lock:
            return self._record

    def create(self, record: LeaseRecord) -> LeaseRecord:
        with self._lock:
            if self._record is not None:
                raise LeaseConflict("the Lease exists")
            return self._write(record)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        with self._lock:
            if self._record is None or record.version != self._record.version:
                raise LeaseConflict("the Lease changed meanwhile")
            return self._write(record)

    def _write(self, record: LeaseRecord) -> LeaseRecord:
        self._version += 1
        self._record = replace(record, version=str(self._version))
        return self._record
