"""HTTP API: routes, runner tokens (401/403), admin token, body limits, token file mode."""

from __future__ import annotations

import http.client
import json
import os
import stat
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.api import client
from necrocode.dispatcher.api.client import ApiError
from necrocode.dispatcher.api.server import MAX_BODY, ApiServer
from necrocode.dispatcher.api.tokens import (
    read_admin_token,
    runner_token,
    verify_runner_token,
    write_admin_token,
)
from necrocode.dispatcher.errors import InvalidTransitionError, TaskNotFoundError

SECRET = b"s" * 32
ADMIN = "admin-token-xyz"


class RecordingHandler:
    """An ApiHandler that records calls (what the engine would enqueue)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.lock = threading.Lock()

    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append(("heartbeat", runner_id, payload))
        return {"ok": True}

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append(("complete", runner_id, payload))
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {"version": 7, "running": []}

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("control", verb, payload))
        if verb == "cancel" and payload.get("task") == "missing/1":
            raise TaskNotFoundError("missing/1")
        if verb == "retry":
            raise InvalidTransitionError("s/1", "done", "ready")
        if verb == "priority" and payload.get("boom"):
            raise RuntimeError("bug")
        return {"message": f"{verb} ok"}

    def metrics(self) -> tuple[bytes, str]:
        return b"necrocode_up 1\n", "text/plain; version=0.0.4"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, RecordingHandler]]:
    handler = RecordingHandler()
    server = ApiServer("127.0.0.1", 0, handler, SECRET, ADMIN)
    url = server.start()
    try:
        yield url, handler
    finally:
        server.stop()


@pytest.fixture
def api(served: tuple[str, RecordingHandler]) -> tuple[str, RecordingHandler]:
    served[1].calls.clear()
    return served


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_binds_localhost_and_health(api: tuple[str, RecordingHandler]) -> None:
    url, _ = api
    assert url.startswith("http://127.0.0.1:")
    assert client.healthz(url)


def test_runner_heartbeat_and_complete_with_own_token(api: tuple[str, RecordingHandler]) -> None:
    url, handler = api
    tok = runner_token(SECRET, "r-a")
    assert client.heartbeat(url, "r-a", tok, progress="half") == {"ok": True}
    client.complete(url, "r-a", tok, exit_code=0, duration=1.5, artifacts=["/x/output.log"])
    assert handler.calls[0] == ("heartbeat", "r-a", {"progress": "half"})
    kind, rid, payload = handler.calls[1]
    assert (kind, rid, payload["exit_code"], payload["artifacts"]) == (
        "complete", "r-a", 0, ["/x/output.log"])


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (None, 401),  # no token at all
        ("garbage", 401),  # not a token of anyone
        (runner_token(SECRET, "r-b"), 401),  # runner B's token on runner A's path
        (runner_token(b"other-secret", "r-a"), 401),  # token of another dispatcher
        (ADMIN, 403),  # the admin token is not a runner token
    ],
)
def test_runner_routes_refuse_wrong_tokens(
    api: tuple[str, RecordingHandler], token: str | None, status: int
) -> None:
    url, handler = api
    for call in ("heartbeat", "complete"):
        with pytest.raises(ApiError) as err:
            client.request(url, "POST", f"/v1/runners/r-a/{call}", token=token, payload={})
        assert err.value.status == status
    assert handler.calls == []


def test_control_and_status_need_admin_token(api: tuple[str, RecordingHandler]) -> None:
    url, handler = api
    for token in (None, "wrong", runner_token(SECRET, "r-a")):
        with pytest.raises(ApiError) as err:
            client.status(url, token or "")
        assert err.value.status == 401
        with pytest.raises(ApiError) as err:
            client.control(url, token or "", "pause")
        assert err.value.status == 401
    assert handler.calls == []
    assert client.status(url, ADMIN) == {"version": 7, "running": []}
    assert client.control(url, ADMIN, "pause") == {"message": "pause ok"}
    assert client.control(url, ADMIN, "priority", {"task": "s/1", "priority": 5}) == {
        "message": "priority ok"}
    assert handler.calls[-1] == ("control", "priority", {"task": "s/1", "priority": 5})


@pytest.mark.parametrize(
    ("verb", "payload", "status"),
    [
        ("explode", {}, 404),  # unknown verb
        ("cancel", {"task": "missing/1"}, 404),  # TaskNotFoundError
        ("retry", {"task": "s/1"}, 409),  # InvalidTransitionError
        # a bug in the handler: 500, server survives
        ("priority", {"task": "s/1", "priority": 1, "boom": True}, 500),
    ],
)
def test_control_errors_map_to_status(
    api: tuple[str, RecordingHandler], verb: str, payload: dict[str, Any], status: int
) -> None:
    url, _ = api
    with pytest.raises(ApiError) as err:
        client.control(url, ADMIN, verb, payload)
    assert err.value.status == status
    assert client.healthz(url)


def test_metrics_without_token(api: tuple[str, RecordingHandler]) -> None:
    url, _ = api
    assert client.metrics(url) == "necrocode_up 1\n"


def test_bad_bodies(api: tuple[str, RecordingHandler]) -> None:
    url, handler = api
    tok = runner_token(SECRET, "r-a")
    headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
    status, body = raw_post(f"{url}/v1/runners/r-a/heartbeat", b"{not json", headers)
    assert status == 400 and "JSON" in body["error"]
    status, _ = raw_post(f"{url}/v1/runners/r-a/heartbeat", b"[1, 2]", headers)
    assert status == 400
    # an oversize body is refused from its Content-Length, before it is read
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.putrequest("POST", "/v1/runners/r-a/heartbeat")
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    assert handler.calls == []


def test_unknown_route_and_method(api: tuple[str, RecordingHandler]) -> None:
    url, _ = api
    with pytest.raises(ApiError) as err:
        client.request(url, "GET", "/v1/nothing")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        client.request(url, "GET", "/v1/runners/r-a/heartbeat")
    assert err.value.status == 405


def test_unreachable_dispatcher_is_status_0() -> None:
    with pytest.raises(ApiError) as err:
        client.healthz("http://127.0.0.1:9") or client.status("http://127.0.0.1:9", ADMIN)
    assert err.value.status == 0


def test_tokens() -> None:
    tok = runner_token(SECRET, "r-a")
    assert len(tok) == 64 and tok == runner_token(SECRET, "r-a")
    assert verify_runner_token(SECRET, "r-a", tok)
    assert not verify_runner_token(SECRET, "r-b", tok)
    assert not verify_runner_token(SECRET, "r-a", None)


def test_admin_token_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "admin.token"
    token = write_admin_token(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_admin_token(path) == token
    # a second start replaces the file, still 0600, and never writes through a symlink
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path.unlink()
    path.symlink_to(victim)
    token2 = write_admin_token(path, "fixed")
    assert token2 == "fixed" and read_admin_token(path) == "fixed"
    assert victim.read_text() == "keep"
    assert not path.is_symlink()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
