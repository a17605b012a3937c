"""The engine behind the HTTP API: the handler the server calls, and the service that starts it.

Handlers run on the server's threads: they read the thread-safe RunnerDirectory and snapshots,
and post commands through DispatcherCore's thread-safe methods; they never touch engine state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agents.supervisor import AgentRuns
from ..api.connections import ConnectionLimits
from ..api.tokens import runner_token
from ..snapshot import Snapshot
from ..state_files import (
    load_or_create_admin_token,
    load_or_create_secret,
    previous_api_port,
    write_dispatcher_info,
)
from .runner_table import DirectoryState

if TYPE_CHECKING:
    from ..core import DispatcherCore

logger = logging.getLogger(__name__)


class EngineApiHandler:
    """Implements the API's handler protocol on DispatcherCore's public surface."""

    def __init__(self, core: DispatcherCore) -> None:
        self.core = core

    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        state = self.core.runner_directory.state(runner_id)
        if state in (DirectoryState.LAUNCHING, DirectoryState.ADOPTING):
            return {"ok": True}  # its launch is being registered, or it is about to be adopted
        if state is not DirectoryState.RUNNING:
            return {"ok": False, "action": "stop",
                    "reason": f"runner {runner_id} is not running for this dispatcher"}
        progress, usage = AgentRuns.heartbeat_usage(payload)
        self.core.heartbeat(runner_id, None if progress is None else progress[:500], usage)
        return {"ok": True}

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.core.runner_directory.state(runner_id) is None:
            return {"ok": False, "reason": f"runner {runner_id} is not known (already settled?)"}
        self.core.report_completion(runner_id, dict(payload))
        return {"ok": True}

    def snapshot(self) -> Snapshot:
        """The newest snapshot (never blocks)."""
        return self.core.snapshot()

    def wait_for_snapshot(self, after_version: int, timeout: float | None = None) -> Snapshot:
        """A snapshot newer than ``after_version`` (or the newest, after ``timeout``)."""
        return self.core.wait_for_snapshot(after_version, timeout)

    def status(self, **limits: int | None) -> dict[str, Any]:
        """The snapshot; ``queued``/``finished``/``events`` limit those lists."""
        return self.core.get_status(**limits)

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message": self.core.control(verb, payload)}

    def metrics(self) -> tuple[bytes, str]:
        return self.core.metrics.exposition()


class ApiService:
    """The HTTP API of one Dispatcher: its server, runner-token secret and admin token."""

    def __init__(self, host: str, port: int, state_dir: Path,
                 limits: ConnectionLimits | None = None) -> None:
        self._host = host
        self._port = port
        self._limits = limits
        self._state_dir = state_dir
        self._server: Any = None
        self._secret = b""
        self.url: str | None = None
        self.admin_token: str | None = None

    def start(self, core: DispatcherCore, registry_label: str) -> str:
        """Serve the API (the previous run's port when none is configured, so adopted
        wrapped runners keep reporting there); returns its URL."""
        from ..api.server import ApiServer

        self._secret = load_or_create_secret(self._state_dir)
        self.admin_token = load_or_create_admin_token(self._state_dir)
        port = self._port or previous_api_port(self._state_dir) or 0
        handler = EngineApiHandler(core)
        try:
            self._server = ApiServer(self._host, port, handler, self._secret, self.admin_token,
                                     self._limits)
            self.url = self._server.start()
        except OSError:
            if port == self._port:
                raise
            self._server = ApiServer(self._host, 0, handler, self._secret, self.admin_token,
                                     self._limits)
            self.url = self._server.start()
        write_dispatcher_info(self._state_dir, self.url, registry_label)
        return self.url

    def token_for(self, runner_id: str) -> str:
        """The runner's own token (an HMAC of its id)."""
        return runner_token(self._secret, runner_id) if self._secret else ""

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.stop()
            except Exception as exc:
                logger.warning("stopping the API server failed: %s", exc, exc_info=True)
            self._server = None
