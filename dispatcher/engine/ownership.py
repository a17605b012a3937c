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

from ..leader import LeaderElector
from .commands import Command, LeadershipGained, LeadershipLost

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
