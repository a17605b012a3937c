"""When the cyclic garbage collector may stop the console.

At 10,000 tasks the console process tracks well over 100,000 objects (the rows' views, their
cells, Textual's line caches, and the engine's own when it runs in the same process). A full
collection walks every one of them: a quarter to half a second with the interpreter held, every
few seconds while snapshots arrive, and any key pressed meanwhile waits for it. Objects that
lived through an applied snapshot are long-lived by then: :class:`CollectorPacer` moves them out
of the collector's walks (``gc.freeze()``, constant time), so the automatic collections only
walk what is newer. Garbage is still freed by reference counting; only reference cycles among
frozen objects wait: every ``every`` seconds the pacer puts them back and collects once, a
single pause at a moment it chooses instead of one every few seconds.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


class CollectorPacer:
    """Call :meth:`settled` after each snapshot applied to the screen (UI thread)."""

    def __init__(self, every: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._collected_at = clock()
        self.full_collections = 0  # the ones this pacer ran

    def settled(self) -> None:
        """What is alive now leaves the collector's walks; a full collection first when the
        last one is ``every`` seconds old."""
        now = self.clock()
        if now - self._collected_at >= self.every:
            self._collected_at = now
            gc.unfreeze()
            gc.collect()
            self.full_collections += 1
        gc.freeze()
