"""The Dispatcher's HTTP API: one small threaded server for runners and for control.

Routes (JSON in and out):

- ``POST /v1/runners/{id}/heartbeat`` and ``POST /v1/runners/{id}/complete``: Bearer token of
  that runner (:func:`~.tokens.runner_token`). A heartbeat answer may carry
  ``{"action": "stop"}``: the runner must stop its agent (the wrapper does).
- ``GET /v1/status``, ``GET /v1/snapshot?since=V&wait=S`` (diffs, long-polled) and
  ``POST /v1/control/{verb}``: Bearer admin token.
- ``GET /metrics`` (Prometheus text, no token) and ``GET /healthz``.

The server never touches engine state: it authenticates, parses and calls the :class:`ApiHandler`
(implemented by the engine, which only enqueues commands and returns their answers).

Under abuse it stays bounded (:mod:`.connections`): connections are capped in total and per
client, silent ones make room for new ones and time out, the listen backlog is real, bodies
nest at most 32 levels and their numbers are checked (:mod:`.payloads`). Its own errors (client
resets, timeouts, bad requests) go through logging, never as a traceback on stderr.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from ..errors import (
    DispatcherError,
    InvalidTransitionError,
    PoolNotFoundError,
    TaskNotFoundError,
    ValidationError,
)
from .connections import ConnectionGate, ConnectionLimits
from .payloads import MAX_DEPTH, PayloadError, check_control, check_depth, check_report
from .snapshots import SnapshotFeed, SnapshotQueryError, parse_query, source_of
from .tokens import tokens_equal, verify_runner_token

logger = logging.getLogger(__name__)

#: Largest request body accepted, in bytes.
MAX_BODY = 1 << 20

CONTROL_VERBS = frozenset({"pause", "resume", "priority", "retry", "cancel", "pool", "land"})

_RUNNER_PATH = re.compile(r"^/v1/runners/([A-Za-z0-9._:-]{1,200})/(heartbeat|complete)$")
_CONTROL_PATH = re.compile(r"^/v1/control/([a-z_-]{1,40})$")


STATUS_LIMITS = ("queued", "finished", "events")


def _status_limits(path: str) -> dict[str, int]:
    """``?queued=N&finished=M&events=K`` of ``GET /v1/status`` (absent: everything)."""
    from urllib.parse import parse_qs, urlsplit

    out: dict[str, int] = {}
    for name, values in parse_qs(urlsplit(path).query).items():
        if name not in STATUS_LIMITS:
            raise _HttpError(400, f"unknown status parameter {name!r}; known: "
                                  + ", ".join(STATUS_LIMITS))
        try:
            out[name] = int(values[-1])
        except ValueError:
            out[name] = -1
        if out[name] < 0:
            raise _HttpError(400, f"{name} must be a whole number >= 0, got {values[-1]!r}")
    return out


class ApiHandler(Protocol):
    """What the API calls; the engine implements it (each call enqueues an engine command)."""

    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A runner's heartbeat (payload may hold ``progress``)."""
        ...

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A runner's completion report: ``exit_code``, ``duration``, ``reason``, ``artifacts``."""
        ...

    def status(self, **limits: int | None) -> dict[str, Any]:
        """The newest snapshot as a dict; ``queued``/``finished``/``events`` (from the query
        string of ``GET /v1/status``) keep only that many of those lists."""
        ...

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A control command (pause, resume, priority, retry, cancel, pool)."""
        ...

    def metrics(self) -> tuple[bytes, str]:
        """Prometheus exposition: (body, content type)."""
        ...


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_status(exc: BaseException) -> int:
    if isinstance(exc, TaskNotFoundError | PoolNotFoundError | LookupError):
        return 404
    if isinstance(exc, InvalidTransitionError):
        return 409
    if isinstance(exc, ValidationError | DispatcherError | ValueError | TypeError):
        return 400
    return 500


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: ApiServer
    gate: ConnectionGate

    def verify_request(self, request: Any, client_address: Any) -> bool:
        client = str(client_address[0]) if isinstance(client_address, tuple) else "local"
        if self.gate.admit(request, client):
            return True
        try:  # a short answer into the socket buffer; the connection is closed after it
            request.settimeout(0.5)
            request.sendall(_BUSY)
        except OSError:
            pass
        return False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed: one log line (a reset or timeout is the client's business)."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | socket.timeout):
            logger.debug("api connection from %s ended: %s", client_address, exc)
        else:
            logger.error("api connection from %s failed", client_address, exc_info=exc)

    def shutdown_request(self, request: Any) -> None:
        self.gate.done(request)
        super().shutdown_request(request)


_BUSY_BODY = b'{"error": "the dispatcher API is busy: too many connections; retry shortly"}'
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Retry-After: 1\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n"
         + _BUSY_BODY)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "necrocode-dispatcher"
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.gate.limits.read_timeout)  # every read

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # a whole request head arrived: not idle any more, never evicted
            self.server.gate.busy(self.connection)
        return ok

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        logger.debug("api %s - %s", self.address_string(), format % args)

    # --- plumbing --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="necrocode"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, default=str).encode("utf-8"))

    def _bearer(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip()

    def _read_json(self) -> dict[str, Any]:
        raw_len = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise _HttpError(411, "chunked bodies are not accepted; send Content-Length")
        try:
            length = int(raw_len) if raw_len else 0
        except ValueError as exc:
            raise _HttpError(400, "bad Content-Length") from exc
        if length < 0:
            raise _HttpError(400, "bad Content-Length")
        if length > MAX_BODY:
            raise _HttpError(413, f"body larger than {MAX_BODY} bytes")
        if length == 0:
            return {}
        raw = self.rfile.read(length)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _HttpError(400, f"body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise _HttpError(400, f"body nested more than {MAX_DEPTH} levels deep; "
                                  "send a flat object") from exc
        if not isinstance(data, dict):
            raise _HttpError(400, "body must be a JSON object")
        try:
            check_depth(data)
        except PayloadError as exc:
            raise _HttpError(400, str(exc)) from exc
        return data

    def _require_admin(self) -> None:
        if not tokens_equal(self.server.api.admin_token, self._bearer()):
            raise _HttpError(401, "admin token missing or wrong (see <state_dir>/admin.token)")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        api = self.server.api
        try:
            if method == "GET" and path == "/healthz":
                self._send_json(200, {"ok": True})
                return
            if method == "GET" and path == "/metrics":
                body, ctype = api.handler.metrics()
                self._send(200, body, ctype)
                return
            if path == "/v1/status":
                if method != "GET":
                    raise _HttpError(405, "use GET")
                self._require_admin()
                limits = _status_limits(self.path)
                self._send_json(200, api.handler.status(**limits) if limits
                                else api.handler.status())
                return
            if path == "/v1/snapshot":  # diffs for remote consoles (necroui attach)
                if method != "GET":
                    raise _HttpError(405, "use GET")
                self._require_admin()
                self._send_json(200, _snapshot_answer(api, self.path))
                return
            match = _CONTROL_PATH.match(path)
            if match:
                if method != "POST":
                    raise _HttpError(405, "use POST")
                self._require_admin()
                verb = match.group(1)
                if verb not in CONTROL_VERBS:
                    raise _HttpError(404, f"unknown control verb {verb!r}; "
                                          f"known: {', '.join(sorted(CONTROL_VERBS))}")
                payload = self._read_json()
                check_control(verb, payload)
                self._send_json(200, api.handler.control(verb, payload))
                return
            match = _RUNNER_PATH.match(path)
            if match:
                if method != "POST":
                    raise _HttpError(405, "use POST")
                runner_id, action = match.group(1), match.group(2)
                token = self._bearer()
                if token is None:
                    raise _HttpError(401, "runner token missing (Authorization: Bearer ...)")
                if tokens_equal(api.admin_token, token):
                    raise _HttpError(403, "the admin token cannot report for a runner")
                if not verify_runner_token(api.secret, runner_id, token):
                    raise _HttpError(401, f"token is not the token of runner {runner_id!r}")
                payload = self._read_json()
                check_report(payload)
                if action == "heartbeat":
                    result = api.handler.on_heartbeat(runner_id, payload)
                else:
                    result = api.handler.on_complete(runner_id, payload)
                self._send_json(200, result if result is not None else {"ok": True})
                return
            raise _HttpError(404, f"no route for {method} {path}")
        except _HttpError as exc:
            self._send_json(exc.status, {"error": exc.message})
        except Exception as exc:  # the handler refused: map to a status, never crash the server
            status = _error_status(exc)
            if status == 500:
                logger.exception("api %s %s failed", method, path)
            self._send_json(status, {"error": str(exc), "type": type(exc).__name__})

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


def _snapshot_answer(api: ApiServer, path: str) -> dict[str, Any]:
    try:
        since, wait, instance = parse_query(path)
    except SnapshotQueryError as exc:
        raise _HttpError(400, str(exc)) from None
    source = source_of(api.handler)
    if source is None:
        raise _HttpError(404, "this dispatcher does not serve snapshot diffs")
    return api.snapshots.answer(source, since, wait, instance)


class ApiServer:
    """The HTTP API on ``host:port`` (port 0: any free port), served from daemon threads."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: ApiHandler,
        secret: bytes,
        admin_token: str,
        limits: ConnectionLimits | None = None,
    ) -> None:
        if not secret:
            raise ValueError("ApiServer needs a non-empty secret for runner tokens")
        if not admin_token:
            raise ValueError("ApiServer needs a non-empty admin token")
        self.host = host
        self.port = port
        self.handler = handler
        self.secret = secret
        self.admin_token = admin_token
        self.limits = limits or ConnectionLimits()
        self.gate = ConnectionGate(self.limits)
        self.snapshots = SnapshotFeed()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str | None:
        """Base URL once started (``http://127.0.0.1:PORT``)."""
        if self._httpd is None:
            return None
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> str:
        """Bind and serve in a daemon thread; returns the base URL."""
        if self._httpd is not None:
            return self.url or ""
        httpd = _Server((self.host, self.port), _RequestHandler, bind_and_activate=False)
        httpd.request_queue_size = self.limits.backlog
        try:
            httpd.server_bind()
            httpd.server_activate()
        except OSError:
            httpd.server_close()
            raise
        httpd.api = self
        httpd.gate = self.gate
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
            name="necrocode-api", daemon=True,
        )
        self._thread.start()
        logger.info("HTTP API listening on %s", self.url)
        return self.url or ""

    def stop(self) -> None:
        """Stop serving and close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
