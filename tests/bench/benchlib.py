"""Helpers shared by the benchmark scripts (not a benchmark itself; pytest never imports it).

The machine line, the filesystem a folder lives on, the other load on the machine while a
benchmark ran, CPU seconds of a process tree from /proc, medians with their spread, child
processes that never outlive their benchmark, and Markdown tables.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """CPU model, cores, memory, kernel, Python and SQLite versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def filesystem(path: Path | str) -> str:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``...), from /proc/mounts."""
    target = os.path.realpath(path)
    best, kind = "", "?"
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def own_cpu() -> float:
    """CPU seconds of this process and its reaped children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadWatch:
    """How busy the machine was from ``start()`` to ``stop()``, and how much of that was not
    this benchmark (other people's work): both in cores (2.0 = both cores of a 2-core box)."""

    def __init__(self) -> None:
        self.load_before = loadavg()
        self._t0 = time.monotonic()
        self._busy0, _ = _busy_jiffies()
        self._own0 = own_cpu()
        self.load_after = ""
        self.busy_cores = self.other_cores = 0.0

    def stop(self) -> LoadWatch:
        """Call once every child of the benchmark was reaped (their CPU counts as ours)."""
        wall = max(1e-9, time.monotonic() - self._t0)
        busy1, _ = _busy_jiffies()
        self.busy_cores = (busy1 - self._busy0) / TICK / wall
        self.other_cores = max(0.0, self.busy_cores - (own_cpu() - self._own0) / wall)
        self.load_after = loadavg()
        return self

    def line(self) -> str:
        return (f"load average before: {self.load_before}, after: {self.load_after}; "
                f"CPU busy during the run: {self.busy_cores:.2f} of {os.cpu_count()} cores, "
                f"{self.other_cores:.2f} of them other people's work")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a live process, from /proc/PID/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out += [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of ``pid`` and its live descendants."""
    own = kids = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        a, b = proc_cpu(p)
        own, kids = own + a, kids + b
        todo += children_of(p)
    return own, kids


def thread_cpu(tid: int) -> float:
    """CPU seconds of one thread of this process (Linux thread id)."""
    try:
        raw = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status(pid: int | str, key: str) -> float:
    """A ``kB`` figure of /proc/PID/status (``VmRSS``, ``VmHWM``) in MB; nan if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass(frozen=True)
class Spread:
    """Median and range of a few samples."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, spec: str = ".2f", unit: str = "") -> str:
        if not self.n:
            return "—"
        if self.n == 1:
            return f"{self.median:{spec}}{unit}"
        return f"{self.median:{spec}}{unit} ({self.low:{spec}}–{self.high:{spec}})"


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 5.0,
               sig: int = signal.SIGTERM) -> None:
    """End a child started with ``start_new_session=True`` and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # its own children may outlive it: the whole group goes
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def child(args: Sequence[str], **kwargs: object) -> Iterator[subprocess.Popen[str]]:
    """A child process in its own session, ended with its whole group when the block ends."""
    proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
        list(args), start_new_session=True, text=True, **kwargs)
    try:
        yield proc
    finally:
        stop_group(proc)


#: Runs argv[1:] in a grandchild and prints its wall seconds, peak RSS (kB) and exit status. A
#: child forked from a big benchmark process would count the parent's pages in its peak RSS
#: (ru_maxrss keeps the size before exec); forked from this small interpreter, it does not.
_MEASURE = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def measured(argv: Sequence[str], timeout: float = 600.0) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a command run to its end (stdout discarded)."""
    with child([sys.executable, "-S", "-c", _MEASURE, *argv], stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=timeout)
    wall, rss_kb, code = out.split()
    if int(code):
        raise RuntimeError(f"{' '.join(argv)} exited {code}")
    return float(wall), int(rss_kb) / 1024


@contextmanager
def fresh_ext4(folder: str, size_mb: int = 4096) -> Iterator[str]:
    """A newly made ext4 filesystem in an image file under ``folder``, mounted through a loop
    device (needs root, ``mkfs.ext4`` and ``mount``), unmounted and removed afterwards.

    An ext4 that has seen many files created and deleted (a shared machine's root filesystem)
    makes each new inode cost more (the allocator skips recently deleted inodes): a fresh one
    gives figures that reproduce; the aged one gives what that machine really costs."""
    base = Path(tempfile.mkdtemp(prefix="necrocode-ext4-", dir=folder))
    image, mount = base / "fs.img", base / "mnt"
    mounted = False
    try:
        with open(image, "wb") as fh:
            fh.truncate(size_mb * 2**20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=120)
        mount.mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, timeout=60)
        mounted = True
        yield str(mount)
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, cells as given."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
