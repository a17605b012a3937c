"""What crosses into the engine thread: commands, and the typed outcomes they carry.

Other threads (the console, the HTTP API, launcher watchers, launch and fence workers, signal
handlers) never touch engine state; they post one of these frozen commands to the engine's queue.
``reply`` futures (where present) receive the engine's answer or its error.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..launchers.base import RunnerExit
from ..models import Runner, Slot, Task, Usage

if TYPE_CHECKING:
    from ..landing import LandReport
    from ..repo_pool.start import StartConflict
    from ..repo_pool.work import WorkResult


class FenceOutcome(str, enum.Enum):
    """Why a runner is being stopped, which decides how its task is settled once it is gone."""

    LOST = "lost"  # no sign of life for heartbeat_timeout: a failed attempt
    TIMEOUT = "timeout"  # ran past its task's timeout: a failed attempt
    CANCELLED = "cancelled"  # an operator cancelled the task: CANCELLED
    SHUTDOWN = "shutdown"  # the dispatcher stops: back to READY, no attempt spent
    REPORTED = "reported"  # reported completion but did not exit: settled by its report
    ORPHAN = "orphan"  # someone else settled the task: nothing to write
    BUDGET = "budget"  # crossed its token/cost/turn budget: FAILED without retry


class LaunchResult(str, enum.Enum):
    """What a launch worker did with one scheduled task."""

    RUNNER = "runner"  # assigned and started
    LAUNCH_ERROR = "launch_error"  # assigned, but the platform refused to start it
    NO_SLOT = "no_slot"  # no free workspace slot: back to waiting, nothing written
    SLOT_ERROR = "slot_error"  # its workspace could not be prepared
    REFUSED = "refused"  # the READY -> RUNNING compare-and-set was refused (it moved on)
    REGISTRY_ERROR = "registry_error"  # the registry failed; the task is still READY there
    REGISTRY_UNKNOWN = "registry_unknown"  # the registry failed; the assignment may have committed
    NOT_OWNER = "not_owner"  # this replica lost the Lease before the assignment: nothing written
    START_CONFLICT = "start_conflict"  # its dependencies' work does not merge: no slot taken


@dataclass(frozen=True)
class LaunchOutcome:
    """The answer of a launch worker."""

    result: LaunchResult
    running: Task | None = None  # the RUNNING task, once assigned
    slot: Slot | None = None
    runner: Runner | None = None
    error: BaseException | None = None
    conflict: StartConflict | None = None  # START_CONFLICT: which dependencies, which files


@dataclass(frozen=True)
class WorkOutcome:
    """What a commit worker found after a successful run (:mod:`.work_step`)."""

    result: WorkResult | None = None  # None with no error: a scratch slot, nothing recorded
    error: str | None = None  # git could not record the work (a retryable failed attempt)


# --- commands ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wake:
    """Poll the registry now (a write was made through this process)."""


@dataclass(frozen=True)
class RunnerExited:
    """A launcher's watcher saw the runner's process or container end."""

    runner_id: str


@dataclass(frozen=True)
class Heartbeat:
    """A runner's heartbeat over the API, with optional progress text."""

    runner_id: str
    progress: str | None = None
    usage: Usage | None = None  # a coding agent's usage so far (the runner wrapper reads it)


@dataclass(frozen=True)
class CompletionReport:
    """A runner reported its result over the API (it should exit soon)."""

    runner_id: str
    report: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SlotReleased:
    """A workspace slot of ``key`` was released (cleaned) in a worker."""

    key: str


@dataclass(frozen=True)
class LaunchFinished:
    """A launch worker is done with ``key``."""

    key: str
    outcome: LaunchOutcome


@dataclass(frozen=True)
class WorkCommitted:
    """A commit worker recorded (or failed to record) the work of ``key``'s run."""

    key: str
    outcome: WorkOutcome


@dataclass(frozen=True)
class LandFinished:
    """A landing worker is done: its report, or why it could not run."""

    land_id: str
    report: LandReport | None = None
    error: str | None = None


@dataclass(frozen=True)
class StopConfirmed:
    """A fence worker's stop is confirmed: the runner is known gone."""

    runner_id: str
    exit: RunnerExit | None = None


@dataclass(frozen=True)
class StopUnconfirmed:
    """A fence worker's stop was not confirmed; it tries again at ``retry_at``."""

    runner_id: str
    reason: str
    attempt: int
    retry_at: float


@dataclass(frozen=True)
class PlatformHealth:
    """The result of a platform check of a docker or kubernetes pool."""

    pool: str
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class PlatformAnswer:
    """A platform asked again about the runners of tasks left unknown after a restart."""

    pool: str
    runners: tuple[Runner, ...] | None  # None: it still could not be asked
    error: str = ""


@dataclass(frozen=True)
class LeadershipGained:
    """This replica now holds the Lease (``ha:``): take over."""


@dataclass(frozen=True)
class LeadershipLost:
    """This replica lost the Lease: stop acting at once."""

    reason: str


@dataclass(frozen=True)
class StopEngine:
    """Drain: take no new tasks, wait ``timeout`` for running runners, then stop them."""

    timeout: float
    leave_running: bool = False


@dataclass(frozen=True)
class Control:
    """An operator verb (pause, resume, priority, retry, cancel, pool)."""

    verb: str
    args: Mapping[str, Any]
    reply: Future[str] | None = None


@dataclass(frozen=True)
class EngineCall:
    """Run ``fn`` on the engine thread and answer its result (diagnostics, tests)."""

    fn: Callable[[], Any]
    reply: Future[Any] | None = None


Command = (Wake | RunnerExited | Heartbeat | CompletionReport | SlotReleased | LaunchFinished
           | WorkCommitted | LandFinished | StopConfirmed | StopUnconfirmed | PlatformHealth
           | PlatformAnswer | LeadershipGained | LeadershipLost | StopEngine | Control
           | EngineCall)
