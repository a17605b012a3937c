"""FakeLauncher: an in-memory RunnerLauncher for unit tests of the engine.

It records every launch and stop, and lets a test decide how each runner ends: ``finish`` (exit
code), ``crash`` (killed, no exit code), ``hang`` (stays alive, ignores SIGTERM: only the stop's
KILL ends it). Ending a runner calls ``env.on_exit(runner_id)`` like a real watcher thread does.
All methods are thread-safe: tests drive it from their own thread while the engine runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RunnerLaunchError
from ..models import AgentPool, Runner, RunnerState, Slot, Task
from .base import (
    LaunchEnvironment,
    RunnerExit,
    RunnerLauncher,
    StopResult,
    agent_argv,
    attempt_dir,
)
from .local import runner_id_for

_NOWHERE = Path("/nonexistent/necrocode-fake-runs")  # the default env: nothing is written


@dataclass
class FakeLaunch:
    """One recorded launch."""

    runner: Runner
    task: Task
    slot: Slot
    pool: AgentPool
    attempt: int
    argv: list[str] | None
    launched_at: float = field(default_factory=time.time)


class FakeLauncher(RunnerLauncher):
    """Records launches; runners live until the test ends them."""

    def __init__(self, env: LaunchEnvironment | None = None) -> None:
        super().__init__(env or LaunchEnvironment(api_url=None, token_for=lambda rid: "",
                                                  runs_dir=_NOWHERE))
        self._cond = threading.Condition()
        self.launches: list[FakeLaunch] = []
        self.stops: list[str] = []  # runner ids, in stop order
        self.released: list[str] = []
        self._runners: dict[str, Runner] = {}
        self._exits: dict[str, RunnerExit] = {}
        self._hung: set[str] = set()
        self._fail_next: list[RunnerLaunchError] = []
        self._unconfirmed_stops: list[str] = []
        self._unreachable = 0
        self._unreachable_reason = ""
        self.reconcile_calls = 0
        self.unconfirmed: list[str] = []  # runner ids whose stop was answered "not confirmed"
        self._adoptable: list[Runner] = []
        self.healthy = (True, "")

    # --- test controls ------------------------------------------------------------------------
    def fail_next_launch(self, message: str = "fake launch failure", *,
                         retryable: bool = True, count: int = 1) -> None:
        """Make the next ``count`` launches raise RunnerLaunchError."""
        with self._cond:
            for _ in range(count):
                self._fail_next.append(RunnerLaunchError(message, retryable=retryable))

    def finish(self, runner_id: str, exit_code: int = 0, reason: str = "exited") -> None:
        """End a runner with ``exit_code`` (0: success)."""
        self._end(runner_id, RunnerExit(exit_code, reason, time.time()))

    def crash(self, runner_id: str, reason: str = "signal 9") -> None:
        """End a runner without an exit code (killed by its platform)."""
        self._end(runner_id, RunnerExit(None, reason, time.time()))

    def hang(self, runner_id: str) -> None:
        """Keep a runner alive and make it ignore SIGTERM: only a stop's KILL ends it."""
        with self._cond:
            self._require(runner_id)
            self._hung.add(runner_id)

    def fail_next_stops(self, count: int = 1,
                        reason: str = "platform did not confirm the stop") -> None:
        """Make the next ``count`` stops answer "not confirmed" (no exception), the way a real
        launcher does when its platform cannot be asked: the runner keeps running."""
        with self._cond:
            self._unconfirmed_stops.extend([reason] * count)

    def fail_next_reconciles(self, count: int = 1,
                             reason: str = "platform unreachable") -> None:
        """Make the next ``count`` :meth:`reconcile` calls raise, as an engine or cluster
        that cannot be asked does."""
        with self._cond:
            self._unreachable = count
            self._unreachable_reason = reason

    def add_adoptable(self, runner: Runner) -> None:
        """A runner that :meth:`reconcile` reports as still alive (restart tests)."""
        with self._cond:
            self._adoptable.append(runner)

    def set_health(self, ok: bool, message: str = "") -> None:
        self.healthy = (ok, message)

    # --- queries for tests ----------------------------------------------------------------------
    def running(self) -> list[str]:
        """Ids of runners that have not ended."""
        with self._cond:
            return [rid for rid in self._runners if rid not in self._exits]

    def runner(self, runner_id: str) -> Runner:
        with self._cond:
            return self._require(runner_id)

    def launch_for(self, task_key: str) -> list[FakeLaunch]:
        """Launches of one task, oldest first."""
        with self._cond:
            return [launch for launch in self.launches if launch.task.key == task_key]

    def wait_for_launches(self, count: int, timeout: float = 10.0) -> list[FakeLaunch]:
        """Block until at least ``count`` launches happened; raises TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.launches) >= count, timeout):
                raise TimeoutError(f"{len(self.launches)} launches after {timeout}s, "
                                   f"wanted {count}")
            return list(self.launches)

    def wait_for_running(self, count: int, timeout: float = 10.0) -> list[str]:
        """Block until exactly ``count`` runners are alive; returns their ids."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len([r for r in self._runners if r not in self._exits]) == count, timeout
            )
            alive = [rid for rid in self._runners if rid not in self._exits]
            if not ok:
                raise TimeoutError(f"{len(alive)} runners alive after {timeout}s, wanted {count}")
            return alive

    # --- RunnerLauncher ---------------------------------------------------------------------------
    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        with self._cond:
            if self._fail_next:
                raise self._fail_next.pop(0)
            runner_id = runner_id_for(task, attempt)
            try:
                argv: list[str] | None = agent_argv(task, slot, pool, runner_id, attempt)
            except RunnerLaunchError:
                argv = None
            adir = attempt_dir(self.env.runs_dir, task, attempt)
            runner = Runner(
                runner_id=runner_id, task_key=task.key, pool_name=pool.name,
                slot_id=slot.slot_id, slot_path=slot.slot_path,
                handle=f"fake-{len(self.launches) + 1}", state=RunnerState.RUNNING,
                attempt=attempt, log_path=str(adir / "output.log"), attempt_dir=str(adir),
                cpu=task.resources.cpu, memory_mb=task.resources.memory_mb,
            )
            self._runners[runner_id] = runner
            self.launches.append(FakeLaunch(runner, task.copy(), slot, pool, attempt, argv))
            self._cond.notify_all()
            return runner

    def poll(self, runner: Runner) -> RunnerExit | None:
        with self._cond:
            if runner.runner_id not in self._runners:
                return RunnerExit(None, "unknown runner", time.time())
            return self._exits.get(runner.runner_id)

    def stop(self, runner: Runner, grace: float | None = None) -> StopResult:
        with self._cond:
            rid = runner.runner_id
            self.stops.append(rid)
            self._cond.notify_all()
            if self._unconfirmed_stops:
                reason = self._unconfirmed_stops.pop(0)
                self.unconfirmed.append(rid)
                return StopResult.unconfirmed(reason)
            if rid not in self._runners:
                return StopResult.gone(RunnerExit(None, "unknown runner", time.time()))
            if rid in self._exits:
                return StopResult.gone(self._exits[rid])
            reason = "killed (SIGKILL after grace)" if rid in self._hung else "stopped (SIGTERM)"
            self._exits[rid] = RunnerExit(None, reason, time.time())
            self._hung.discard(rid)
            self._cond.notify_all()
            return StopResult.gone(self._exits[rid])

    def reconcile(self, pool: AgentPool) -> list[Runner]:
        with self._cond:
            self.reconcile_calls += 1
            if self._unreachable > 0:
                self._unreachable -= 1
                raise RunnerLaunchError(self._unreachable_reason, pool=pool.name)
            found = [r for r in self._adoptable if r.pool_name == pool.name]
            for r in found:
                self._runners.setdefault(r.runner_id, r)
            self._adoptable = [r for r in self._adoptable if r.pool_name != pool.name]
            return found

    def health(self, pool: AgentPool) -> tuple[bool, str]:
        return self.healthy

    def release(self, runner: Runner) -> None:
        with self._cond:
            self.released.append(runner.runner_id)

    def log_activity(self, runner: Runner) -> tuple[float, int] | None:
        return None

    # --- internals --------------------------------------------------------------------------------
    def _require(self, runner_id: str) -> Runner:
        runner = self._runners.get(runner_id)
        if runner is None:
            raise KeyError(f"FakeLauncher: no runner {runner_id!r}; launched: "
                           f"{', '.join(self._runners) or 'none'}")
        return runner

    def _end(self, runner_id: str, exit_: RunnerExit) -> None:
        with self._cond:
            self._require(runner_id)
            if runner_id in self._exits:
                return
            self._exits[runner_id] = exit_
            self._hung.discard(runner_id)
            self._cond.notify_all()
        self.env.on_exit(runner_id)
