"""Drain: the engine's shutdown (R15.1).

The engine stops taking tasks ("draining"), waits up to the timeout for running runners, then
stops the rest (fenced in workers) and puts their tasks back to READY without spending an attempt
(TaskRequeued); DispatcherStopped is recorded last. ``leave_running=True`` leaves runners alive
for the next start to adopt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .commands import FenceOutcome
from .launch_plane import LaunchPlane
from .parts import EngineParts
from .runner_table import RunnerRecord

logger = logging.getLogger(__name__)

DRAIN_GIVE_UP = 15.0  # seconds past the drain deadline after which failing stops/writes are left


class Drain:
    """Whether the engine is stopping, until when it waits, and when its loop may end."""

    def __init__(self, parts: EngineParts, launches: LaunchPlane,
                 fence: Callable[[RunnerRecord, FenceOutcome, str], None]) -> None:
        self._p = parts
        self._launches = launches
        self._fence = fence
        self.requested = False
        self.leave_running = False
        self.deadline: float | None = None
        self.stopping = False  # past the deadline: runners are being stopped

    def reset(self) -> None:
        self.requested, self.leave_running, self.deadline, self.stopping = False, False, None, \
            False

    def begin(self, timeout: float, leave_running: bool) -> None:
        if self.requested and self.deadline is not None:
            self.deadline = min(self.deadline, time.time() + timeout)
            return
        self.requested = True
        self.leave_running = leave_running
        self.deadline = time.time() + max(0.0, timeout)
        self._p.views.mark()
        logger.info("dispatcher stopping: %d runner(s) running, waiting up to %.0fs",
                    len(self._p.runners), timeout)

    def step(self, now: float) -> None:
        """Past the deadline: stop what still runs (and what is still launching)."""
        p = self._p
        if self.leave_running or not (len(p.runners) or len(self._launches)):
            return
        if self.deadline is not None and now >= self.deadline:
            for key in self._launches.launching_keys():
                self._launches.request_stop(key, FenceOutcome.SHUTDOWN, "dispatcher stopping",
                                            only_if_unset=True)
            if not self.stopping:
                self.stopping = True
                p.views.mark()
            for rec in p.runners:
                if rec.runner_id not in p.fencer:
                    self._fence(rec, FenceOutcome.SHUTDOWN, "dispatcher stopping")

    def finished(self) -> bool:
        """True when the loop may end: runners gone (or left running on purpose), no launch in
        flight, and the writes that settle tasks done — or given up on after a grace period
        (a registry or platform that stays broken; the next start reconciles what is left)."""
        if not self.requested:
            return False
        p = self._p
        late = self.deadline is not None and time.time() > self.deadline + DRAIN_GIVE_UP
        if len(self._launches):
            return False
        if len(p.work):  # commits of ended runs (quick); past the grace the next start does it
            if not late:
                return False
            logger.error("stopping with the work of %s not recorded yet; the next start "
                         "commits it", ", ".join(sorted(p.work.keys())))
        if len(p.runners) and not self.leave_running:
            if not (late and all(rid in p.fencer for rid in p.runners.ids())):
                return False
            logger.error("giving up on stopping %d runner(s): %s", len(p.runners),
                         ", ".join(sorted(p.runners.ids())))
        waiting = p.settler.deferred()
        if waiting and not late:
            return False
        if waiting:
            logger.error("%d registry write(s) could not be done before stopping: %s",
                         len(waiting), "; ".join(waiting))
        return True
