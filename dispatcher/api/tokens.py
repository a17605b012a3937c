"""Tokens of the HTTP API: per-runner HMAC tokens and the admin token file."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def new_secret() -> bytes:
    """A fresh random secret, generated at each Dispatcher start."""
    return secrets.token_bytes(32)


def new_admin_token() -> str:
    """A fresh random admin token."""
    return secrets.token_urlsafe(32)


def runner_token(secret: bytes, runner_id: str) -> str:
    """The token of one runner: HMAC-SHA256(secret, runner_id), hex."""
    return hmac.new(secret, runner_id.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_runner_token(secret: bytes, runner_id: str, token: str | None) -> bool:
    """True when ``token`` is the token of ``runner_id`` (constant-time comparison).

    Any text is compared as UTF-8 bytes: a non-ASCII token is simply wrong (401), never an
    error of the comparison.
    """
    if not token:
        return False
    expected = runner_token(secret, runner_id).encode("utf-8")
    return hmac.compare_digest(expected, token.encode("utf-8", "surrogateescape"))


def tokens_equal(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two tokens; False when ``given`` is missing."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"),
                               given.encode("utf-8", "surrogateescape"))


def write_admin_token(path: str | os.PathLike[str], token: str | None = None) -> str:
    """Write the admin token to ``path``, readable by its owner only (mode 0600).

    An old file is removed first and the new one is created with O_EXCL, so the token is never
    written into a file (or through a symlink) that someone else prepared. Returns the token.
    """
    token = token or new_admin_token()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode("utf-8"))
    finally:
        os.close(fd)
    return token


def read_admin_token(path: str | os.PathLike[str]) -> str:
    """Read the admin token written by :func:`write_admin_token`."""
    return Path(path).read_text(encoding="utf-8").strip()
