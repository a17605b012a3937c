"""One owner per registry: an exclusive lock tied to the registry itself.

A Dispatcher owns its Task Registry for its whole life through :class:`RegistryLock`: an
``flock`` on a small file beside the registry (``registry.db.owner`` beside the SQLite file,
``DIR.owner`` beside a NecroCode registry folder, whose own layout is left alone). The kernel
gives the lock to exactly one process, however many start at once, and takes it back when that
process ends, however it ends (a kill -9 too): there is no stale lock to clean up. The file also
holds the holder's record (pid, host, since, state dir), so a refused Dispatcher can say who owns
the registry. Two paths to the same registry (a symlink, a relative path, another ``state_dir``)
lead to the same lock, because the file is found from the registry's real path. An in-memory
registry (``:memory:``) is private to its process: its lock is always granted.

Standby: ``acquire(wait=True)`` waits until the holder's lock goes, then takes it over.

    lock = RegistryLock.for_registry(config.resolved_registry_path(), state_dir=...)
    holder = lock.acquire()            # RegistryOwnedError names the holder
    ...
    lock.release()
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import DispatcherStateError

logger = logging.getLogger(__name__)

__all__ = ["Holder", "RegistryLock", "RegistryOwnedError", "lock_path_for"]

#: Suffix of the lock file beside a registry (a file or a folder).
LOCK_SUFFIX = ".owner"


@dataclass(frozen=True)
class Holder:
    """Who holds a registry: process id, host name, since when (epoch seconds), state dir."""

    pid: int
    host: str
    since: float
    state_dir: str | None = None

    def describe(self) -> str:
        """``pid 4242 on build-7 since 2026-12-01 15:04:05 (state dir /srv/.necrocode)``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        where = f" (state dir {self.state_dir})" if self.state_dir else ""
        return f"pid {self.pid} on {self.host} since {when}{where}"

    @classmethod
    def me(cls, state_dir: str | None = None) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.time(), state_dir)


class RegistryOwnedError(DispatcherStateError):
    """Another Dispatcher owns the registry; ``holder`` names it (None: it could not be read)."""

    def __init__(self, registry: str, holder: Holder | None) -> None:
        self.registry = registry
        self.holder = holder
        who = holder.describe() if holder else "another process (its record is unreadable)"
        super().__init__(
            f"registry {registry} is owned by another dispatcher: {who}; stop it first, use "
            "another registry, or start this one with --standby to take over when it ends")


def lock_path_for(registry: str | os.PathLike[str]) -> Path | None:
    """The lock file of a registry (None for ``:memory:``): beside it, file or folder (never
    inside a folder: an empty folder must stay empty to become a NecroCode registry)."""
    raw = os.fspath(registry)
    if raw == ":memory:" or not raw:
        return None
    real = Path(os.path.realpath(Path(raw).expanduser()))
    return real.with_name(real.name + LOCK_SUFFIX)


class RegistryLock:
    """The exclusive, process-lifetime lock of one registry (see the module doc)."""

    def __init__(self, lock_file: Path | None, registry: str, state_dir: str | None = None
                 ) -> None:
        self.lock_file = lock_file
        self.registry = registry
        self.state_dir = state_dir
        self._fd: int | None = None
        self._held = False
        self._guard = threading.Lock()
        self.holder_record: Holder | None = None

    @classmethod
    def for_registry(cls, registry: str | os.PathLike[str], *,
                     state_dir: str | os.PathLike[str] | None = None) -> RegistryLock:
        """The lock of the registry at ``registry`` (a file, a folder or ``:memory:``)."""
        return cls(lock_path_for(registry), os.fspath(registry),
                   os.fspath(state_dir) if state_dir is not None else None)

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._held

    def holder(self) -> Holder | None:
        """The recorded holder (this process's record once held; None: none or unreadable)."""
        if self.lock_file is None:
            return self.holder_record
        try:
            data = json.loads(self.lock_file.read_text(encoding="utf-8"))
            return Holder(int(data["pid"]), str(data["host"]), float(data["since"]),
                          data.get("state_dir"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def acquire(self, wait: bool = False, *, stop: threading.Event | None = None,
                timeout: float | None = None, poll: float = 0.1,
                on_wait: Callable[[Holder | None], None] | None = None) -> Holder:
        """Take the lock; returns this process's holder record.

        Without ``wait``, another holder is a :class:`RegistryOwnedError` naming it. With
        ``wait`` (standby), ``on_wait(holder)`` is called once and the lock is taken as soon as
        the holder's goes — unless ``stop`` is set or ``timeout`` seconds pass first, which
        raise RegistryOwnedError too.
        """
        with self._guard:
            if self._held:
                assert self.holder_record is not None
                return self.holder_record
            if self.lock_file is None:
                return self._granted()
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            deadline = None if timeout is None else time.monotonic() + timeout
            told = False
            try:
                while not self._try_lock(fd):
                    if not wait or (stop is not None and stop.is_set()) or (
                            deadline is not None and time.monotonic() >= deadline):
                        raise RegistryOwnedError(self.registry, self._current_holder())
                    if not told:
                        told = True
                        current = self._current_holder()
                        logger.warning("standby: registry %s is owned by %s; waiting to take "
                                       "over", self.registry,
                                       current.describe() if current else "another process")
                        if on_wait is not None:
                            on_wait(current)
                    if stop is not None:
                        stop.wait(poll)
                    else:
                        time.sleep(poll)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            record = self._granted()
            self._write_record(fd, record)
            if told:
                logger.warning("standby over: this dispatcher now owns registry %s",
                               self.registry)
            return record

    def release(self) -> None:
        """Give the lock back (also when the process ends, by the kernel)."""
        with self._guard:
            fd, self._fd = self._fd, None
            self._held = False
            if fd is not None:
                try:
                    os.ftruncate(fd, 0)  # no stale record for readers
                except OSError:
                    pass
                os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> RegistryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- internals -------------------------------------------------------------------------
    def _current_holder(self, patience: float = 1.0) -> Holder | None:
        """The holder's record; a holder that has just taken the lock writes it right after,
        so an empty record is read again for up to ``patience`` seconds."""
        deadline = time.monotonic() + patience
        while True:
            found = self.holder()
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.005)

    def _granted(self) -> Holder:
        self._held = True
        self.holder_record = Holder.me(self.state_dir)
        return self.holder_record

    @staticmethod
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    @staticmethod
    def _write_record(fd: int, record: Holder) -> None:
        body = json.dumps(asdict(record)).encode()
        os.pwrite(fd, body, 0)  # overwrite in place, then cut: never an empty file to read
        os.ftruncate(fd, len(body))
