"""A tiny client of the Dispatcher's HTTP API (stdlib only: the runner wrapper uses it).

Used by the agent runner wrapper (heartbeat, complete) and by ``necroui status`` / control
commands against a running Dispatcher (status, control, metrics).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import DispatcherError


class ApiError(DispatcherError):
    """The API answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, url: str = "") -> None:
        self.status = status
        self.message = message
        self.url = url
        where = f" ({url})" if url else ""
        super().__init__(f"dispatcher API error {status}{where}: {message}")


def request(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    payload: dict[str, Any] | None = None,
    timeout: float = 5.0,
    raw: bool = False,
) -> Any:
    """One call: JSON body in, JSON (or raw text when ``raw``) out; raises :class:`ApiError`."""
    url = base_url.rstrip("/") + path
    data = None
    headers = {"Accept": "application/json"}
    if payload is not None:
        data = json.dumps(payload).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read().decode("utf-8")).get("error") or exc.reason
        except Exception:
            detail = str(exc.reason)
        raise ApiError(exc.code, str(detail), url) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(0, f"cannot reach the dispatcher: {reason}", url) from None
    if raw:
        return body.decode("utf-8", errors="replace")
    try:
        return json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(0, f"answer is not JSON: {exc}", url) from None


def heartbeat(
    base_url: str,
    runner_id: str,
    token: str,
    *,
    progress: str | None = None,
    extra: dict[str, Any] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Send a heartbeat; returns the answer (may hold ``{"action": "stop"}``)."""
    payload: dict[str, Any] = dict(extra or {})
    if progress is not None:
        payload["progress"] = progress
    out = request(base_url, "POST", f"/v1/runners/{runner_id}/heartbeat", token=token,
                  payload=payload, timeout=timeout)
    return out if isinstance(out, dict) else {}


def complete(
    base_url: str,
    runner_id: str,
    token: str,
    *,
    exit_code: int | None,
    duration: float,
    reason: str = "",
    artifacts: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Report that the agent ended."""
    payload: dict[str, Any] = dict(extra or {})
    payload.update(exit_code=exit_code, duration=duration, reason=reason,
                   artifacts=list(artifacts or []))
    out = request(base_url, "POST", f"/v1/runners/{runner_id}/complete", token=token,
                  payload=payload, timeout=timeout)
    return out if isinstance(out, dict) else {}


def status(base_url: str, admin_token: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """The running Dispatcher's snapshot as a dict."""
    out = request(base_url, "GET", "/v1/status", token=admin_token, timeout=timeout)
    return out if isinstance(out, dict) else {}


def control(
    base_url: str, admin_token: str, verb: str, payload: dict[str, Any] | None = None,
    *, timeout: float = 10.0,
) -> dict[str, Any]:
    """A control command: pause, resume, priority, retry, cancel, pool."""
    out = request(base_url, "POST", f"/v1/control/{verb}", token=admin_token,
                  payload=payload or {}, timeout=timeout)
    return out if isinstance(out, dict) else {}


def metrics(base_url: str, *, timeout: float = 5.0) -> str:
    """The Prometheus exposition text of ``/metrics``."""
    return str(request(base_url, "GET", "/metrics", timeout=timeout, raw=True))


def healthz(base_url: str, *, timeout: float = 2.0) -> bool:
    """True when a Dispatcher answers on ``base_url``."""
    try:
        request(base_url, "GET", "/healthz", timeout=timeout)
    except ApiError:
        return False
    return True
