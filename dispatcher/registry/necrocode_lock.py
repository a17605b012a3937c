"""The per-spec lock of a NecroCode registry, ``locks/<spec>.lock``, taken as ``filelock`` does.

The original's ``LockManager`` takes ``filelock.FileLock(locks/<spec>.lock)`` around every write.
On Linux that is ``flock(LOCK_EX)`` on the lock file, polled until a timeout; the file is left in
place on release (deleting it would let a second writer lock a new file while the first still
holds the old one). Taking the same ``flock`` on the same file makes the Dispatcher and the
original tools exclude each other. A lock file nobody holds is not stale: the kernel drops a
``flock`` when its holder exits, so a crashed writer never blocks anyone.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import RegistryError

log = logging.getLogger(__name__)

#: Seconds between tries, as the original's ``lock_retry_interval`` (grows to _MAX_POLL).
POLL = 0.01
_MAX_POLL = 0.05


class RegistryLockedError(RegistryError):
    """A spec's lock could not be taken in time; nothing was written."""

    def __init__(self, path: Path, timeout: float, holders: list[tuple[int, str]]) -> None:
        self.path = path
        self.timeout = timeout
        self.holders = holders
        if holders:
            who = ", ".join(f"pid {pid} ({cmd})" if cmd else f"pid {pid}" for pid, cmd in holders)
            fix = (f"It is released when that process finishes its write or exits; if it is "
                   f"hung, stop it (kill {holders[0][0]})")
        else:
            who = "another process (not visible from here: another container or host?)"
            fix = "It is released when its holder finishes its write or exits"
        super().__init__(
            f"the NecroCode lock {path} is held by {who}; waited {timeout:g} s. {fix}, then "
            "try again. Do not delete the lock file while it is held: that lets two writers "
            "in at once. Nothing was written."
        )


def lock_holders(path: Path) -> list[tuple[int, str]]:
    """Processes holding a lock on ``path`` (pid, command line), from ``/proc/locks``."""
    try:
        st = path.stat()
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return []
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":  # a waiter, not a holder
            continue
        if parts[5] == want and parts[4].isdigit() and int(parts[4]) not in pids:
            pids.append(int(parts[4]))
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        out.append((pid, cmd[:120]))
    return out


def _open(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(path, flags, 0o644)
        except PermissionError:  # another user's lock file: flock works on a read-only fd
            return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise RegistryError(
            f"cannot open the NecroCode lock {path}: {exc.strerror or exc}; the registry's "
            "locks/ folder must be writable by this user (check its owner and permissions)"
        ) from exc


def acquire(path: Path, timeout: float) -> int:
    """Take the lock (blocking up to ``timeout`` seconds); returns the descriptor to release."""
    fd = _open(path)
    deadline = time.monotonic() + timeout
    pause = POLL
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise RegistryError(
                    f"cannot lock {path}: {exc.strerror or exc}; the registry must be on a "
                    "file system with flock (a local disk, or NFS with locking)"
                ) from exc
        if time.monotonic() >= deadline:
            holders = lock_holders(path)
            os.close(fd)
            raise RegistryLockedError(path, timeout, holders)
        time.sleep(pause)
        pause = min(_MAX_POLL, pause * 1.5)


def release(fd: int) -> None:
    """Drop the lock and close its descriptor (the file stays, as filelock leaves it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def locked(paths: Sequence[Path], timeout: float) -> Iterator[None]:
    """Hold the locks of ``paths``, taken in sorted order (two writers that need the same
    locks never wait on each other in a circle)."""
    with ExitStack() as stack:
        for path in sorted(set(paths)):
            started = time.monotonic()
            fd = acquire(path, timeout)
            waited = time.monotonic() - started
            if waited > 1.0:
                log.info("waited %.1f s for the NecroCode lock %s", waited, path)
            stack.callback(release, fd)
        yield


__all__ = ["RegistryLockedError", "acquire", "lock_holders", "locked", "release"]
