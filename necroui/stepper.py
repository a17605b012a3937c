"""A snapshot applied to the dashboard in steps, the console's loop free between them.

Applying a 10k-task snapshot (the queue's rows diffed, the event tail written, each panel drawn)
holds the console's thread for tens of milliseconds on a quiet machine and hundreds on a busy
one; a key pressed meanwhile waits for all of it. In steps (one panel each, a short timer
between them), a key waits for one step at most: it is taken, and its frame drawn, in the gap.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from textual.app import App
from textual.css.query import NoMatches
from textual.timer import Timer

#: Seconds between two steps: the loop takes the keys that came meanwhile and draws their frame.
STEP_GAP = 0.015
#: A key came less than this long ago: the next step waits (the key's own frame comes first)…
KEY_RECENT = 0.06
#: …but never longer than this in all (seconds), so a typist cannot stall the dashboard.
HOLD_MAX = 1.0


class SteppedApply:
    """Runs one snapshot's apply steps with :data:`STEP_GAP` between them.

    ``covered()`` true: the steps wait (a dialog is over the dashboard) until :meth:`finish`.
    ``last_key()`` is the ``time.monotonic()`` of the last key pressed. :meth:`finish` runs what
    is left at once (a refresh that applies whole, a dialog closed); :meth:`cancel` drops it.
    """

    def __init__(self, app: App[Any], *, covered: Callable[[], bool],
                 last_key: Callable[[], float]) -> None:
        self._app = app
        self._covered = covered
        self._last_key = last_key
        self._steps: deque[Callable[[], None]] = deque()
        self._done: Callable[[], None] | None = None
        self._timer: Timer | None = None
        self._started = 0.0

    @property
    def busy(self) -> bool:
        """Steps of an apply are still to run."""
        return bool(self._steps)

    def start(self, steps: Sequence[Callable[[], None]], done: Callable[[], None]) -> None:
        """Run the first step now and the others after it; ``done()`` after the last one."""
        self.finish()
        self._steps.extend(steps)
        self._done = done
        self._started = time.monotonic()
        self._step()

    def finish(self) -> None:
        """Run the steps left now, in one batch."""
        self._stop_timer()
        if not self._steps:
            return
        try:
            with self._app.batch_update():
                while self._steps:
                    self._steps.popleft()()
        except NoMatches:  # the dashboard is being torn down (quitting)
            self.cancel()
            return
        self._complete()

    def cancel(self) -> None:
        """Drop the steps left (the app is closing)."""
        self._stop_timer()
        self._steps.clear()
        self._done = None

    def _step(self) -> None:
        self._timer = None
        if not self._steps or self._covered():
            return  # covered: finish() runs the rest when the dialog closes
        now = time.monotonic()
        if now - self._last_key() < KEY_RECENT and now - self._started < HOLD_MAX:
            self._timer = self._app.set_timer(STEP_GAP, self._step, name="apply-step")
            return
        try:
            with self._app.batch_update():
                self._steps.popleft()()
        except NoMatches:  # the dashboard is being torn down (quitting)
            self.cancel()
            return
        if self._steps:
            self._timer = self._app.set_timer(STEP_GAP, self._step, name="apply-step")
        else:
            self._complete()

    def _complete(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
