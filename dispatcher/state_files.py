"""The files in the state dir that find a running Dispatcher and let clients talk to it.

- ``dispatcher.json``: ``{"url", "pid", "started_at", "registry"}`` of the running Dispatcher,
  removed when it stops (a stale file is recognised by its dead pid);
- ``admin.token``: the admin token for control calls, mode 0600, kept across restarts;
- ``runner.secret``: the secret of runner tokens, mode 0600, kept across restarts so that
  adopted runners can still report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .api.tokens import new_secret, read_admin_token, write_admin_token
from .launchers.base import write_json_atomic

DISPATCHER_FILE = "dispatcher.json"
ADMIN_TOKEN_FILE = "admin.token"
SECRET_FILE = "runner.secret"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _private_ok(path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_mode & 0o077) == 0 and st.st_uid == os.getuid()


def load_or_create_secret(state_dir: Path) -> bytes:
    """The runner-token secret, kept in ``runner.secret`` (0600) across restarts."""
    path = state_dir / SECRET_FILE
    if _private_ok(path):
        raw = path.read_bytes()
        if len(raw) >= 32:
            return raw
    secret = new_secret()
    _write_private(path, secret)
    return secret


def load_or_create_admin_token(state_dir: Path) -> str:
    """The admin token from ``admin.token`` (0600), created when missing or not private."""
    path = state_dir / ADMIN_TOKEN_FILE
    if _private_ok(path):
        token = read_admin_token(path)
        if token:
            return token
    return write_admin_token(path)


def pid_alive(pid: int) -> bool:
    """True when a process with that pid exists (and is not a zombie we could see)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def read_dispatcher_info(state_dir: Path) -> dict[str, Any] | None:
    """The running Dispatcher's ``dispatcher.json``, or None when none runs there."""
    path = state_dir / DISPATCHER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("url"):
        return None
    if not pid_alive(int(data.get("pid") or 0)):
        return None
    return data


def previous_api_port(state_dir: Path) -> int | None:
    """Port of the API of the last Dispatcher that ran here (even a dead one), if recorded."""
    try:
        data = json.loads((state_dir / DISPATCHER_FILE).read_text(encoding="utf-8"))
        url = str(data.get("url") or "")
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return port if 0 < port < 65536 else None


def write_dispatcher_info(state_dir: Path, url: str, registry: str) -> None:
    write_json_atomic(state_dir / DISPATCHER_FILE, {
        "url": url, "pid": os.getpid(), "started_at": time.time(), "registry": registry,
    })


def remove_dispatcher_info(state_dir: Path) -> None:
    """Remove ``dispatcher.json`` if it is this process's."""
    path = state_dir / DISPATCHER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
