"""Small Linux process helpers for the local launcher: /proc stat, process groups, exit watching.

A process is identified across a Dispatcher restart by (pid, start time in clock ticks since
boot, boot id): a recycled pid has another start time, a reboot another boot id.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the launcher needs."""

    pid: int
    state: str  # R, S, D, Z (zombie), T, …
    ppid: int
    pgid: int
    sid: int
    start_ticks: int  # start time, clock ticks after boot

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None when the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode("utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # comm is in parentheses and may itself hold spaces and parentheses: split after the last ")"
    rest = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcStat(
            pid=pid,
            state=rest[0],
            ppid=int(rest[1]),
            pgid=int(rest[2]),
            sid=int(rest[3]),
            start_ticks=int(rest[19]),
        )
    except (IndexError, ValueError):
        return None


def boot_id() -> str:
    """This boot's id (changes on reboot), or "" where unavailable."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def same_process(pid: int, start_ticks: int | None) -> bool:
    """True when ``pid`` is alive (not a zombie) and started at ``start_ticks``."""
    st = read_stat(pid)
    if st is None or st.zombie:
        return False
    return start_ticks is None or st.start_ticks == start_ticks


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = read_stat(int(entry))
        if st is not None and st.pgid == pgid and not st.zombie:
            members.append(st.pid)
    return members


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("no permission to signal process group %d", pgid)
        return False
    return True


def kill_group(
    pgid: int,
    grace: float,
    reap: Callable[[], object] = lambda: None,
    kill_wait: float = 10.0,
) -> str:
    """TERM the group, wait ``grace`` seconds for it to go, then KILL it and wait until it is gone.

    ``reap`` is called while waiting so that our own child (the group leader) does not linger
    as a zombie. Returns what it took: "gone", "terminated" or "killed" — or "stuck" when
    members are still there ``kill_wait`` seconds after SIGKILL (uninterruptible sleep, or
    another user's process): the group is then not known gone.
    """
    reap()
    if not group_members(pgid):
        return "gone"
    signal_group(pgid, signal.SIGTERM)
    if _wait_group_gone(pgid, grace, reap):
        return "terminated"
    signal_group(pgid, signal.SIGKILL)
    if not _wait_group_gone(pgid, kill_wait, reap):
        logger.warning("process group %d still has members %s %gs after SIGKILL", pgid,
                       group_members(pgid), kill_wait)
        return "stuck"
    return "killed"


def _wait_group_gone(pgid: int, timeout: float, reap: Callable[[], object]) -> bool:
    deadline = time.monotonic() + max(0.0, timeout)
    delay = 0.005
    while True:
        reap()
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class ExitWatcher:
    """Calls ``on_exit(runner_id)`` when a watched process ends.

    One thread waits on pidfds with a selector (Linux >= 5.3). Where pidfds are missing it falls
    back to one small thread per process. It never reaps: the engine's ``poll`` does.
    """

    def __init__(self, on_exit: Callable[[str], None], use_pidfd: bool = True) -> None:
        self._on_exit = on_exit
        self._use_pidfd = use_pidfd and hasattr(os, "pidfd_open")
        self._lock = threading.Lock()
        self._pending: list[tuple[int, str]] = []
        self._sel: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, runner_id: str, pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Start watching ``pid`` (our child ``proc`` or an adopted process)."""
        if self._closed:
            return
        if self._use_pidfd:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._fire(runner_id)
                return
            except OSError as exc:
                logger.info("pidfd_open unavailable (%s); one watcher thread per process", exc)
                self._use_pidfd = False
            else:
                with self._lock:
                    self._ensure_thread()
                    self._pending.append((fd, runner_id))
                    wake = len(self._pending) == 1  # else a wake-up is already on its way
                if wake:
                    os.write(self._wake_w, b"x")
                return
        threading.Thread(
            target=self._watch_one, args=(runner_id, pid, proc), daemon=True,
            name=f"necrocode-watch-{pid}",
        ).start()

    def close(self) -> None:
        """Stop the watcher thread and close its descriptors."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            os.write(self._wake_w, b"x")
            thread.join(timeout=5)

    # --- internals -----------------------------------------------------------------------
    def _fire(self, runner_id: str) -> None:
        try:
            self._on_exit(runner_id)
        except Exception:
            logger.exception("on_exit(%s) failed", runner_id)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, name="necrocode-exit-watcher",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while True:
                for key, _ in sel.select():
                    if key.data is None:
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                        with self._lock:
                            if self._closed:
                                return
                            pending, self._pending = self._pending, []
                        for fd, rid in pending:
                            sel.register(fd, selectors.EVENT_READ, rid)
                    else:
                        sel.unregister(key.fd)
                        os.close(key.fd)
                        self._fire(str(key.data))
        finally:
            for key in list(sel.get_map().values()):
                sel.unregister(key.fd)
                os.close(key.fd)
            sel.close()
            os.close(self._wake_w)
            with self._lock:
                for fd, _ in self._pending:
                    os.close(fd)
                self._pending = []

    def _watch_one(self, runner_id: str, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            while not self._closed:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            start = read_stat(pid)
            ticks = start.start_ticks if start else None
            while not self._closed and same_process(pid, ticks):
                time.sleep(0.25)
        if not self._closed:
            self._fire(runner_id)
