"""RunnerMonitor: heartbeat bookkeeping of the live Agent Runners (seed component).

Pure and passive: no threads, no I/O. The engine thread feeds it (runner added, heartbeat received,
sign of life seen by a platform check or log growth) and asks it which runners went quiet for
longer than ``heartbeat_timeout``. A runner that never sent a first heartbeat is judged from its
start time. Fencing and retrying are the engine's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .models import Runner, RunnerInfo, RunnerState, Task

logger = logging.getLogger(__name__)


@dataclass
class _Watched:
    runner: Runner
    state: RunnerState
    last_heartbeat: float | None  # last heartbeat received over the API
    last_sign: float  # last sign of life of any kind (heartbeat, touch, start)
    progress: str | None = None
    heartbeats: int = 0


class RunnerMonitor:
    """Tracks the last sign of life of each runner and reports those that went quiet."""

    def __init__(
        self, heartbeat_timeout: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        if heartbeat_timeout <= 0:
            raise ValueError(f"heartbeat_timeout must be > 0 seconds, got {heartbeat_timeout!r}")
        self.heartbeat_timeout = float(heartbeat_timeout)
        self._clock = clock
        self._runners: dict[str, _Watched] = {}

    # --- seed API ------------------------------------------------------------------------
    def add_runner(self, runner: Runner, *, last_seen: float | None = None) -> None:
        """Watch ``runner``. Until its first heartbeat it is judged from ``runner.started_at``
        (or ``last_seen`` when given, e.g. the adoption time after a restart)."""
        base = last_seen if last_seen is not None else runner.started_at
        state = runner.state if not runner.state.finished else RunnerState.RUNNING
        self._runners[runner.runner_id] = _Watched(
            runner=runner, state=state, last_heartbeat=None, last_sign=base
        )

    def update_heartbeat(self, runner_id: str, progress: str | None = None) -> bool:
        """Record a heartbeat (and optional progress message). False for an unknown runner."""
        watched = self._runners.get(runner_id)
        if watched is None:
            logger.debug("heartbeat from unknown runner %s ignored", runner_id)
            return False
        now = self._clock()
        watched.last_heartbeat = now
        watched.last_sign = max(watched.last_sign, now)
        watched.heartbeats += 1
        if progress is not None:
            watched.progress = str(progress)
        if watched.state is RunnerState.LAUNCHING:
            watched.state = RunnerState.RUNNING
        return True

    def check_heartbeats(self) -> list[str]:
        """Ids of live runners whose last sign of life is older than ``heartbeat_timeout``.

        A runner stays in this list on every call until the engine removes it or marks it
        finished; the engine fences it first.
        """
        now = self._clock()
        late = [
            rid
            for rid, w in self._runners.items()
            if not w.state.finished and now - w.last_sign > self.heartbeat_timeout
        ]
        return late

    def remove_runner(self, runner_id: str) -> RunnerInfo | None:
        """Stop watching a runner; returns its last status (None if unknown)."""
        info = self.get_runner_status(runner_id)
        self._runners.pop(runner_id, None)
        return info

    def get_runner_status(self, runner_id: str) -> RunnerInfo | None:
        """What is known of a runner now, or None."""
        watched = self._runners.get(runner_id)
        if watched is None:
            return None
        return self._info(watched, self._clock())

    # --- additions -----------------------------------------------------------------------
    def touch(self, runner_id: str, at: float | None = None) -> bool:
        """A sign of life that is not a heartbeat: the process is alive, its log grew."""
        watched = self._runners.get(runner_id)
        if watched is None:
            return False
        at = self._clock() if at is None else at
        watched.last_sign = max(watched.last_sign, at)
        return True

    def set_state(self, runner_id: str, state: RunnerState) -> bool:
        """Record a state change (e.g. RUNNING after launch, COMPLETED when it ended)."""
        watched = self._runners.get(runner_id)
        if watched is None:
            return False
        watched.state = state
        return True

    def check_timeouts(self, tasks: Mapping[str, Task] | Iterable[Task]) -> list[str]:
        """Ids of live runners whose task ran longer than its ``timeout``.

        ``tasks``: the runners' tasks, as a mapping by task key or any iterable of tasks.
        """
        by_key = dict(tasks) if isinstance(tasks, Mapping) else {t.key: t for t in tasks}
        now = self._clock()
        out = []
        for rid, w in self._runners.items():
            task = by_key.get(w.runner.task_key)
            if w.state.finished or task is None or not task.timeout:
                continue
            if now - w.runner.started_at > task.timeout:
                out.append(rid)
        return out

    def next_deadline(self) -> float | None:
        """Earliest time at which some live runner would pass the heartbeat timeout."""
        times = [w.last_sign for w in self._runners.values() if not w.state.finished]
        return min(times) + self.heartbeat_timeout if times else None

    def all(self) -> list[RunnerInfo]:
        """Status of every watched runner."""
        now = self._clock()
        return [self._info(w, now) for w in self._runners.values()]

    def __contains__(self, runner_id: object) -> bool:
        return runner_id in self._runners

    def __len__(self) -> int:
        return len(self._runners)

    @staticmethod
    def _info(w: _Watched, now: float) -> RunnerInfo:
        r = w.runner
        return RunnerInfo(
            runner_id=r.runner_id,
            task_key=r.task_key,
            pool_name=r.pool_name,
            state=w.state,
            started_at=r.started_at,
            last_heartbeat=w.last_heartbeat,
            heartbeat_age=max(0.0, now - w.last_sign),
            runtime=max(0.0, now - r.started_at),
            slot_id=r.slot_id,
            handle=r.handle,
            attempt=r.attempt,
            progress=w.progress,
        )
