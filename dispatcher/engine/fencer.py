"""Fencer: stops runners, and knows which stops are confirmed.

A fence runs the launcher's ``stop()`` in a worker thread. Only a *confirmed* stop (the process
tree, container or Job is known gone) is reported back as :class:`~.commands.StopConfirmed`;
**that is where a fence completes**: the engine then releases the runner's slot and capacity and
hands the task to the Settler. An unconfirmed stop (the platform could not be asked, or the runner
is still there) keeps everything held, is reported as :class:`~.commands.StopUnconfirmed`
(visible: "stopping: not confirmed: …") and is tried again with a growing pause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..launchers.base import RunnerExit, StopResult
from ..logging_setup import log_extra
from .commands import Command, FenceOutcome, StopConfirmed, StopUnconfirmed
from .runner_table import RunnerRecord

logger = logging.getLogger(__name__)

FENCE_WORKERS = 8
FIRST_RETRY = 0.2  # seconds before an unconfirmed stop is tried again (doubling, capped)
MAX_RETRY = 10.0


@dataclass
class FenceState:
    """One fence in progress."""

    rec: RunnerRecord
    outcome: FenceOutcome
    reason: str
    since: float
    tries: int = 0
    problem: str = ""  # why the last stop was not confirmed

    @property
    def display(self) -> str:
        if self.problem:
            return f"stopping: not confirmed: {self.problem}"
        return f"stopping: {self.reason}"


def stop_once(rec: RunnerRecord, grace: float) -> StopResult:
    """One stop of the runner; an exception is an unconfirmed stop with its text."""
    try:
        return rec.launcher.stop(rec.runner, grace)
    except Exception as exc:
        logger.warning("stopping runner %s raised: %s", rec.runner_id, exc, exc_info=True,
                       extra=log_extra(task=rec.key, runner=rec.runner_id, pool=rec.pool))
        return StopResult.unconfirmed(f"{type(exc).__name__}: {exc}")


class Fencer:
    """Runs stops in workers and tracks each fence until it is confirmed (engine thread)."""

    def __init__(self, grace: float, post: Callable[[Command], None]) -> None:
        self._grace = grace
        self._post = post
        self._fences: dict[str, FenceState] = {}
        self._workers: ThreadPoolExecutor | None = None
        self._abort = threading.Event()

    def start(self) -> None:
        """Start the workers (and the fences that had to wait for them)."""
        self._abort = threading.Event()
        self._workers = ThreadPoolExecutor(max_workers=FENCE_WORKERS,
                                           thread_name_prefix="necrocode-fence")
        for fence in self._fences.values():
            self._workers.submit(self._work, fence.rec, self._abort)

    def shutdown(self) -> None:
        """Stop the workers; a fence still trying is left (the next start reconciles it)."""
        if self._workers is not None:
            self._abort.set()
            self._workers.shutdown(wait=True)
            self._workers = None

    def forget_all(self) -> None:
        """Stand down: stop trying (a stop in progress finishes; its answer is ignored) and
        forget every fence."""
        self._abort.set()
        self._fences.clear()
        self._abort = threading.Event()

    # --- state -----------------------------------------------------------------------------
    def is_stopping(self, runner_id: str) -> bool:
        return runner_id in self._fences

    def __contains__(self, runner_id: object) -> bool:
        return runner_id in self._fences

    def state(self, runner_id: str) -> FenceState | None:
        return self._fences.get(runner_id)

    def stopping(self) -> list[str]:
        return list(self._fences)

    def override(self, runner_id: str, outcome: FenceOutcome, reason: str) -> None:
        """Settle a fence in progress differently once it completes (a cancel wins)."""
        fence = self._fences.get(runner_id)
        if fence is not None:
            fence.outcome, fence.reason = outcome, reason

    # --- fencing ---------------------------------------------------------------------------
    def fence(self, rec: RunnerRecord, outcome: FenceOutcome, reason: str) -> bool:
        """Start stopping ``rec`` in a worker; False when it is already being stopped. Before
        :meth:`start` the fence waits for the workers."""
        rid = rec.runner_id
        if rid in self._fences:
            return False
        self._fences[rid] = FenceState(rec, outcome, reason, time.time())
        logger.info("stopping runner %s of %s: %s", rid, rec.key, reason,
                    extra=log_extra(task=rec.key, runner=rid, pool=rec.pool))
        if self._workers is not None:
            self._workers.submit(self._work, rec, self._abort)
        return True

    def _work(self, rec: RunnerRecord, abort: threading.Event) -> None:
        delay = FIRST_RETRY
        tries = 0
        while True:
            tries += 1
            if abort.is_set():
                return
            result = stop_once(rec, self._grace)
            self._answer(rec.runner_id, result, tries, delay)
            if result.confirmed or abort.wait(delay):
                return  # gone, or the engine is shutting down: the next start adopts it
            delay = min(delay * 2, MAX_RETRY)

    def _answer(self, runner_id: str, result: StopResult, tries: int, delay: float) -> None:
        if result.confirmed:
            self._post(StopConfirmed(runner_id, result.exit))
        else:
            self._post(StopUnconfirmed(runner_id, result.reason or "the platform did not "
                                       "confirm the stop", tries, time.time() + delay))

    def note_unconfirmed(self, note: StopUnconfirmed) -> FenceState | None:
        """Record an unconfirmed stop (warned on the first try and when its reason
        changes); returns the fence."""
        fence = self._fences.get(note.runner_id)
        if fence is None:
            return None
        if note.reason != fence.problem:
            logger.warning("stop of runner %s not confirmed (try %d; again at %s): %s",
                           note.runner_id, note.attempt,
                           time.strftime("%H:%M:%S", time.localtime(note.retry_at)), note.reason,
                           extra=log_extra(runner=note.runner_id))
        fence.tries = note.attempt
        fence.problem = note.reason
        return fence

    def confirmed(self, note: StopConfirmed) -> tuple[FenceState, RunnerExit | None] | None:
        """The runner is known gone: the fence is over (None if it was not fenced)."""
        fence = self._fences.pop(note.runner_id, None)
        return (fence, note.exit) if fence is not None else None
