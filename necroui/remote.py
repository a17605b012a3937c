"""Talk to a running Dispatcher through its HTTP API (``necroui status``, ``metrics``, controls).

A running Dispatcher writes ``<state_dir>/dispatcher.json`` (its API URL and pid) and
``<state_dir>/admin.token``. When no Dispatcher runs on the configured state dir, status and
metrics are computed from the registry itself and controls act on the registry directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from necrocode.dispatcher.api.client import ApiError, request
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.errors import DispatcherError
from necrocode.dispatcher.models import TaskState
from necrocode.dispatcher.state_files import ADMIN_TOKEN_FILE, read_dispatcher_info

logger = logging.getLogger(__name__)

TIMEOUT = 10.0


class NoDispatcherError(DispatcherError):
    """No Dispatcher runs on this state dir (no live ``dispatcher.json``)."""


def find_dispatcher(config: DispatcherConfig) -> tuple[str, str] | None:
    """(API URL, admin token) of the Dispatcher running on the config's state dir, or None."""
    state_dir = config.resolved_state_dir()
    info = read_dispatcher_info(state_dir)
    if info is None:
        return None
    token_path = Path(state_dir) / ADMIN_TOKEN_FILE
    try:
        token = token_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DispatcherError(
            f"a dispatcher runs at {info['url']} but its admin token {token_path} cannot be "
            f"read ({exc}); run this command as the user running the dispatcher") from None
    return str(info["url"]), token


def fetch_status(config: DispatcherConfig, *, timeout: float = TIMEOUT,
                 queued: int | None = None, finished: int | None = None,
                 events: int | None = None) -> dict[str, Any]:
    """The running Dispatcher's snapshot as a dict; a registry summary when none runs.

    ``queued``/``finished``/``events`` ask for only the first N queued tasks (dispatch order),
    the N newest finished tasks and events (None: all); ``totals`` then holds the full counts.
    Raises ApiError (status 0, "timed out") when the Dispatcher does not answer in ``timeout``.
    """
    found = find_dispatcher(config)
    if found is not None:
        url, token = found
        from urllib.parse import urlencode

        limits = {k: int(v) for k, v in (("queued", queued), ("finished", finished),
                                         ("events", events)) if v is not None}
        path = "/v1/status" + (f"?{urlencode(limits)}" if limits else "")
        data = request(url, "GET", path, token=token, timeout=timeout)
        return data if isinstance(data, dict) else {"state": "unknown", "raw": data}
    return _offline_status(config)


def _offline_status(config: DispatcherConfig) -> dict[str, Any]:
    from necrocode.dispatcher.registry import open_registry

    path = config.resolved_registry_path()
    out: dict[str, Any] = {"state": "not running", "registry_path": str(path), "api_url": None,
                           "policy": str(getattr(config.scheduling_policy, "value",
                                                 config.scheduling_policy))}
    if str(path) != ":memory:" and not path.exists():
        out["counters"] = {}
        return out
    registry = open_registry(path)
    try:
        counts = registry.count_tasks()
    finally:
        registry.close()
    out["counters"] = {"total": sum(counts.values()),
                       **{s.value: counts.get(s, 0) for s in TaskState}}
    return out


def fetch_metrics(config: DispatcherConfig, *, timeout: float = TIMEOUT) -> str:
    """Prometheus text of the running Dispatcher, else gauges computed from the registry."""
    found = find_dispatcher(config)
    if found is not None:
        url, _token = found
        text = request(url, "GET", "/metrics", raw=True, timeout=timeout)
        return str(text)
    from necrocode.dispatcher.metrics import MetricsCollector
    from necrocode.dispatcher.registry import open_registry

    collector = MetricsCollector(config)
    path = config.resolved_registry_path()
    if str(path) == ":memory:" or path.exists():
        registry = open_registry(path)
        try:
            collector.update_from_registry(registry)
        finally:
            registry.close()
    return collector.export_prometheus()


def control(config: DispatcherConfig, verb: str, payload: dict[str, Any], *,
            timeout: float = TIMEOUT) -> str:
    """Apply a control verb through the running Dispatcher, else on the registry directly.

    Returns the Dispatcher's message; raises DispatcherError (with its message) on refusal.
    """
    found = find_dispatcher(config)
    if found is not None:
        url, token = found
        try:
            data = request(url, "POST", f"/v1/control/{verb}", token=token,
                           payload=dict(payload), timeout=timeout)
        except ApiError as exc:
            if exc.status == 0:
                raise
            raise DispatcherError(exc.message) from None
        if isinstance(data, dict):
            return str(data.get("message") or "ok")
        return str(data)
    if verb in ("pause", "resume", "pool"):
        raise NoDispatcherError(
            f"no dispatcher runs on {config.resolved_state_dir()}: {verb!r} applies to a "
            "running dispatcher only (start one with `necroui` or `necroui --no-tui`)")
    from necrocode.dispatcher.core import DispatcherCore

    core = DispatcherCore(config)
    try:
        return core.control(verb, payload)
    finally:
        core.close()


__all__ = ["NoDispatcherError", "control", "fetch_metrics", "fetch_status", "find_dispatcher"]
