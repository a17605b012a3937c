"""Ownership: whether this engine may act on the registry right now.

One replica (no ``ha:`` section) owns it from the start. With ``ha:``, replicas elect a leader
through a Lease (:mod:`..leader`): a standby dispatches nothing, writes nothing and starts no
runner; it takes over when it becomes leader (a reconcile first: the old leader's runners are
adopted), and a leader that loses the Lease stands down at once, leaving its runners for the
new leader. :meth:`Ownership.may_act` is read right before each assignment, from any thread: it
turns false at the renew deadline even while a renewal hangs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..leader import LeaderElector
from ..models import EventType, TaskEvent
from .commands import Command, LeadershipGained, LeadershipLost

if TYPE_CHECKING:
    from .parts import EngineParts

logger = logging.getLogger(__name__)


class Ownership:
    """The engine's right to act: always, or while the elector holds the Lease."""

    def __init__(self, elector: LeaderElector | None,
                 post: Callable[[Command], None]) -> None:
        self._elector = elector
        self._post = post
        self.leading = elector is None  # the engine thread's view, moved by commands
        if elector is not None:
            elector.on_started_leading = lambda: post(LeadershipGained())
            elector.on_lost = lambda reason: post(LeadershipLost(reason))

    @property
    def elected(self) -> bool:
        """Leadership is decided by a Lease (``ha:``)."""
        return self._elector is not None

    def may_act(self) -> bool:
        """May this engine assign and settle now? (any thread)"""
        return self._elector is None or (self.leading and self._elector.is_leader)

    def holder(self) -> str | None:
        """Who leads, as last seen in the Lease (None without ``ha:``)."""
        return self._elector.holder if self._elector is not None else None

    def identity(self) -> str | None:
        return self._elector.identity if self._elector is not None else None

    def start(self) -> None:
        if self._elector is not None:
            self._elector.start()

    def stop(self) -> None:
        """Hand the Lease over at once (a standby need not wait for it to expire)."""
        if self._elector is not None:
            self._elector.stop(release=True)

    # --- the engine thread's moves ---------------------------------------------------------
    def take_over(self, parts: EngineParts, reconcile: Callable[[], None]) -> bool:
        """Become the acting leader: record it, adopt what the previous leader left running
        (``reconcile``). False when this engine leads already."""
        if self.leading:
            return False
        self.leading = True
        logger.info("leader: %s holds the Lease; reconciling, then dispatching",
                    self.identity())
        parts.events.record(TaskEvent(
            event_type=EventType.LEADER_ELECTED,
            message=f"{self.identity()} leads (it holds the Lease); adopting what "
                    "the previous leader left running",
            details={"replica": self.identity()}))
        reconcile()
        parts.views.mark()
        return True

    def stand_down(self, parts: EngineParts, reason: str) -> bool:
        """The Lease is lost: act no more. Runners are left running for the new leader
        (nothing is stopped, settled or written); the engine forgets them and waits as a
        standby. False when it did not lead."""
        if not self.leading:
            return False
        self.leading = False
        left = parts.runners.ids()
        for rec in list(parts.runners):
            parts.runners.remove(rec.runner_id)
            parts.admission.give_back(rec.pool.name, rec.task)
        for key in list(parts.reconciler.unknown):
            run = parts.reconciler.resolve(key)
            if run is not None and run.holds_capacity:
                parts.admission.give_back(run.pool.name, run.task)
        parts.fencer.forget_all()
        parts.work.forget_all()  # their tasks stay RUNNING: the new leader commits and settles
        dropped = parts.settler.drop_deferred()
        logger.warning("standby: lost the Lease (%s); %d runner(s) left to the new leader%s",
                       reason, len(left), f"; {len(dropped)} pending write(s) left to its "
                       "reconcile" if dropped else "")
        parts.views.mark()
        return True
