"""QueuedLayout: the queued views in the order a snapshot shows them, kept up to date by the
views that changed (O(changes) per snapshot, not O(queue)).

A snapshot lists the queued tasks in two parts: first the dispatch order of the last full
refresh (the scheduler's order of the whole queue, taken at most about once a second for big
queues), then the rest — READY tasks that arrived since, and BLOCKED ones — READY first, then
by priority and key (:func:`~.queued_views.rest_order`). Between full refreshes a task keeps its
place in the dispatch order: a new view takes the same place, a task that left leaves a hole
(and takes the place again if it comes back before the next refresh); tasks outside the order
are placed into the sorted rest by bisection. The tuple a snapshot carries is assembled at C
speed from these lists and cached until a view changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from ..snapshot import QueuedTaskView
from .queued_views import rest_order

RESORT_LIMIT = 256  # changed views of the rest above which it is sorted anew


class QueuedLayout:
    """The dispatch order's places and the sorted rest (engine thread only)."""

    def __init__(self) -> None:
        self._place: dict[str, int] = {}  # key -> index in _slots (the dispatch order)
        self._slots: list[QueuedTaskView | None] = []  # None: no view now (left the queue)
        self._rest: list[QueuedTaskView] = []  # views outside the order, by rest_order
        self._in_rest: dict[str, QueuedTaskView] = {}  # key -> its view in _rest
        self._rest_news: dict[str, QueuedTaskView | None] = {}  # not placed yet; None: leaves
        self._tuple: tuple[QueuedTaskView, ...] | None = ()

    def reset(self, order: Iterable[str], views: Mapping[str, QueuedTaskView]) -> None:
        """A full refresh: ``order`` is the dispatch order now, ``views`` every queued view."""
        self._place = {}
        for key in order:
            self._place.setdefault(key, len(self._place))
        get = views.get
        self._slots = [get(key) for key in self._place]
        place = self._place
        self._rest = [v for k, v in views.items() if k not in place]
        self._rest.sort(key=rest_order)
        self._in_rest = {v.key: v for v in self._rest}
        self._rest_news = {}
        self._tuple = None

    def put(self, key: str, view: QueuedTaskView) -> None:
        """``key``'s view is new or changed."""
        at = self._place.get(key)
        if at is not None:
            self._slots[at] = view
        else:
            self._rest_news[key] = view
        self._tuple = None

    def drop(self, key: str) -> None:
        """``key`` has no queued view any more (running, finished, gone)."""
        at = self._place.get(key)
        if at is not None:
            if self._slots[at] is not None:
                self._slots[at] = None
                self._tuple = None
        elif key in self._in_rest or key in self._rest_news:
            self._rest_news[key] = None
            self._tuple = None

    def queued(self) -> tuple[QueuedTaskView, ...]:
        """The views in the order a snapshot shows them."""
        if self._tuple is None:
            self._place_rest()
            # filter(None, ...) drops the holes at C speed (a view is always true)
            self._tuple = tuple(filter(None, self._slots)) + tuple(self._rest)
        return self._tuple

    def _place_rest(self) -> None:
        news, self._rest_news = self._rest_news, {}
        if not news:
            return
        in_rest = self._in_rest
        if len(news) > RESORT_LIMIT:
            for key, view in news.items():
                if view is None:
                    in_rest.pop(key, None)
                else:
                    in_rest[key] = view
            self._rest = sorted(in_rest.values(), key=rest_order)
            return
        rest = self._rest
        for key, view in news.items():
            old = in_rest.pop(key, None)
            if old is not None:
                at = bisect.bisect_left(rest, rest_order(old), key=rest_order)
                if at >= len(rest) or rest[at] is not old:  # never expected: find it by identity
                    at = next(i for i, v in enumerate(rest) if v is old)
                del rest[at]
            if view is not None:
                bisect.insort(rest, view, key=rest_order)
                in_rest[key] = view
