"""The HTTP API under abuse, with real sockets: idle crowds, a low fd limit, slow and busy
clients, resets, non-ASCII tokens, deeply nested bodies.

The server runs in a subprocess where the fd limit matters and its stderr can be read: 250
silent connections never keep heartbeats out, nothing prints a traceback.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from necrocode.dispatcher.api.connections import ConnectionLimits
from necrocode.dispatcher.api.server import ApiServer
from necrocode.dispatcher.api.tokens import runner_token

SECRET = b"s" * 32
ADMIN = "admin-token"

SERVER = textwrap.dedent("""\
    import resource, sys, tempfile, threading
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
    import logging
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    from necrocode.dispatcher.api.server import ApiServer
    from necrocode.dispatcher.api.connections import ConnectionLimits

    class Handler:
        beats = 0
        def on_heartbeat(self, runner_id, payload):
            with tempfile.TemporaryFile() as f:  # a launch needs descriptors too
                f.write(b"x")
            Handler.beats += 1
            return {"ok": True, "beats": Handler.beats}
        def on_complete(self, runner_id, payload): return {}
        def status(self, **limits): return {"open": api.gate.open_count}
        def control(self, verb, payload): return {}
        def metrics(self): return b"", "text/plain"

    api = ApiServer("127.0.0.1", 0, Handler(), b"s" * 32, "admin-token",
                    ConnectionLimits(read_timeout=float(sys.argv[2])))
    print(api.start(), flush=True)
    sys.stdin.read()
    api.stop()
""")


@pytest.fixture
def low_fd_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, "128", "30"], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), proc.stderr.read() if proc.stderr else ""
    yield url, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def request(url: str, method: str, path: str, token: str | bytes = "", body: bytes = b"",
            timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """One HTTP/1.0 request over a raw socket (tokens may be any bytes)."""
    host, port = url.removeprefix("http://").split(":")
    auth = token if isinstance(token, bytes) else token.encode()
    head = (f"{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            ).encode() + (b"Authorization: Bearer " + auth + b"\r\n" if auth else b"") + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(payload) if payload else {}


def heartbeat(url: str, rid: str = "r-1") -> tuple[int, dict[str, Any]]:
    return request(url, "POST", f"/v1/runners/{rid}/heartbeat", runner_token(SECRET, rid),
                   b'{"progress": "ok"}')


def idle_crowd(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    return [socket.create_connection((host, int(port)), timeout=10) for _ in range(count)]


def test_heartbeats_are_answered_past_250_idle_connections_with_a_low_fd_limit(
    low_fd_server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, proc = low_fd_server
    crowd = idle_crowd(url, 250)
    try:
        answers = [heartbeat(url) for _ in range(20)]
        assert [status for status, _ in answers] == [200] * 20
        status, body = request(url, "GET", "/v1/status", ADMIN)
        assert status == 200 and body["open"] <= 32  # a quarter of the fd limit of 128
    finally:
        for sock in crowd:
            sock.close()
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.close()
    proc.wait(timeout=20)
    err = proc.stderr.read()
    assert "Traceback" not in err and "Too many open files" not in err, err


def test_resets_and_garbage_are_logged_not_printed(
    low_fd_server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, proc = low_fd_server
    host, port = url.removeprefix("http://").split(":")
    for payload in (b"POST /v1/runners/r-1/heartbeat HTTP/1.0\r\nContent-Length: 100\r\n\r\n{",
                    b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(payload)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, not a clean close
    assert heartbeat(url)[0] == 200
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.close()
    proc.wait(timeout=20)
    err = proc.stderr.read()
    assert "Traceback" not in err, err


class _Handler:
    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def status(self, **limits: int | None) -> dict[str, Any]:
        return {}

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"


def make_api(read_timeout: float) -> Iterator[ApiServer]:
    server = ApiServer("127.0.0.1", 0, _Handler(), SECRET, ADMIN, ConnectionLimits(
        max_connections=8, max_per_client=4, read_timeout=read_timeout))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api() -> Iterator[ApiServer]:
    yield from make_api(30.0)


@pytest.fixture
def quick_api() -> Iterator[ApiServer]:
    yield from make_api(0.3)


@pytest.mark.parametrize("token", ["tökén".encode(), "Ω".encode() * 64, b"\xff\xfe",
                                   "é".encode("latin-1")])
def test_non_ascii_tokens_are_401(api: ApiServer, token: bytes) -> None:
    assert api.url
    status, body = request(api.url, "POST", "/v1/runners/r-1/heartbeat", token, b"{}")
    assert status == 401 and "type" not in body, body
    status, body = request(api.url, "GET", "/v1/status", token)
    assert status == 401 and "type" not in body, body


def test_deeply_nested_json_is_400(api: ApiServer) -> None:
    assert api.url
    for depth in (40, 100_000):
        body = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
        status, answer = request(api.url, "POST", "/v1/control/pause", ADMIN, body)
        assert status == 400 and "nested" in answer["error"], answer


def test_idle_connections_time_out(quick_api: ApiServer) -> None:
    api = quick_api
    assert api.url
    sock = idle_crowd(api.url, 1)[0]
    try:
        sock.settimeout(20)
        assert sock.recv(10) == b""  # closed by the server after its read timeout
    finally:
        sock.close()
    wait_closed = time.monotonic() + 10
    while api.gate.open_count and time.monotonic() < wait_closed:
        time.sleep(0.01)
    assert api.gate.open_count == 0


def test_busy_connections_past_the_per_client_cap_get_503(api: ApiServer) -> None:
    assert api.url
    host, port = api.url.removeprefix("http://").split(":")
    busy = []
    for _ in range(4):  # a whole head, a body that never comes: busy, not idle
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"POST /v1/control/pause HTTP/1.0\r\nContent-Length: 50\r\n"
                     b"Authorization: Bearer admin-token\r\n\r\n")
        busy.append(sock)
    try:
        deadline = time.monotonic() + 10
        while sum(not c.idle for c in api.gate._open.values()) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        status, body = heartbeat(api.url)
        assert status == 503 and "busy" in body["error"]
        assert api.gate.refused >= 1
    finally:
        for sock in busy:
            sock.close()
