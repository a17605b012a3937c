"""The event log of a NecroCode registry: ``events/<spec>/events.jsonl``, read by following it.

Each line is an original ``TaskEvent`` (``event_type``, ``spec_name``, ``task_id``,
``timestamp``, ``details``) with one of the original's event types, so its tools read the
Dispatcher's events. The Dispatcher's own type, exact time, message, runner, slot, pool and
duration ride in ``details["necrocode_dispatcher"]``; its event details are the rest of
``details``. A state change also gets the line the original writes for it (TaskReady,
TaskAssigned, TaskCompleted, TaskFailed, TaskUpdated, with ``old_state``/``new_state``) when the
Dispatcher's own event does not already have that type. Events about no task (the Dispatcher
started, a pool disabled) go to ``events/dispatcher.jsonl``, which the original never reads.

Files are appended to (one ``write`` per batch, ``O_APPEND``) and followed from the last offset
read, across the original's rotation (``events.jsonl`` renamed to ``events.jsonl.N``). Lines
another writer leaves unfinished are read once complete; unreadable lines are skipped as the
original skips them, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from ..models import EventType, TaskEvent, TaskState, split_key
from ._common import event_type_values
from .necrocode_format import EXTRA_KEY, from_iso, iso

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
DISPATCHER_FILE = "dispatcher.jsonl"

#: The original event type each Dispatcher event is written as.
TYPE_IN_FILE: dict[EventType, str] = {
    EventType.TASK_CREATED: "TaskCreated", EventType.TASK_UPDATED: "TaskUpdated",
    EventType.TASK_READY: "TaskReady", EventType.TASK_ASSIGNED: "TaskAssigned",
    EventType.TASK_COMPLETED: "TaskCompleted", EventType.TASK_RETRIED: "TaskReady",
    EventType.TASK_REQUEUED: "TaskReady", EventType.TASK_FAILED: "TaskFailed",
    EventType.TASK_CANCELLED: "TaskFailed", EventType.RUNNER_STARTED: "RunnerStarted",
    EventType.RUNNER_COMPLETED: "RunnerFinished", EventType.RUNNER_FAILED: "RunnerFinished",
    EventType.RUNNER_LOST: "RunnerFinished", EventType.RUNNER_TIMED_OUT: "RunnerFinished",
    EventType.RUNNER_LAUNCH_FAILED: "RunnerFinished",
}
#: The original's event for a task entering each state (its ``_get_event_type_for_state``).
TYPE_OF_STATE = {TaskState.READY: "TaskReady", TaskState.RUNNING: "TaskAssigned",
                 TaskState.DONE: "TaskCompleted", TaskState.FAILED: "TaskFailed",
                 TaskState.CANCELLED: "TaskFailed"}
_ORIGINAL_TYPES = {"TaskCreated", "TaskUpdated", "TaskReady", "TaskAssigned", "TaskCompleted",
                   "TaskFailed", "RunnerStarted"}
_ENVELOPE = ("message", "runner_id", "slot_id", "pool", "duration")


@dataclass(frozen=True)
class StateChange:
    """A state change an event is written with (for the original's state line)."""

    old: TaskState
    new: TaskState


def file_type(event_type: EventType) -> str:
    return TYPE_IN_FILE.get(event_type, "TaskUpdated")


def encode(event: TaskEvent, change: StateChange | None = None) -> list[str]:
    """The line(s) of one event: the event, plus the original's state line when needed."""
    spec, tid = split_key(event.task_key) if event.task_key else ("", "")
    kind = file_type(event.event_type)
    extra: dict[str, Any] = {"event_type": event.event_type.value, "timestamp": event.timestamp}
    extra.update((k, getattr(event, k)) for k in _ENVELOPE if getattr(event, k))
    details = dict(event.details)
    lines = []
    state_line = change is not None and TYPE_OF_STATE.get(change.new, "TaskUpdated") != kind
    if change is not None and not state_line:
        added = [k for k in ("old_state", "new_state") if k not in details]
        details.update({"old_state": _file_state(change.old),
                        "new_state": _file_state(change.new)})
        extra["added"] = added
    details[EXTRA_KEY] = extra
    lines.append(_line(kind, spec, tid, event.timestamp, details))
    if change is not None and state_line:
        lines.append(_line(TYPE_OF_STATE.get(change.new, "TaskUpdated"), spec, tid,
                           event.timestamp, {"old_state": _file_state(change.old),
                                             "new_state": _file_state(change.new),
                                             EXTRA_KEY: {"state_line": True}}))
    return lines


def state_line(key: str, change: StateChange, stamp: float) -> str:
    """The original's line for a state change the Dispatcher made without an event."""
    spec, tid = split_key(key)
    return _line(TYPE_OF_STATE.get(change.new, "TaskUpdated"), spec, tid, stamp,
                 {"old_state": _file_state(change.old), "new_state": _file_state(change.new),
                  EXTRA_KEY: {"state_line": True}})


def _file_state(state: TaskState) -> str:
    return "failed" if state is TaskState.CANCELLED else state.value


def _line(kind: str, spec: str, tid: str, stamp: float, details: dict[str, Any]) -> str:
    return json.dumps({"event_type": kind, "spec_name": spec, "task_id": tid,
                       "timestamp": iso(stamp), "details": details}, ensure_ascii=False)


def decode(data: Any) -> TaskEvent | None:
    """The event of one parsed line (None for the original's state lines we wrote)."""
    if not isinstance(data, dict):
        raise ValueError("not an object")
    kind, spec, tid = data["event_type"], data["spec_name"], data["task_id"]
    details = data.get("details") or {}
    if not isinstance(kind, str) or not isinstance(details, dict):
        raise ValueError("bad event_type or details")
    key = f"{spec}/{tid}" if spec else (str(tid) if tid else None)
    extra = details.get(EXTRA_KEY)
    if isinstance(extra, dict):
        if extra.get("state_line"):
            return None
        rest = {k: v for k, v in details.items()
                if k != EXTRA_KEY and k not in (extra.get("added") or ())}
        return TaskEvent(
            event_type=EventType(extra["event_type"]), task_key=key,
            timestamp=float(extra.get("timestamp") or from_iso(data["timestamp"])),
            message=extra.get("message") or "", runner_id=extra.get("runner_id"),
            slot_id=extra.get("slot_id"), pool=extra.get("pool"),
            duration=extra.get("duration"), details=rest,
        )
    # written by the original tools
    if kind in _ORIGINAL_TYPES:
        ours, message = EventType(kind), ""
    elif kind == "RunnerFinished":
        failed = details.get("success") is False or details.get("exit_code") not in (None, 0)
        ours = EventType.RUNNER_FAILED if failed else EventType.RUNNER_COMPLETED
        message = kind
    else:  # PROpened, PRMerged, and types of later versions
        ours, message = EventType.TASK_UPDATED, kind
    return TaskEvent(event_type=ours, task_key=key, timestamp=from_iso(data["timestamp"]),
                     message=message, runner_id=details.get("runner_id"),
                     details=dict(details))


@dataclass
class _Tail:
    ino: int
    offset: int


class EventLog:
    """Every event of a registry directory, in the order this process read them."""

    def __init__(self, root: Path, take_seq: Callable[[], int]) -> None:
        self.root = root
        self.dir = root / "events"
        self._take_seq = take_seq
        self.events: list[TaskEvent] = []
        self._tails: dict[Path, _Tail] = {}
        self._warned: set[tuple[Path, int]] = set()
        self._pending: list[TaskEvent] | None = None  # load(): numbered once all are read

    def load(self) -> None:
        """Read every event file, numbering the events in time order across files."""
        self._pending = []
        try:
            self.refresh()
            pending = sorted(self._pending, key=lambda e: e.timestamp)  # stable: file order
        finally:
            self._pending = None
        for event in pending:
            self._add(event)

    def path_for(self, key: str | None) -> Path:
        spec = split_key(key)[0] if key else ""
        return self.dir / spec / EVENTS_FILE if spec else self.dir / DISPATCHER_FILE

    # --- reading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what was appended to every event file since the last refresh."""
        try:
            entries = sorted(os.scandir(self.dir), key=lambda e: e.name)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise RegistryError(f"cannot read the NecroCode events folder {self.dir}: "
                                f"{exc.strerror or exc}; check its permissions") from exc
        for entry in entries:
            if entry.name == DISPATCHER_FILE:
                self._follow(Path(entry.path))
            elif entry.is_dir() and not entry.name.startswith("."):
                self._follow(Path(entry.path) / EVENTS_FILE)

    def _follow(self, path: Path, own: dict[str, int] | None = None) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        tail = self._tails.get(path)
        if tail is not None and st.st_ino != tail.ino:  # rotated: finish the old file first
            for old in sorted(path.parent.glob(EVENTS_FILE + ".*")):
                try:
                    if old.stat().st_ino == tail.ino:
                        self._read(old, tail.offset, path, own)
                        break
                except OSError:
                    continue
            tail = None
        if tail is not None and st.st_size < tail.offset:  # emptied in place
            tail = None
        start = 0 if tail is None else tail.offset
        if tail is not None and st.st_size == start:
            return
        end = self._read(path, start, path, own)
        self._tails[path] = _Tail(st.st_ino, end)

    def _read(self, path: Path, offset: int, name: Path,
              own: dict[str, int] | None) -> int:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError as exc:
            raise RegistryError(f"cannot read NecroCode events {path}: {exc.strerror or exc}; "
                                "check its permissions") from exc
        cut = data.rfind(b"\n")
        if cut < 0:
            return offset  # nothing complete yet
        for number, raw in enumerate(data[:cut].split(b"\n")):
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            if own and own.get(text):
                own[text] -= 1  # ours: numbered by append() in request order
                continue
            try:
                event = decode(json.loads(text))
            except (ValueError, KeyError, TypeError) as exc:
                self._warn_line(name, offset, number, exc)
                continue
            if event is not None:
                self._add(event)
        return offset + cut + 1

    def _add(self, event: TaskEvent) -> TaskEvent:
        if self._pending is not None:
            self._pending.append(event)
            return event
        stored = replace(event, seq=self._take_seq())
        self.events.append(stored)
        return stored

    def _warn_line(self, path: Path, offset: int, number: int, exc: Exception) -> None:
        if (path, offset) not in self._warned:
            self._warned.add((path, offset))
            log.warning("%s: an unreadable event line (%s, the %s line read from byte %d) was "
                        "skipped, as the original NecroCode tools skip it", path, exc,
                        _ordinal(number + 1), offset)

    # --- writing ------------------------------------------------------------------------------
    def append(self, items: Sequence[tuple[TaskEvent, StateChange | None]],
               state_lines: Sequence[str] = ()) -> list[TaskEvent]:
        """Append events (each with the state change it goes with) and the original's state
        lines; returns the events as stored (with their ``seq``, numbered in request order
        after any line another writer appended before them)."""
        by_file: dict[Path, list[str]] = {}
        own: dict[Path, dict[str, int]] = {}
        for event, change in items:
            path = self.path_for(event.task_key)
            lines = encode(event, change)
            by_file.setdefault(path, []).extend(lines)
            mine = own.setdefault(path, {})
            mine[lines[0]] = mine.get(lines[0], 0) + 1
        for line in state_lines:
            spec = json.loads(line)["spec_name"]
            by_file.setdefault(self.dir / spec / EVENTS_FILE, []).append(line)
        for path in by_file:
            self._follow(path)  # lines others appended come before ours
        for path, lines in by_file.items():
            self._write(path, "".join(line + "\n" for line in lines))
        for path in by_file:
            self._follow(path, own.get(path, {}))  # skips our lines, reads any others'
        return [self._add(event) for event, _ in items]

    def _write(self, path: Path, text: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError as exc:
            raise RegistryError(f"cannot append to NecroCode events {path}: "
                                f"{exc.strerror or exc}; check the folder's permissions and "
                                "free space") from exc

    # --- queries ------------------------------------------------------------------------------
    def query(self, *, task_key: str | None = None, since: float | None = None,
              until: float | None = None, event_types: Sequence[Any] | None = None,
              limit: int | None = None, after_seq: int | None = None,
              newest_first: bool = False) -> list[TaskEvent]:
        """Events filtered as TaskRegistry.get_events filters them."""
        types = set(event_type_values(event_types))
        events = self.events[::-1] if newest_first else self.events
        out: list[TaskEvent] = []
        for e in events:
            if (task_key is None or e.task_key == task_key) \
                    and (since is None or e.timestamp >= since) \
                    and (until is None or e.timestamp < until) \
                    and (after_seq is None or (e.seq or 0) > after_seq) \
                    and (not types or e.event_type.value in types):
                out.append(replace(e, details=dict(e.details)))
                if limit is not None and len(out) >= limit:
                    break
        return out


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
