"""The gate of the merge queue: a check command run on the merged tree before it lands (R21.3).

Each repository has one landing worktree beside its slots (``<workspaces>/<repo>/land``),
checked out at the candidate merge commit and cleaned before each check, and a lock file
(``land.lock``) so that two landings of one repository never run at once. The check is an argv
list (never run through a shell) with the worktree as its folder, stopped with its process
group after ``timeout`` seconds. :class:`LocalGate` is the default :class:`Gate`; the engine
may offer one that runs the check in a slot of a pool.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import DispatcherError
from .repo_pool.files import remove_tree
from .repo_pool.git import run_git

logger = logging.getLogger(__name__)

OUTPUT_TAIL = 4000  # characters of a check's output kept (its end: where the failure is)


class LandError(DispatcherError):
    """A landing could not run (unknown taskset, no clone, a busy or bad check); nothing
    changed unless the message says otherwise."""


@dataclass(frozen=True)
class CheckResult:
    """How a check ended."""

    ok: bool
    exit_code: int | None  # None: it did not start, or was stopped at its timeout
    output: str  # the tail of stdout and stderr together
    duration: float

    def describe(self, argv: Sequence[str]) -> str:
        """``check `make test` exited 2`` (or timed out, or could not start)."""
        cmd = " ".join(argv)
        if self.ok:
            return f"check `{cmd}` passed"
        if self.exit_code is None:
            return f"check `{cmd}` {self.output.splitlines()[-1] if self.output else 'failed'}"
        return f"check `{cmd}` exited {self.exit_code}"


class Gate(Protocol):
    """Runs the land check on a checked-out merged tree."""

    def run(self, worktree: Path, argv: Sequence[str], env: Mapping[str, str],
            timeout: float) -> CheckResult:
        """Run ``argv`` in ``worktree``; never raises for a failing or missing command."""
        ...


class LocalGate:
    """Runs the check as a child process of this one, in its own process group."""

    def run(self, worktree: Path, argv: Sequence[str], env: Mapping[str, str],
            timeout: float) -> CheckResult:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                list(argv), cwd=worktree, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:
            return CheckResult(False, None, f"could not start: {exc.strerror or exc}",
                               time.monotonic() - start)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            text = _tail(out) + f"\ntimed out after {timeout:g}s"
            return CheckResult(False, None, text.strip(), time.monotonic() - start)
        return CheckResult(proc.returncode == 0, proc.returncode, _tail(out),
                           time.monotonic() - start)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", errors="replace")
    return text[-OUTPUT_TAIL:].strip()


class LandingWorktree:
    """The landing worktree of one repository's clone, held under its lock."""

    def __init__(self, mirror: Path) -> None:
        self.mirror = mirror
        self.path = mirror.parent / "land"

    def checkout(self, commit: str) -> Path:
        """The worktree at ``commit``, clean (made or repaired as needed)."""
        try:
            self._checkout(commit)
        except DispatcherError:
            logger.warning("landing worktree %s: rebuilding it", self.path, exc_info=True)
            remove_tree(self.path)
            run_git(["--git-dir", str(self.mirror), "worktree", "prune"], check=False)
            self._checkout(commit)
        return self.path

    def _checkout(self, commit: str) -> None:
        if not (self.path / ".git").exists():
            remove_tree(self.path)
            run_git(["--git-dir", str(self.mirror), "worktree", "add", "-q", "--detach", "-f",
                     str(self.path), commit])
            return
        run_git(["reset", "-q", "--hard"], cwd=self.path)
        run_git(["clean", "-q", "-ffdx"], cwd=self.path)
        run_git(["checkout", "-q", "-f", "--detach", commit], cwd=self.path)


@contextmanager
def land_lock(mirror: Path) -> Iterator[None]:
    """Hold the landing lock of ``mirror``'s repository; LandError when another holds it."""
    path = mirror.parent / "land.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise LandError(f"another landing into this repository is running (pid {holder}, "
                            f"lock {path}); wait for it and try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock
