"""Schema and row codecs of the SQLite registry.

A task row has a column per field that is filtered, sorted or indexed; every other field lives
in the ``data`` JSON object, which leaves out values equal to their default to stay small.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..models import EventType, Resources, Task, TaskEvent, Taskset, TaskState
from ..yaml_source import paused_gc
from .bulk_read import decode_rows

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasksets (
    name TEXT PRIMARY KEY,
    repo TEXT,
    tenant TEXT,
    description TEXT NOT NULL DEFAULT '',
    source TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY,
    taskset TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    required_skill TEXT NOT NULL,
    tenant TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ready_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    seq INTEGER NOT NULL,
    position INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
CREATE INDEX IF NOT EXISTS tasks_by_taskset ON tasks (taskset, position, state);
CREATE INDEX IF NOT EXISTS tasks_state_priority
    ON tasks (state, priority DESC, ready_at IS NULL, ready_at, key);
CREATE TABLE IF NOT EXISTS deps (
    dependent_key TEXT NOT NULL,
    dep_key TEXT NOT NULL,
    PRIMARY KEY (dependent_key, dep_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deps_dep ON deps (dep_key);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    task_key TEXT,
    timestamp REAL NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    runner_id TEXT,
    slot_id TEXT,
    pool TEXT,
    duration REAL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_task ON events (task_key, seq);
CREATE INDEX IF NOT EXISTS events_time ON events (timestamp);
"""

TASK_COLUMNS = (
    "key, taskset, id, state, required_skill, tenant, priority, ready_at, created_at, "
    "updated_at, seq, position, data"
)
INSERT_TASK = f"INSERT OR REPLACE INTO tasks ({TASK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
UPDATE_TASK = (
    "UPDATE tasks SET state=?, required_skill=?, tenant=?, priority=?, ready_at=?, "
    "updated_at=?, seq=?, data=? WHERE key=?"
)
EVENT_COLUMNS = (
    "seq, task_key, timestamp, type, message, runner_id, slot_id, pool, duration, details"
)
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"

# Ordering expressions; "priority" matches the tasks_state_priority index.
ORDER_SQL = {
    "key": "key",
    "priority": "priority DESC, ready_at IS NULL, ready_at, key",
    "updated": "seq DESC",
}

_DEFAULT_RESOURCES = Resources().to_dict()
# Fields kept in the JSON blob, with the value left out when equal to it.
_JSON_DEFAULTS: dict[str, Any] = {
    "title": "",
    "description": "",
    "dependencies": [],
    "command": None,
    "timeout": None,
    "max_attempts": None,
    "metadata": {},
    "repo": None,
    "optional": False,
    "estimated_duration": None,
    "started_at": None,
    "finished_at": None,
    "attempts": 0,
    "next_attempt_at": None,
    "last_error": None,
    "runner_id": None,
    "assigned_slot": None,
    "reserved_branch": None,
    "artifacts": [],
    "paths": (),
    "branch": None,
    "base": None,
    "head": None,
    "commits": 0,
    "files_changed": (),
    "landed": None,
    "gate_failed": None,
    "agent": None,
    "agent_options": {},
    "max_cost_usd": None,
    "max_tokens": None,
    "max_turns": None,
    "agent_summary": None,
    "from_base": False,
}
_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _make_dumps_fast() -> Callable[[Any], str]:
    """``_dumps`` through the C encoder without its per-call set-up (``JSONEncoder.encode``
    costs about 1.5 us before the first byte; this about 0.2 us). The same text as ``_dumps``;
    only a self-containing value fails differently (RecursionError instead of ValueError),
    which task data cannot be (it comes from YAML without recursive aliases, or JSON)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return _dumps
    encode = make(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False,
                  False, True)

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_dumps_fast = _make_dumps_fast()
#: Compact JSON text of a value (``separators=(",", ":")``, anything else as its ``str``).
dumps: Callable[[Any], str] = _dumps


def _make_encode_data() -> Callable[[Task], str]:
    """:func:`encode_data`, generated as straight-line code from ``_JSON_DEFAULTS`` (one
    attribute read and one comparison per field: about twice as fast as a loop over the
    fields, which counts at 100,000 tasks a submit)."""
    lines = ["def encode_data(task):", "    data = {}"]
    scope: dict[str, Any] = {"_dumps": _dumps_fast, "_default_cpu": Resources().cpu,
                             "_default_memory": Resources().memory_mb}
    for i, (name, default) in enumerate(_JSON_DEFAULTS.items()):
        test = "is not None" if default is None else f"!= _d{i}"
        scope[f"_d{i}"] = default
        lines += [f"    value = task.{name}", f"    if value {test}:",
                  f"        data[{name!r}] = value"]
    lines += [
        "    res = task.resources",
        "    if res.cpu != _default_cpu or res.memory_mb != _default_memory:",
        "        data['resources'] = {'cpu': res.cpu, 'memory_mb': res.memory_mb}",
        "    if task.usage is not None:",
        "        data['usage'] = task.usage.to_dict()",
        "    return _dumps(data) if data else '{}'",
    ]
    exec("\n".join(lines) + "\n", scope)  # noqa: S102 - code made from the field names only
    encode: Callable[[Task], str] = scope["encode_data"]
    encode.__doc__ = ("The JSON blob of a task: its non-column fields that differ from their "
                      "defaults (resources and summed agent usage as JSON objects).")
    return encode


#: ``encode_data(task)``: the JSON blob of a task (its non-column fields that differ from
#: their defaults; resources and summed agent usage as objects, read back by row_to_task).
encode_data: Callable[[Task], str] = _make_encode_data()

#: TaskState -> its text in the ``state`` column (``Enum.value`` is a slow descriptor).
_STATE_TEXT = {s: s.value for s in TaskState}
#: The inverse, for reading rows (``TaskState(text)`` costs several times more).
_STATES = {s.value: s for s in TaskState}
#: A row's taskset, tenant and skill strings are new objects per row; a queue of 100,000 tasks
#: of a few tasksets then holds one copy of each instead of 300,000.
_intern = sys.intern


def task_row(task: Task, seq: int, position: int) -> tuple[Any, ...]:
    """The full row of a task for INSERT_TASK."""
    return (
        f"{task.taskset}/{task.id}", task.taskset, task.id, _STATE_TEXT[task.state],
        task.required_skill, task.tenant,
        task.priority, task.ready_at, task.created_at, task.updated_at, seq, position,
        encode_data(task),
    )


def created_task_row(task: Task, key: str, taskset: str, tenant: str, state: TaskState,
                     stamp: float, seq: int, position: int) -> tuple[Any, ...]:
    """The row of a task created by a submit at ``stamp``, from the submitted ``task`` (not
    changed): its key, taskset, tenant and state as the submit decided."""
    return (
        key, taskset, task.id, _STATE_TEXT[state], task.required_skill, tenant, task.priority,
        stamp if state is TaskState.READY else task.ready_at, stamp, stamp, seq, position,
        encode_data(task),
    )


def task_update_row(task: Task, seq: int) -> tuple[Any, ...]:
    """Parameters of UPDATE_TASK for a changed task."""
    return (
        _STATE_TEXT[task.state], task.required_skill, task.tenant, task.priority, task.ready_at,
        task.updated_at, seq, encode_data(task), task.key,
    )


def row_to_task(row: sqlite3.Row | tuple[Any, ...]) -> Task:
    """Decode a row selected with TASK_COLUMNS."""
    (_key, taskset, tid, state, skill, tenant, priority, ready_at, created_at, updated_at,
     _seq, _position, data) = row
    fields: dict[str, Any] = json.loads(data)
    res = fields.get("resources")
    if res is not None:
        fields["resources"] = Resources.from_dict(res)
    return Task(
        id=tid, taskset=_intern(taskset), state=_STATES.get(state) or TaskState(state),
        required_skill=_intern(skill), tenant=_intern(tenant), priority=priority,
        ready_at=ready_at, created_at=created_at, updated_at=updated_at,
        **fields,
    )


def rows_to_tasks(rows: Iterable[sqlite3.Row | tuple[Any, ...]], bulk: bool) -> list[Task]:
    """:func:`row_to_task` of each row; with ``bulk`` (maybe thousands of rows: the engine's
    first read of a 100,000-task queue) the cyclic GC is paused meanwhile: otherwise its full
    collections walk the tasks made so far again and again (a third of the engine's start),
    and the rows' repeated times and strings are shared (:func:`.bulk_read.decode_rows`)."""
    if not bulk:
        return [row_to_task(r) for r in rows]
    with paused_gc():
        return decode_rows(rows)


def event_rows(events: Sequence[TaskEvent], first_seq: int) -> list[tuple[Any, ...]]:
    """Rows of INSERT_EVENT, numbered from ``first_seq``; a details dict shared by several
    events is serialised once."""
    cache: dict[int, str] = {}
    rows = []
    for i, event in enumerate(events):
        details = event.details
        if not details:
            text = "{}"
        else:
            text = cache.get(id(details)) or cache.setdefault(id(details), _dumps(details))
        rows.append((
            first_seq + i, event.task_key, event.timestamp, event.event_type.value,
            event.message, event.runner_id, event.slot_id, event.pool, event.duration, text,
        ))
    return rows


def row_to_event(row: tuple[Any, ...]) -> TaskEvent:
    seq, key, ts, etype, message, runner, slot, pool, duration, details = row
    return TaskEvent(
        event_type=EventType(etype), task_key=key, timestamp=ts, message=message,
        runner_id=runner, slot_id=slot, pool=pool, duration=duration,
        details=json.loads(details) if details != "{}" else {}, seq=seq,
    )


def row_to_taskset(row: tuple[Any, ...]) -> Taskset:
    name, repo, tenant, description, source, created_at = row
    return Taskset(
        name=name, repo=repo, tenant=tenant, description=description, source=source,
        created_at=created_at,
    )


def placeholders(n: int) -> str:
    return ",".join("?" * n)
