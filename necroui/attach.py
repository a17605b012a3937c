"""``necroui attach URL``: the dashboard on a dispatcher that runs elsewhere, over its HTTP API.

:class:`RemoteEngine` is the console's engine interface over ``GET /v1/snapshot`` (snapshot
diffs, long-polled: the client asks for what changed since the version it has) and
``POST /v1/control/{verb}``. A poller thread keeps the newest snapshot; when the connection is
lost it says so (:attr:`RemoteEngine.connection`) and reconnects with a growing pause, asking
for the whole snapshot again when the server no longer has its version.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from necrocode.dispatcher.api.client import ApiError, request
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.errors import DispatcherError
from necrocode.dispatcher.snapshot import Snapshot
from necrocode.dispatcher.snapshot_diff import apply

log = logging.getLogger(__name__)

WAIT = 10.0  # seconds the server may hold a request for a newer snapshot


class AttachError(DispatcherError):
    """The attach target or its token is not usable (named in the message)."""


@dataclass(frozen=True)
class Connection:
    """The link to the dispatcher as the console shows it."""

    ok: bool
    message: str  # "connected to URL" / "connection lost: …; retrying in 2s"
    since: float  # when this state began


def read_token(path: str | Path) -> str:
    """The admin token in ``path`` (stripped); AttachError naming the file otherwise."""
    p = Path(path).expanduser()
    try:
        token = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AttachError(f"cannot read the token file {p}: {exc.strerror or exc}") from None
    if not token:
        raise AttachError(f"the token file {p} is empty: it must hold the dispatcher's admin "
                          "token (<state_dir>/admin.token on its machine)")
    return token


class RemoteEngine:
    """What the dashboard needs from DispatcherCore, over the HTTP API."""

    registry: Any = None  # no registry here: the task detail reads what the snapshot has

    def __init__(self, url: str, token: str, *, wait: float = WAIT,
                 config: DispatcherConfig | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.wait = wait
        self.config = config or DispatcherConfig()
        self.connection = Connection(False, f"connecting to {self.url}…", time.time())
        self.requests = 0  # snapshot requests made (for tests and the status line)
        self.full_fetches = 0
        self._snap: Snapshot | None = None
        self._instance: str | None = None  # the server's: versions count only with it
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start following the dispatcher's snapshots in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="necroui-attach", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 0, *, leave_running: bool = False) -> None:
        """Stop following (the remote dispatcher goes on)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.wait + 5)
            self._thread = None

    def _run(self) -> None:
        pause = 0.5
        while not self._stop.is_set():
            base = self._snap
            try:
                self._fetch(base)
                pause = 0.5
            except ApiError as exc:
                if exc.status in (401, 403, 404):
                    message = f"{exc.message} ({self.url})"
                else:
                    message = f"connection lost: {exc.message}"
                self._set(Connection(False, f"{message}; retrying in {pause:g}s", time.time()))
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)
            except ValueError as exc:  # a diff that does not fit: ask for everything
                log.info("snapshot diff did not apply (%s): fetching the whole snapshot", exc)
                with self._cond:
                    self._snap = None

    def _fetch(self, base: Snapshot | None) -> None:
        query = ""
        if base is not None and self._instance is not None:
            query = f"?since={base.version}&wait={self.wait:g}&instance={self._instance}"
        self.requests += 1
        data = request(self.url, "GET", f"/v1/snapshot{query}", token=self.token,
                       timeout=self.wait + 10)
        if not self.connection.ok:
            self._set(Connection(True, f"connected to {self.url}", time.time()))
        if not isinstance(data, dict):
            return
        instance = data.get("instance")
        if instance != self._instance:
            self._instance = instance if isinstance(instance, str) else None
            if not data.get("full"):
                raise ValueError("a new server instance answered with a diff")
        if data.get("unchanged"):
            return
        if data.get("full"):
            self.full_fetches += 1
        snap = apply(base, data)
        with self._cond:
            self._snap = snap
            self._cond.notify_all()

    def _set(self, connection: Connection) -> None:
        if connection.ok != self.connection.ok or not connection.ok:
            log.info("%s", connection.message)
        self.connection = connection

    # --- what the dashboard reads ------------------------------------------------------------
    def snapshot(self) -> Snapshot | None:
        return self._snap

    def wait_for_snapshot(self, after_version: int, timeout: float | None = None
                          ) -> Snapshot | None:
        with self._cond:
            self._cond.wait_for(lambda: self._snap is not None
                                and self._snap.version > after_version, timeout)
            return self._snap

    # --- verbs -----------------------------------------------------------------------------------
    def control(self, verb: str, payload: dict[str, Any] | None = None) -> str:
        out = request(self.url, "POST", f"/v1/control/{verb}", token=self.token,
                      payload=payload or {}, timeout=30)
        return str(out.get("message", "")) if isinstance(out, dict) else ""

    def pause(self) -> str:
        return self.control("pause")

    def resume(self) -> str:
        return self.control("resume")

    def set_priority(self, task_key: str, priority: int) -> str:
        return self.control("priority", {"task": task_key, "priority": priority})

    def bump_priority(self, task_key: str, delta: int) -> str:
        """A relative change applied by the dispatcher itself: quick presses all count."""
        return self.control("priority", {"task": task_key, "delta": delta})

    def retry(self, task_key: str, *, from_base: bool = False) -> str:
        payload: dict[str, Any] = {"task": task_key}
        if from_base:
            payload["from_base"] = True
        return self.control("retry", payload)

    def land(self, taskset: str) -> str:
        return self.control("land", {"taskset": taskset, "push": False})

    def cancel(self, task_key: str) -> str:
        return self.control("cancel", {"task": task_key})

    def set_pool_enabled(self, pool_name: str, enabled: bool) -> str:
        return self.control("pool", {"pool": pool_name, "enabled": enabled})


def run_attached(url: str, token: str, *, read_only: bool = False) -> int:
    """The dashboard on the dispatcher at ``url`` until the operator quits; exit code."""
    from .app import NecroApp
    from .run import _stderr_redirected

    if _stderr_redirected():
        print("necroui draws on stderr; it is redirected, so the dashboard cannot show",
              flush=True)
        return 2
    engine = RemoteEngine(url, token)
    engine.start()
    try:
        NecroApp(engine, read_only=read_only, owns_engine=False, pace_collector=True).run()
    finally:
        engine.stop()
    return 0
