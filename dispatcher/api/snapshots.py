"""``GET /v1/snapshot?since=V&wait=S``: snapshot diffs for remote consoles, long-polled.

A client sends the version it has (``since``; none: it has nothing) and how long it may wait
for a newer one (``wait`` seconds, at most :data:`MAX_WAIT`). The answer is a
:func:`~..snapshot_diff.diff` from that version when the server still has it, the whole
snapshot otherwise, or ``{"unchanged": true}`` when nothing newer came within the wait. Only
the dispatcher's public ``snapshot()`` and ``wait_for_snapshot()`` are read.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..snapshot import Snapshot
from ..snapshot_diff import SnapshotHistory, diff

MAX_WAIT = 20.0


class SnapshotSource(Protocol):
    """DispatcherCore's snapshot surface."""

    def snapshot(self) -> Snapshot | None: ...
    def wait_for_snapshot(self, after_version: int, timeout: float | None = None
                          ) -> Snapshot | None: ...


class SnapshotQueryError(ValueError):
    """A bad ``since`` or ``wait`` parameter (answered 400)."""


def parse_query(path: str) -> tuple[int | None, float, str | None]:
    """``since``, ``wait`` and ``instance`` of the request path."""
    query = parse_qs(urlsplit(path).query)
    unknown = set(query) - {"since", "wait", "instance"}
    if unknown:
        raise SnapshotQueryError(f"unknown snapshot parameter {sorted(unknown)[0]!r}; "
                                 "known: since, wait, instance")
    instance = query["instance"][-1] if "instance" in query else None
    since: int | None = None
    wait = 0.0
    try:
        if "since" in query:
            since = int(query["since"][-1])
        if "wait" in query:
            wait = float(query["wait"][-1])
    except ValueError:
        raise SnapshotQueryError("since must be a whole number and wait seconds") from None
    if wait < 0:
        raise SnapshotQueryError(f"wait must be >= 0 seconds, got {wait:g}")
    return since, min(wait, MAX_WAIT), instance


def source_of(handler: Any) -> SnapshotSource | None:
    """What to read snapshots from: the API handler itself when it forwards ``snapshot`` and
    ``wait_for_snapshot``, else the dispatcher it holds as ``core``."""
    for candidate in (handler, getattr(handler, "core", None)):
        if callable(getattr(candidate, "wait_for_snapshot", None)) and callable(
                getattr(candidate, "snapshot", None)):
            return candidate  # type: ignore[no-any-return]
    return None


class SnapshotFeed:
    """Answers snapshot requests from the last few snapshots served.

    Every answer carries ``instance``, new with each server: versions restart with a new
    dispatcher, so a client's ``since`` counts only with the instance it came from.
    """

    def __init__(self, history: int = 16) -> None:
        self.history = SnapshotHistory(history)
        self.instance = uuid.uuid4().hex[:12]

    def answer(self, source: SnapshotSource, since: int | None, wait: float,
               instance: str | None = None) -> dict[str, Any]:
        if instance is not None and instance != self.instance:
            since = None  # another server's version: start over
        out = self._answer(source, since, wait)
        out["instance"] = self.instance
        return out

    def _answer(self, source: SnapshotSource, since: int | None, wait: float) -> dict[str, Any]:
        snap = source.snapshot()
        if snap is not None and since is not None and snap.version < since:
            since = None  # a version this server never had
        if snap is not None and since is not None and snap.version <= since and wait > 0:
            snap = source.wait_for_snapshot(since, timeout=wait)
        if snap is None:
            return {"unchanged": True, "version": since, "reason": "no snapshot yet"}
        if since is not None and snap.version == since:
            return {"unchanged": True, "version": since}
        self.history.add(snap)
        base = self.history.get(since) if since is not None else None
        return diff(base, snap)
