"""A minimal HTTP/1.0 JSON POST over a plain socket, for the runner wrapper.

The wrapper starts once per task, so its imports are its cost: this avoids urllib (which pulls
in http.client, email and ssl). ``https://`` URLs fall back to :mod:`..api.client`.
"""

from __future__ import annotations

import json
import socket
from typing import Any


class PostError(Exception):
    """The call failed: ``status`` is the HTTP status, or 0 when the server was unreachable."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status or 'unreachable'}: {message}")
        self.status = status


def post_json(base_url: str, path: str, token: str, payload: dict[str, Any],
              timeout: float) -> dict[str, Any]:
    """POST ``payload`` to ``base_url + path`` with a Bearer token; the JSON answer."""
    if base_url.startswith("https://"):
        from ..api.client import ApiError, request

        try:
            out = request(base_url, "POST", path, token=token, payload=payload, timeout=timeout)
        except ApiError as exc:
            raise PostError(exc.status, exc.message) from None
        return out if isinstance(out, dict) else {}
    if not base_url.startswith("http://"):
        raise PostError(0, f"unsupported API URL {base_url!r}")
    rest = base_url[len("http://"):]
    hostport, _, prefix = rest.partition("/")
    prefix = "/" + prefix.rstrip("/") if prefix else ""
    if hostport.startswith("["):  # [ipv6]:port
        host, _, port_s = hostport[1:].partition("]")
        port_s = port_s.lstrip(":")
    else:
        host, _, port_s = hostport.partition(":")
    port = int(port_s or 80)
    body = json.dumps(payload).encode("utf-8")
    head = (
        f"POST {prefix}{path} HTTP/1.0\r\nHost: {hostport}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    chunks = []
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(head + body)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise PostError(0, f"cannot reach the dispatcher at {base_url}: {exc}") from None
    raw = b"".join(chunks)
    header, _, content = raw.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].split()
    try:
        status = int(status_line[1])
    except (IndexError, ValueError):
        raise PostError(0, f"bad answer from {base_url}: {raw[:80]!r}") from None
    try:
        data = json.loads(content.decode("utf-8")) if content else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if not 200 <= status < 300:
        raise PostError(status, str(data.get("error") or status_line[2:]))
    return data
