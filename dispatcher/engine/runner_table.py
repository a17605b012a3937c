"""RunnerTable: the live runners, their signs of life, and the verdicts they earn.

The table watches; it never acts. Each engine iteration asks it which runners ended on their
platform (:meth:`RunnerTable.poll_exits`) and which ran past their task's timeout, went quiet for
``heartbeat_timeout`` or reported completion without exiting (:meth:`RunnerTable.verdicts`); the
engine hands ended runners to the Settler and the others to the Fencer.
:class:`RunnerDirectory` is the thread-safe part other threads may read (the HTTP API asks whether
a runner id is live before it accepts a heartbeat).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..launchers.base import RunnerExit, RunnerLauncher
from ..logging_setup import log_extra
from ..models import AgentPool, EventType, PoolType, Runner, RunnerState, Slot, Task, Usage
from ..runner_monitor import RunnerMonitor

logger = logging.getLogger(__name__)


def liveness_mode(pool: AgentPool) -> str:
    """How a pool's runners show they are alive: ``process`` (a live process is enough; the
    default of local-process pools) or ``log`` (log growth or heartbeats; the default of
    docker and kubernetes pools, whose runners heartbeat through the wrapper)."""
    mode = (pool.config or {}).get("liveness")
    if mode in ("process", "log"):
        return str(mode)
    return "process" if pool.type is PoolType.LOCAL_PROCESS else "log"


@dataclass
class RunnerRecord:
    """The engine's book of one live runner (one attempt of one task)."""

    runner: Runner
    task: Task
    pool: AgentPool
    launcher: RunnerLauncher
    slot: Slot | None
    started_at: float
    last_sign: float
    attempt: int
    state: RunnerState = RunnerState.RUNNING
    progress: str | None = None
    log_size: int = -1
    report: dict[str, Any] | None = None  # completion report received over the API
    reported_at: float | None = None
    adopted: bool = False
    heartbeats: int = 0  # heartbeats received: a heartbeating runner is judged by them
    usage: Usage | None = None  # a coding agent's usage so far in this attempt
    rev: int = 0  # grows when its view changes

    @property
    def runner_id(self) -> str:
        return self.runner.runner_id

    @property
    def key(self) -> str:
        return self.task.key


class VerdictKind(str, enum.Enum):
    """What the table concluded about a live runner."""

    TIMED_OUT = "timed_out"  # ran past its task's timeout
    LOST = "lost"  # no sign of life for heartbeat_timeout
    REPORTED_NO_EXIT = "reported_no_exit"  # reported its result but did not exit


@dataclass(frozen=True)
class Verdict:
    """A runner to fence, and why."""

    kind: VerdictKind
    runner_id: str
    reason: str

    @property
    def event_type(self) -> EventType | None:
        return {VerdictKind.TIMED_OUT: EventType.RUNNER_TIMED_OUT,
                VerdictKind.LOST: EventType.RUNNER_LOST}.get(self.kind)


class DirectoryState(str, enum.Enum):
    """What other threads may know of a runner id."""

    LAUNCHING = "launching"  # being started; its reports are kept for it
    ADOPTING = "adopting"  # a restarted engine expects it (its task is RUNNING): keep going
    RUNNING = "running"
    STOPPING = "stopping"  # being fenced: it should stop (the API tells it so)


class RunnerDirectory:
    """Runner ids the engine knows, readable from any thread (the engine thread writes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, DirectoryState] = {}

    def set(self, runner_id: str, state: DirectoryState) -> None:
        with self._lock:
            self._states[runner_id] = state

    def drop(self, runner_id: str) -> None:
        with self._lock:
            self._states.pop(runner_id, None)

    def state(self, runner_id: str) -> DirectoryState | None:
        with self._lock:
            return self._states.get(runner_id)

    def expect(self, runner_ids: Iterable[str]) -> None:
        """Runners a restarted engine is about to look for (ADOPTING): their heartbeats in the
        meantime must not tell them to stop."""
        with self._lock:
            for rid in runner_ids:
                self._states.setdefault(rid, DirectoryState.ADOPTING)

    def expected_done(self, keep: Iterable[str] = ()) -> None:
        """Reconcile has decided: forget the ADOPTING runners it did not adopt, except
        ``keep`` (runners of pools that could not be asked yet)."""
        kept = set(keep)
        with self._lock:
            for rid in [r for r, st in self._states.items()
                        if st is DirectoryState.ADOPTING and r not in kept]:
                del self._states[rid]


class RunnerTable:
    """Live runners by id and by task (engine thread only)."""

    def __init__(self, monitor: RunnerMonitor, directory: RunnerDirectory) -> None:
        self._monitor = monitor
        self._directory = directory
        self._runners: dict[str, RunnerRecord] = {}
        self._by_task: dict[str, str] = {}
        self._flagged: set[str] = set()
        self.heartbeat_timeouts = 0  # runners declared lost by this engine

    # --- membership ------------------------------------------------------------------------
    def add(self, rec: RunnerRecord, *, last_seen: float | None = None) -> None:
        """Watch a started (or adopted) runner."""
        self._runners[rec.runner_id] = rec
        self._by_task[rec.key] = rec.runner_id
        self._monitor.add_runner(rec.runner, last_seen=last_seen)
        self._directory.set(rec.runner_id, DirectoryState.RUNNING)

    def remove(self, runner_id: str) -> RunnerRecord | None:
        """Stop watching a runner (it is gone); returns its record."""
        rec = self._runners.pop(runner_id, None)
        if rec is None:
            return None
        if self._by_task.get(rec.key) == runner_id:
            del self._by_task[rec.key]
        self._monitor.remove_runner(runner_id)
        self._flagged.discard(runner_id)
        self._directory.drop(runner_id)
        return rec

    def get(self, runner_id: str) -> RunnerRecord | None:
        return self._runners.get(runner_id)

    def for_task(self, key: str) -> RunnerRecord | None:
        rid = self._by_task.get(key)
        return self._runners.get(rid) if rid is not None else None

    def has_task(self, key: str) -> bool:
        return key in self._by_task

    def __contains__(self, runner_id: object) -> bool:
        return runner_id in self._runners

    def __len__(self) -> int:
        return len(self._runners)

    def __iter__(self) -> Iterator[RunnerRecord]:
        return iter(list(self._runners.values()))

    def ids(self) -> list[str]:
        return list(self._runners)

    # --- signs of life ---------------------------------------------------------------------
    def heartbeat(self, runner_id: str, progress: str | None, now: float,
                  usage: Usage | None = None) -> bool:
        """A heartbeat over the API; False for a runner that is not watched."""
        rec = self._runners.get(runner_id)
        if rec is None:
            return False
        self._monitor.update_heartbeat(runner_id, progress)
        rec.heartbeats += 1
        rec.last_sign = now
        if progress is not None:
            rec.progress = progress
        if usage is not None:
            rec.usage = usage
        rec.rev += 1
        return True

    def sign_of_life(self, runner_id: str, now: float, progress: str | None = None,
                     usage: Usage | None = None) -> bool:
        """Output read from the runner's stream: alive, with its latest progress and usage."""
        rec = self._runners.get(runner_id)
        if rec is None:
            return False
        rec.last_sign = now
        self._monitor.touch(runner_id, now)
        if progress:
            rec.progress = progress
        if usage is not None:
            rec.usage = usage
        rec.rev += 1
        return True

    def report(self, runner_id: str, report: dict[str, Any], now: float) -> bool:
        """A completion report: poll its platform now (it should exit)."""
        rec = self._runners.get(runner_id)
        if rec is None:
            return False
        rec.report = report
        rec.reported_at = now
        rec.last_sign = now
        self._monitor.touch(runner_id, now)
        self._flagged.add(runner_id)
        return True

    def flag_exit(self, runner_id: str) -> None:
        """A watcher saw it end (or it may have): poll it at the next iteration."""
        self._flagged.add(runner_id)

    @property
    def has_flagged(self) -> bool:
        return bool(self._flagged)

    def take_flagged(self) -> list[str]:
        flagged, self._flagged = self._flagged, set()
        return list(flagged)

    def mark_stopping(self, runner_id: str, state: RunnerState) -> None:
        rec = self._runners.get(runner_id)
        if rec is not None:
            rec.state = state
            rec.rev += 1
            self._directory.set(runner_id, DirectoryState.STOPPING)

    # --- verdicts --------------------------------------------------------------------------
    def poll_exits(self, runner_ids: list[str],
                   skip: Container[str]) -> list[tuple[RunnerRecord, RunnerExit]]:
        """Ask the platform about these runners; the ones that ended, with their exit."""
        ended = []
        for rid in runner_ids:
            rec = self._runners.get(rid)
            if rec is None or rid in skip:
                continue
            try:
                result = rec.launcher.poll(rec.runner)
            except Exception as exc:
                logger.warning("polling runner %s failed: %s", rid, exc, exc_info=True,
                               extra=log_extra(task=rec.key, runner=rid, pool=rec.pool))
                continue
            if result is not None:
                ended.append((rec, result))
        return ended

    def verdicts(self, now: float, timeouts: dict[str, float], grace: float,
                 heartbeat_timeout: float, skip: Container[str]) -> list[Verdict]:
        """Signs of life, task timeouts, lost heartbeats, stuck reporters.

        A sign of life is a heartbeat over the API or a new line in the runner's log. For pools
        whose liveness is ``process`` (the default of local-process pools: supervised directly)
        a process that is still alive (checked just before, by the exit poll) counts as a sign of
        life too, so only the task's ``timeout`` catches a hang; a runner that sends heartbeats
        (the runner wrapper) is judged by them. ``timeouts`` maps task keys to their timeout.
        """
        out: list[Verdict] = []
        for rec in list(self._runners.values()):
            if rec.runner_id in skip:
                continue
            if rec.heartbeats == 0 and liveness_mode(rec.pool) == "process":
                rec.last_sign = now
                rec.rev += 1
                self._monitor.touch(rec.runner_id, now)
            log_path = rec.runner.log_path
            if log_path:
                try:
                    size = os.stat(log_path).st_size
                except OSError:
                    size = rec.log_size
                if size != rec.log_size:
                    rec.log_size = size
                    rec.last_sign = now
                    rec.rev += 1
                    self._monitor.touch(rec.runner_id, now)
            if rec.reported_at is not None:  # it reported its result: only let it exit
                if now - rec.reported_at > grace:
                    out.append(Verdict(VerdictKind.REPORTED_NO_EXIT, rec.runner_id,
                                       "reported completion but did not exit"))
                continue
            timeout = timeouts.get(rec.key)
            if timeout and now - rec.started_at > timeout:
                out.append(Verdict(VerdictKind.TIMED_OUT, rec.runner_id,
                                   f"ran longer than its timeout of {timeout:g}s"))
        late_seen = {v.runner_id for v in out}
        for rid in self._monitor.check_heartbeats():
            late = self._runners.get(rid)
            if late is None or rid in skip or rid in late_seen or late.reported_at is not None:
                continue
            self.heartbeat_timeouts += 1
            out.append(Verdict(VerdictKind.LOST, rid,
                               f"no sign of life for {now - late.last_sign:.1f}s "
                               f"(heartbeat_timeout {heartbeat_timeout:g}s)"))
        return out

    def next_timeout(self, timeouts: dict[str, float]) -> float | None:
        """When the earliest task timeout of a live runner falls due."""
        times = [rec.started_at + timeouts[rec.key] for rec in self._runners.values()
                 if timeouts.get(rec.key)]
        return min(times, default=None)
