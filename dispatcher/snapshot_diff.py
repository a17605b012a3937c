"""Snapshot diffs: what changed between two immutable snapshots, as JSON, and back.

A remote console (``necroui attach``) asks for the changes since the version it has; the
server answers with :func:`diff` against that version (kept in a :class:`SnapshotHistory`), or
the whole snapshot when it no longer has it. Rows are compared by key, with the views' ``rev``
when the engine sets it (an equal ``rev`` is an unchanged row) and by equality otherwise; the
key order is sent only when it is not what removals and appends already give. :func:`apply`
rebuilds the new :class:`Snapshot` from the client's base and the diff.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from .models import PoolStatus, PoolType, RunnerState, TaskEvent, TaskState, Usage
from .snapshot import (
    Counters,
    DeadlockView,
    FinishedTaskView,
    Pending,
    PendingReason,
    QueuedTaskView,
    RunningTaskView,
    Snapshot,
    _jsonable,
)

ROW_LISTS = ("queued", "running", "finished")
_SCALARS = ("taken_at", "state", "policy", "max_global_concurrency", "registry_path", "api_url",
            "throughput_interval", "heartbeat_timeout", "leader", "replica", "capacity")
# Not carried yet: ``landings`` (nested land reports); a remote console shows none.


class SnapshotHistory:
    """The last ``size`` snapshots by version (thread-safe), to diff from a client's version."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._snaps: OrderedDict[int, Snapshot] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, snap: Snapshot) -> None:
        with self._lock:
            if snap.version in self._snaps:
                return
            self._snaps[snap.version] = snap
            while len(self._snaps) > self.size:
                self._snaps.popitem(last=False)

    def get(self, version: int) -> Snapshot | None:
        with self._lock:
            return self._snaps.get(version)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    rev = getattr(b, "rev", 0)
    if rev and rev == getattr(a, "rev", 0):
        return True
    return bool(a == b)


def _rows(old: Sequence[Any], new: Sequence[Any]) -> dict[str, Any]:
    old_by = {v.key: v for v in old}
    new_keys = [v.key for v in new]
    new_set = set(new_keys)
    upsert = [_jsonable(asdict(v)) for v in new
              if v.key not in old_by or not _same(old_by[v.key], v)]
    remove = [k for k in old_by if k not in new_set]
    expected = [v.key for v in old if v.key in new_set]
    expected += [k for k in new_keys if k not in old_by]
    out: dict[str, Any] = {"upsert": upsert, "remove": remove}
    if expected != new_keys:
        out["order"] = new_keys
    return out


def diff(old: Snapshot | None, new: Snapshot) -> dict[str, Any]:
    """The changes from ``old`` to ``new`` as JSON data (``old`` None: the whole snapshot)."""
    if old is None:
        data = new.to_dict()
        data.pop("landings", None)
        data["full"] = True
        return data
    out: dict[str, Any] = {"full": False, "base": old.version, "version": new.version}
    for name in _SCALARS:
        out[name] = getattr(new, name)
    out["counters"] = asdict(new.counters)
    out["throughput"] = list(new.throughput)
    out["problems"] = list(new.problems)
    if new.pools != old.pools:
        out["pools"] = _jsonable([asdict(p) for p in new.pools])
    if new.deadlocks != old.deadlocks:
        out["deadlocks"] = _jsonable([asdict(d) for d in new.deadlocks])
    last = old.events[-1].seq if old.events and old.events[-1].seq is not None else None
    if last is None or new.events != old.events:
        fresh = [e for e in new.events if last is None or (e.seq is not None and e.seq > last)]
        out["events"] = [e.to_dict() | {"seq": e.seq} for e in fresh]
        out["events_keep"] = len(new.events)
        out["events_reset"] = last is None
    for name in ROW_LISTS:
        out[name] = _rows(getattr(old, name), getattr(new, name))
    return out


# --- JSON -> views ------------------------------------------------------------------------------


def _usage(value: Any) -> Usage | None:
    """A view's ``usage`` back as :class:`Usage` (hashable, with ``total_tokens``)."""
    return Usage.from_dict(value) if isinstance(value, dict) else value


def _counters(d: dict[str, Any]) -> Counters:
    known = _known(Counters, d)
    if "usage" in known:
        known["usage"] = _usage(known["usage"]) or Usage()
    return Counters(**known)


def _queued(d: dict[str, Any]) -> QueuedTaskView:
    p = d["pending"]
    return QueuedTaskView(**{**d, "state": TaskState(d["state"]),
                             "pending": Pending(PendingReason(p["reason"]), p["message"])})


def _running(d: dict[str, Any]) -> RunningTaskView:
    return RunningTaskView(**{**d, "runner_state": RunnerState(d["runner_state"]),
                              "usage": _usage(d.get("usage"))})


def _finished(d: dict[str, Any]) -> FinishedTaskView:
    return FinishedTaskView(**{**d, "state": TaskState(d["state"]),
                               "usage": _usage(d.get("usage"))})


def _pool(d: dict[str, Any]) -> PoolStatus:
    return PoolStatus(**{**d, "pool_type": PoolType(d["pool_type"])})


def _event(d: dict[str, Any]) -> TaskEvent:
    return TaskEvent.from_dict(d)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without the keys ``cls`` does not have (a newer server may send more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


_MAKERS: dict[str, tuple[type, Any]] = {
    "queued": (QueuedTaskView, _queued),
    "running": (RunningTaskView, _running),
    "finished": (FinishedTaskView, _finished),
}


def snapshot_from_dict(data: dict[str, Any]) -> Snapshot:
    """A Snapshot from ``Snapshot.to_dict()`` (or a full diff)."""
    kwargs: dict[str, Any] = {name: tuple(make(_known(cls, d)) for d in data.get(name) or ())
                              for name, (cls, make) in _MAKERS.items()}
    kwargs.update({k: data[k] for k in _SCALARS if k in data})
    return Snapshot(
        version=int(data["version"]),
        pools=tuple(_pool(_known(PoolStatus, p)) for p in data.get("pools") or ()),
        events=tuple(_event(e) for e in data.get("events") or ()),
        counters=_counters(data.get("counters") or {}),
        throughput=tuple(data.get("throughput") or ()),
        problems=tuple(data.get("problems") or ()),
        deadlocks=tuple(DeadlockView(**{**_known(DeadlockView, d), "tasks": tuple(d["tasks"])})
                        for d in data.get("deadlocks") or ()),
        **kwargs,
    )


def apply(base: Snapshot | None, data: dict[str, Any]) -> Snapshot:
    """The snapshot that ``data`` (a :func:`diff` answer) describes, given the client's base.

    Raises ValueError when a partial diff does not start from ``base``'s version.
    """
    if data.get("full"):
        return snapshot_from_dict(data)
    if base is None or base.version != data.get("base"):
        raise ValueError(f"diff from version {data.get('base')} does not apply to "
                         f"{None if base is None else base.version}")
    rows: dict[str, Any] = {k: data.get(k, getattr(base, k)) for k in _SCALARS}
    for name, (cls, make) in _MAKERS.items():
        change = data[name]
        by_key = {v.key: v for v in getattr(base, name)}
        for key in change["remove"]:
            by_key.pop(key, None)
        fresh: dict[str, Any] = {}
        for d in change["upsert"]:
            view: Any = make(_known(cls, d))
            fresh[view.key] = view
        order = change.get("order")
        if order is None:
            order = [k for k in by_key] + [k for k in fresh if k not in by_key]
        merged = {**by_key, **fresh}
        rows[name] = tuple(merged[k] for k in order)
    events = base.events
    if "events" in data:
        new = tuple(_event(e) for e in data["events"])
        keep = int(data.get("events_keep", len(new)))
        events = new if data.get("events_reset") else (*base.events, *new)
        events = events[-keep:] if keep else ()
    return Snapshot(
        version=int(data["version"]),
        pools=(tuple(_pool(_known(PoolStatus, p)) for p in data["pools"])
               if "pools" in data else base.pools),
        deadlocks=(tuple(DeadlockView(**{**_known(DeadlockView, d), "tasks": tuple(d["tasks"])})
                         for d in data["deadlocks"]) if "deadlocks" in data else base.deadlocks),
        events=events,
        counters=_counters(data["counters"]),
        throughput=tuple(data["throughput"]),
        problems=tuple(data.get("problems") or ()),
        **rows,
    )
