"""The whole process tree of a local runner, including what left its process group.

An agent's grandchildren may call ``setsid``/``setpgid`` and leave the runner's process group;
killing the group then leaves them running after their task ended, after its timeout fence,
across its retry and the Dispatcher's exit. Two ways to find them, chosen once per host:

- **cgroup v2** (where a cgroup v2 hierarchy is writable, e.g. as root or with systemd
  delegation): the sh trampoline puts itself into a cgroup of its own before it runs the agent
  (``echo $$ > $NECROCODE_CGROUP/cgroup.procs``, a builtin: no extra process), so every
  descendant is in it whatever it does; ``cgroup.kill`` kills them all at once.
- **environment scan** (elsewhere): every descendant inherits ``NECROCODE_RUNNER_ID``; the
  processes whose environment names the runner are found in ``/proc/*/environ``. A process that
  clears its environment escapes this scan; :func:`processes_using` (a working folder inside
  the slot) is the last net before a slot is reused.

The process group itself is always signalled too, as before.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import procfs

logger = logging.getLogger(__name__)

__all__ = ["Evictor", "ProcessTrees", "Tree", "evict", "last_pid", "processes_using",
           "runner_processes"]

#: Folder made under the Dispatcher's own cgroup for the runners' cgroups.
CGROUP_DIR = "necrocode-runners"


@dataclass(frozen=True)
class Tree:
    """One runner's processes: its process group and, where used, its cgroup folder."""

    runner_id: str
    pgid: int  # <= 1: no group of its own (its leader pid was recycled)
    cgroup: str | None = None


def runner_processes(runner_ids: Iterable[str]) -> dict[int, str]:
    """Processes whose environment names one of ``runner_ids`` (pid -> runner id)."""
    wanted = {f"NECROCODE_RUNNER_ID={rid}".encode(): rid for rid in runner_ids}
    found: dict[int, str] = {}
    if not wanted:
        return found
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        start = env.find(b"NECROCODE_RUNNER_ID=")
        if start < 0:
            continue
        end = env.find(b"\0", start)
        rid = wanted.get(env[start:end if end >= 0 else len(env)])
        if rid is not None:
            found[int(entry)] = rid
    return found


def processes_using(folder: str | os.PathLike[str], *, newer_than: int = 0) -> list[int]:
    """Live processes whose working folder is ``folder`` or inside it (with ``newer_than``,
    only those whose pid is above it).

    The last net before a slot is reused, for a process that escaped both its runner's cgroup
    and the environment scan (it cleared its environment): such a process is still found where
    it works. Open files are not looked at: a readlink per open file of every process on the
    host would cost more than the rest of a short task's launch.
    """
    root = os.path.realpath(folder)
    prefix = root.rstrip("/") + "/"
    me = os.getpid()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me or int(entry) <= newer_than:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue  # gone, or not ours to look at
        if cwd == root or cwd.startswith(prefix):
            st = procfs.read_stat(int(entry))
            if st is not None and not st.zombie:
                found.append(st.pid)
    return found


def evict(folder: str | os.PathLike[str], what: str, wait: float = 5.0, *,
          newer_than: int = 0) -> list[int]:
    """Kill the processes still using ``folder`` (see :func:`processes_using`) and wait until
    they are gone; returns their pids (a warning names them)."""
    pids = processes_using(folder, newer_than=newer_than)
    if not pids:
        return pids
    logger.warning("%s: processes of an earlier run still use it: %s; killing them", what, pids)
    _signal(pids, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = _alive(pids)
    if left:
        logger.warning("%s: processes %s are still there after SIGKILL", what, left)
    return pids


class Evictor:
    """Empties folders of processes before they are reused (:func:`evict`), looking only at
    the processes started since a folder was last emptied.

    Every process of a run that used a folder started after the folder was emptied before that
    run, so it has a higher pid than the newest one then (pids only rise until they wrap). A
    folder emptied less than :attr:`FULL_SCAN_AFTER` seconds ago is therefore scanned for those
    pids only: a short task's launch reads a few ``/proc`` entries instead of every process on
    the host. A wrap (the newest pid went down), an unreadable ``/proc/loadavg`` or an older
    mark scans every process, as :func:`evict` alone does.
    """

    FULL_SCAN_AFTER = 5.0

    def __init__(self) -> None:
        self._marks: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def evict(self, folder: str, what: str) -> list[int]:
        newest, now = last_pid(), time.monotonic()  # before the scan: what starts later is
        with self._lock:                            # looked at next time
            mark = self._marks.get(folder)
        newer_than = 0
        if mark is not None and newest is not None and newest >= mark[0] \
                and now - mark[1] < self.FULL_SCAN_AFTER:
            newer_than = mark[0]
        pids = evict(folder, what, newer_than=newer_than)
        with self._lock:
            if newest is None:
                self._marks.pop(folder, None)
            else:
                self._marks[folder] = (newest, now)
        return pids


def last_pid() -> int | None:
    """The pid most recently given out on this host (its pid namespace), or None."""
    try:
        with open("/proc/loadavg", "rb") as fh:
            return int(fh.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pids: Iterable[int]) -> list[int]:
    out = []
    for pid in pids:
        st = procfs.read_stat(pid)
        if st is not None and not st.zombie:
            out.append(pid)
    return out


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ProcessTrees:
    """Finds, signals and waits for whole runner trees on this host (cgroup v2 or scan).

    ``mode`` is ``"auto"`` (cgroup v2 when writable, else the scan; the environment variable
    ``NECROCODE_PROCESS_TREE=scan`` chooses the scan), ``"cgroup"`` or ``"scan"``. :attr:`kind`
    says which is in use.
    """

    def __init__(self, mode: str = "auto") -> None:
        if mode == "auto":
            mode = os.environ.get("NECROCODE_PROCESS_TREE", "auto")
        self._root: Path | None = None
        if mode in ("auto", "cgroup"):
            self._root = _cgroup_root()
            if self._root is None and mode == "cgroup":
                logger.warning("cgroup v2 is not writable here; runner process trees are "
                               "found by their NECROCODE_RUNNER_ID environment instead")
        self.kind = "cgroup" if self._root is not None else "scan"
        if self._root is not None:
            _prune(self._root)

    def prepare(self, runner_id: str) -> str | None:
        """Make the runner's cgroup (before launch); its folder, or None (scan mode)."""
        if self._root is None:
            return None
        path = self._root / runner_id
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            logger.warning("cannot make cgroup %s (%s); this runner's tree is found by its "
                           "environment instead", path, exc)
            return None
        return str(path)

    def folder(self, name: str) -> str | None:
        """The path a cgroup called ``name`` would have beside the runners' (None: no
        cgroups here)."""
        return None if self._root is None else str(self._root / name)

    def spawn_home(self, owner: object) -> str | None:
        """The cgroup for the spawn server of ``owner`` (a launcher of this process). Until
        :meth:`release_spawn_home`, no launcher's prune removes it: it is empty for the moment
        the server steps into a runner's cgroup to spawn, and a removal then would fail the
        launches that follow (None: no cgroups here)."""
        name = f"spawn-{os.getpid()}-{id(owner):x}"
        _SPAWN_HOMES.add(name)
        return self.folder(name)

    @staticmethod
    def release_spawn_home(owner: object) -> None:
        """``owner`` spawns no more: its server's cgroup may be pruned once empty."""
        _SPAWN_HOMES.discard(f"spawn-{os.getpid()}-{id(owner):x}")

    def members(self, tree: Tree) -> list[int]:
        """Live processes of the tree (the group, the cgroup, or the environment scan)."""
        pids = set(procfs.group_members(tree.pgid)) if tree.pgid > 1 else set()
        placed = _cgroup_pids(tree.cgroup) if tree.cgroup is not None else []
        pids.update(placed)
        if tree.cgroup is None or (pids and not placed):
            # no cgroup, or the trampoline could not enter it: find the tree by its env
            pids.update(runner_processes([tree.runner_id]))
        return sorted(_alive(pids))

    def kill(self, tree: Tree, grace: float, reap: Callable[[], object] = lambda: None,
             kill_wait: float = 10.0) -> str:
        """TERM the whole tree, wait ``grace``, KILL what is left and wait until it is gone.

        Returns "gone", "terminated", "killed" — or "stuck" when processes are still there
        ``kill_wait`` seconds after SIGKILL: the tree is then not known gone.
        """
        reap()
        seen: dict[int, int] = {}  # every member met during this kill: pid -> start ticks
        if not self._note(tree, seen):
            return "gone"
        self._send(tree, signal.SIGTERM)
        if self._wait_gone(tree, grace, reap, seen):
            return "terminated"
        self._send(tree, signal.SIGKILL)
        if not self._wait_gone(tree, kill_wait, reap, seen):
            logger.warning("runner %s: processes %s still there %gs after SIGKILL",
                           tree.runner_id, self.members(tree), kill_wait)
            return "stuck"
        return "killed"

    def forget_if_empty(self, tree: Tree) -> None:
        """Remove the runner's cgroup folder now if nothing is left in it (else keep it for
        :meth:`kill` and :meth:`forget`): a runner seen to end leaves no empty cgroup behind."""
        if tree.cgroup is not None and not _cgroup_pids(tree.cgroup):
            try:
                os.rmdir(tree.cgroup)
            except OSError:
                pass  # gone already, or a process entered it meanwhile: forget() decides

    def forget(self, tree: Tree) -> None:
        """Remove the runner's cgroup folder (once its processes are gone)."""
        if tree.cgroup is None:
            return
        try:
            os.rmdir(tree.cgroup)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot remove cgroup %s: %s", tree.cgroup, exc)

    # --- internals -------------------------------------------------------------------------
    def _send(self, tree: Tree, sig: int) -> None:
        if tree.pgid > 1:  # never the "every process" of pgid -1, nor init's group
            procfs.signal_group(tree.pgid, sig)
        if tree.cgroup is not None:
            if sig == signal.SIGKILL and _cgroup_kill(tree.cgroup):
                return
            _signal(_cgroup_pids(tree.cgroup), sig)
        else:
            _signal(runner_processes([tree.runner_id]), sig)

    def _note(self, tree: Tree, seen: dict[int, int]) -> bool:
        """Add the tree's live members to ``seen``; True while any process of ``seen`` lives.

        A process met once is waited for by its stat until it is a zombie or gone: one that is
        exiting has already lost its memory (its environment reads empty, so the scan no
        longer finds it) but may still run for a while.
        """
        for pid in self.members(tree):
            if pid not in seen:
                st = procfs.read_stat(pid)
                if st is not None:
                    seen[pid] = st.start_ticks
        for pid, ticks in list(seen.items()):
            if not procfs.same_process(pid, ticks):
                del seen[pid]
        return bool(seen)

    def _wait_gone(self, tree: Tree, timeout: float, reap: Callable[[], object],
                   seen: dict[int, int]) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.005
        while True:
            reap()
            if not self._note(tree, seen):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


#: Empty runner cgroups older than this are removed when a launcher starts (runners that
#: ended while no Dispatcher ran); younger ones may belong to a launch in progress.
PRUNE_AGE = 600.0
SPAWN_PRUNE_AGE = 10.0


def _prune(root: Path) -> None:
    now = time.time()
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        # a spawn server's cgroup is empty once the server ended: no need to wait for it; but
        # while its Dispatcher lives it is only empty for the moment the server steps into a
        # runner's cgroup to spawn, and removing it then fails that launch and the next ones
        spawn = entry.name.startswith("spawn-")
        if spawn and _spawn_home_in_use(entry.name):
            continue
        age = SPAWN_PRUNE_AGE if spawn else PRUNE_AGE
        try:
            if not entry.is_dir() or now - entry.stat().st_mtime < age:
                continue
            if "populated 0" in (entry / "cgroup.events").read_text():
                entry.rmdir()
        except OSError:
            continue


#: Spawn server cgroups this process may still spawn through (names; see ``spawn_home``).
_SPAWN_HOMES: set[str] = set()


def _spawn_home_in_use(name: str) -> bool:
    """Whether a spawn server's cgroup (``spawn-<pid>-<id>``) may still be stepped out of for
    a spawn: its launcher in this process is open, or its Dispatcher is another live process."""
    parts = name.split("-")
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return name in _SPAWN_HOMES
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # a live process of someone else
        return True
    return True


def _cgroup_pids(path: str) -> list[int]:
    try:
        text = Path(path, "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _cgroup_kill(path: str) -> bool:
    try:
        Path(path, "cgroup.kill").write_text("1")
    except OSError:
        return False  # kernels before 5.14: signal each member instead
    return True


def _cgroup_root() -> Path | None:
    """A writable cgroup v2 folder for runner cgroups, proven by moving a probe into it."""
    mount = _cgroup2_mount()
    own = _own_cgroup()
    if mount is None or own is None:
        return None
    root = mount / own.lstrip("/") / CGROUP_DIR
    probe = root / f"probe-{os.getpid()}"
    try:
        root.mkdir(exist_ok=True)
        probe.mkdir(exist_ok=True)
        rc = subprocess.run(["/bin/sh", "-c", 'echo $$ > "$1/cgroup.procs"', "probe",
                             str(probe)], capture_output=True, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        rc = 1
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass
    if rc != 0:
        return None
    return root


def _cgroup2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def _own_cgroup() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:] or "/"
    except OSError:
        return None
    return None
