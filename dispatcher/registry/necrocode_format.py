"""The original NecroCode Task Registry's files: tasks read from and written to its format.

A NecroCode registry directory holds ``tasksets/<spec>/taskset.json`` (one JSON object per spec,
rewritten whole on every change, written to a temporary file and renamed over the old one),
``events/<spec>/events.jsonl`` (one JSON object per line, appended) and ``locks/<spec>.lock``.

A taskset file has ``spec_name``, ``version`` (an integer that every writer increments),
``created_at``, ``updated_at`` (ISO 8601, local time without a zone), ``tasks`` and ``metadata``.
A task has ``id``, ``title``, ``description``, ``state`` (``ready``, ``running``, ``blocked``,
``done`` or ``failed``), ``dependencies`` (ids of the same spec), ``required_skill`` (a string or
null), ``priority``, ``is_optional``, ``assigned_slot``, ``reserved_branch``, ``runner_id``,
``artifacts`` (objects with ``type`` diff/log/test, ``uri``, ``size_bytes``, ``created_at``,
``metadata``), ``metadata``, ``created_at`` and ``updated_at``.

What the Dispatcher has beyond that format lives in the task's ``metadata`` under
:data:`EXTRA_KEY` (the original keeps metadata through its own rewrites): attempts, the next
attempt time, the last error, resources, timeout, command, tenant, repo, times. A CANCELLED task
is written as ``failed`` with ``"state": "cancelled"`` there; the mark holds while the task's
``updated_at`` is the one written with it (a later change by the original tools ends it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import MISSING, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from ..models import Resources, Task, Taskset, TaskState, Usage

#: Task states of the original format (it has no CANCELLED).
STATES = ("ready", "running", "blocked", "done", "failed")
#: Artifact types of the original format.
ARTIFACT_TYPES = ("diff", "log", "test")
#: Key, in a task's (and a taskset's) ``metadata``, of what only the Dispatcher knows.
EXTRA_KEY = "necrocode_dispatcher"
#: How many problems of one file an error lists.
MAX_PROBLEMS = 20

# Task fields the original's format has a place for (or that are handled on their own).
_MAPPED = frozenset({
    "id", "title", "taskset", "description", "state", "dependencies", "required_skill",
    "priority", "optional", "assigned_slot", "reserved_branch", "runner_id", "artifacts",
    "metadata", "created_at", "updated_at", "tenant", "resources"})
# Every other Task field is kept in the extras when it differs from its default.
_EXTRA_FIELDS: dict[str, Any] = {
    f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc,operator]
    for f in fields(Task) if f.name not in _MAPPED}
_OPTIONAL_STR = ("assigned_slot", "reserved_branch", "runner_id")
_DEFAULT_RESOURCES = Resources()


class NecroCodeFormatError(RegistryError):
    """A taskset file of a NecroCode registry cannot be read; nothing was changed."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS]
        more = len(self.problems) - len(shown)
        lines = [f"NecroCode taskset {path} cannot be read ({len(self.problems)} problem(s)); "
                 "fix the file (or restore it from a backup) and try again; nothing in the "
                 "registry was changed"]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  - … and {more} more")
        super().__init__("\n".join(lines))


# --- times -------------------------------------------------------------------------------------
def iso(ts: float) -> str:
    """A time as the original writes it: ISO 8601 in local time, no zone."""
    return datetime.fromtimestamp(ts).isoformat()


def from_iso(text: str) -> float:
    """An ISO 8601 time (local when it has no zone) as seconds since the epoch."""
    return datetime.fromisoformat(text).timestamp()


def _exact(extra: Any, text: str) -> float:
    """``text`` as a float, or the exact float we wrote with it (when it is still the same)."""
    value = from_iso(text)
    if isinstance(extra, int | float) and abs(float(extra) - value) < 2e-6:
        return float(extra)
    return value


# --- reading -----------------------------------------------------------------------------------
class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise NecroCodeFormatError(self.path, self.items)


def _check_time(raw: dict[str, Any], key: str, where: str, out: _Problems) -> None:
    value = raw.get(key)
    if not isinstance(value, str):
        out.add(where, f"{key} is {'missing' if key not in raw else repr(value)}; the original "
                       "needs an ISO 8601 time such as \"2026-12-01T14:54:07.860835\"")
        return
    try:
        datetime.fromisoformat(value)
    except ValueError:
        out.add(where, f"{key} {value!r} is not an ISO 8601 time (such as "
                       "\"2026-12-01T14:54:07.860835\")")


def _check_task(raw: Any, i: int, out: _Problems) -> str | None:
    """Problems of one task object; returns its id when usable."""
    if not isinstance(raw, dict):
        out.add(f"tasks[{i}]", f"is {type(raw).__name__}, not an object")
        return None
    tid = raw.get("id")
    where = f"tasks[{i}] (id {tid!r})" if isinstance(tid, str) else f"tasks[{i}]"
    if not isinstance(tid, str) or not tid or "/" in tid:
        out.add(where, f"id {tid!r} must be a non-empty string without '/' (such as \"1.2\")")
        tid = None
    for key in ("title", "description"):
        if not isinstance(raw.get(key), str):
            out.add(where, f"{key} must be a string (it is {raw.get(key)!r})")
    state = raw.get("state")
    if state not in STATES:
        out.add(where, f"state {state!r} is not a NecroCode state; use one of "
                       f"{', '.join(STATES)} (a cancelled task is written as failed)")
    deps = raw.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        out.add(where, f"dependencies must be a list of task ids (it is {deps!r})")
    skill = raw.get("required_skill")
    if skill is not None and not isinstance(skill, str):
        out.add(where, f"required_skill must be a string or null (it is {skill!r})")
    priority = raw.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        out.add(where, f"priority must be an integer (it is {priority!r})")
    if not isinstance(raw.get("is_optional", False), bool):
        out.add(where, f"is_optional must be true or false (it is {raw.get('is_optional')!r})")
    for key in _OPTIONAL_STR:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            out.add(where, f"{key} must be a string or null (it is {value!r})")
    artifacts = raw.get("artifacts", [])
    if not isinstance(artifacts, list):
        out.add(where, f"artifacts must be a list (it is {artifacts!r})")
    else:
        for j, art in enumerate(artifacts):
            if not isinstance(art, dict) or not isinstance(art.get("uri"), str) \
                    or art.get("type") not in ARTIFACT_TYPES:
                out.add(where, f"artifacts[{j}] must be an object with a uri and a type "
                               f"({', '.join(ARTIFACT_TYPES)}); it is {art!r}")
    if not isinstance(raw.get("metadata", {}), dict):
        out.add(where, f"metadata must be an object (it is {raw.get('metadata')!r})")
    for key in ("created_at", "updated_at"):
        _check_time(raw, key, where, out)
    return tid


def check_taskset(path: Path, name: str, data: Any,
                  known: dict[str, dict[str, Any]] | None = None) -> None:
    """Raise NecroCodeFormatError unless ``data`` is a taskset the original could load.

    ``known``: task objects already checked, by id (an equal one is not checked again).
    """
    out = _Problems(path)
    if not isinstance(data, dict):
        out.add("file", f"holds {type(data).__name__}, not a taskset object")
        out.raise_if_any()
    if data.get("spec_name") != name:
        out.add("spec_name", f"is {data.get('spec_name')!r} but the file is in the folder "
                             f"{name!r}; the two must be the same (rename one)")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        out.add("version", f"must be an integer (it is {version!r})")
    for key in ("created_at", "updated_at"):
        _check_time(data, key, "taskset", out)
    if not isinstance(data.get("metadata", {}), dict):
        out.add("metadata", "must be an object")
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        out.add("tasks", f"must be a list of tasks (it is {tasks!r})")
        out.raise_if_any()
    ids: dict[str, int] = {}
    known = known or {}
    for i, raw in enumerate(tasks):
        if isinstance(raw, dict) and known.get(raw.get("id")) == raw:  # type: ignore[arg-type]
            tid: str | None = raw["id"]
        else:
            tid = _check_task(raw, i, out)
        if tid is None:
            continue
        if tid in ids:
            out.add(f"tasks[{i}] (id {tid!r})", f"id {tid!r} is also tasks[{ids[tid]}]; ids are "
                                                "unique in a taskset (renumber one)")
        ids.setdefault(tid, i)
    for i, raw in enumerate(tasks):
        deps = raw.get("dependencies", []) if isinstance(raw, dict) else []
        for dep in deps if isinstance(deps, list) else []:
            if isinstance(dep, str) and "/" not in dep and dep not in ids:
                out.add(f"tasks[{i}] (id {raw.get('id')!r})",
                        f"depends on {dep!r}, which is not a task of this taskset; add task "
                        f"{dep!r} or remove it from dependencies")
    out.raise_if_any()


def parse_json(path: Path, text: str) -> Any:
    """The JSON value of a taskset file; NecroCodeFormatError with line and column if bad."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NecroCodeFormatError(path, [f"line {exc.lineno}, column {exc.colno}: not valid "
                                          f"JSON ({exc.msg})"]) from None


def decode_task(spec: str, raw: dict[str, Any]) -> Task:
    """A checked task object of spec ``spec`` as a Task (extras applied where still valid)."""
    meta = raw.get("metadata") or {}
    extra = meta.get(EXTRA_KEY)
    if not isinstance(extra, dict):
        extra = {}
    else:
        meta = {k: v for k, v in meta.items() if k != EXTRA_KEY}
    created = _exact(extra.get("created_at"), raw["created_at"])
    updated = _exact(extra.get("updated_at"), raw["updated_at"])
    ours = updated == extra.get("updated_at")  # nobody changed it since we wrote it
    state = raw["state"]
    if ours and state == "failed" and extra.get("state") == "cancelled":
        state = "cancelled"
    fields = {k: extra.get(k, default) for k, default in _EXTRA_FIELDS.items()}
    if state == "ready" and (fields["ready_at"] is None or extra.get("state") != "ready"):
        fields["ready_at"] = updated  # made READY by someone else: since its last change
    res = extra.get("resources")
    skill = raw.get("required_skill")
    artifacts = [a["uri"] if isinstance(a, dict) else str(a) for a in raw.get("artifacts", [])]
    task = Task(
        id=raw["id"], title=raw["title"], taskset=spec, description=raw["description"],
        state=TaskState(state), dependencies=list(raw.get("dependencies", [])),
        required_skill=skill or "", priority=raw.get("priority", 0),
        tenant=extra.get("tenant") or spec,
        resources=Resources.from_dict(res) if isinstance(res, dict) else Resources(),
        metadata=dict(meta), optional=bool(raw.get("is_optional", False)),
        created_at=created, updated_at=updated, runner_id=raw.get("runner_id"),
        assigned_slot=raw.get("assigned_slot"), reserved_branch=raw.get("reserved_branch"),
        artifacts=artifacts, **fields,
    )
    return task


def decode_taskset_info(name: str, data: dict[str, Any], source: Path) -> Taskset:
    """The taskset's own fields (its tasks left empty)."""
    meta = data.get("metadata") or {}
    extra: dict[str, Any] = meta.get(EXTRA_KEY) or {}
    if not isinstance(extra, dict):
        extra = {}
    return Taskset(
        name=name, repo=extra.get("repo"), tenant=extra.get("tenant"),
        description=extra.get("description") or "", source=extra.get("source") or str(source),
        created_at=_exact(extra.get("created_at"), data["created_at"]),
    )


# --- writing -----------------------------------------------------------------------------------
def _artifact_type(uri: str) -> str:
    low = uri.lower()
    if low.endswith((".diff", ".patch")):
        return "diff"
    if "test" in low.rsplit("/", 1)[-1] or low.endswith(".xml"):
        return "test"
    return "log"


def encode_task(task: Task, old: dict[str, Any] | None) -> dict[str, Any]:
    """The task object of ``task`` in the original's key order, keeping what ``old`` had that
    the Dispatcher does not model (unknown keys, artifact details)."""
    old = old or {}
    extra: dict[str, Any] = {"created_at": task.created_at, "updated_at": task.updated_at,
                             "state": task.state.value}
    for name, default in _EXTRA_FIELDS.items():
        value = getattr(task, name)
        if value != default:
            extra[name] = (list(value) if isinstance(value, list | tuple)
                           else value.to_dict() if isinstance(value, Usage) else value)
    if task.tenant and task.tenant != task.taskset:
        extra["tenant"] = task.tenant
    if task.resources != _DEFAULT_RESOURCES:
        extra["resources"] = task.resources.to_dict()
    known = {a.get("uri"): a for a in old.get("artifacts", []) if isinstance(a, dict)}
    stamp = iso(task.updated_at)
    artifacts = [known.get(uri) or {"type": _artifact_type(uri), "uri": uri, "size_bytes": None,
                                    "created_at": stamp, "metadata": {}}
                 for uri in task.artifacts]
    raw: dict[str, Any] = {
        "id": task.id, "title": task.title, "description": task.description,
        "state": "failed" if task.state is TaskState.CANCELLED else task.state.value,
        "dependencies": list(task.dependencies),
        "required_skill": task.required_skill or ("" if old.get("required_skill") == "" else None),
        "priority": task.priority, "is_optional": task.optional,
        "assigned_slot": task.assigned_slot, "reserved_branch": task.reserved_branch,
        "runner_id": task.runner_id, "artifacts": artifacts,
        "metadata": {**task.metadata, EXTRA_KEY: extra},
        "created_at": iso(task.created_at), "updated_at": stamp,
    }
    for key, value in old.items():
        if key not in raw:
            raw[key] = value
    return raw


def new_head(taskset: Taskset, stamp: float) -> dict[str, Any]:
    """The top-level object of a new taskset file (``tasks`` filled in when rendered)."""
    return {"spec_name": taskset.name, "version": 0, "created_at": iso(taskset.created_at),
            "updated_at": iso(stamp), "tasks": None, "metadata": {}}


def set_head_info(head: dict[str, Any], taskset: Taskset) -> None:
    """Store the taskset's Dispatcher fields in the head's metadata."""
    meta = dict(head.get("metadata") or {})
    extra = {k: v for k, v in (("repo", taskset.repo), ("tenant", taskset.tenant),
                               ("description", taskset.description or None),
                               ("source", taskset.source), ("created_at", taskset.created_at))
             if v is not None}
    meta[EXTRA_KEY] = extra
    head["metadata"] = meta


def _dump(value: Any, indent: int) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return text.replace("\n", "\n" + " " * indent) if indent else text


def fragment(raw: dict[str, Any]) -> str:
    """One task as it appears in the file (indented for its place in ``tasks``)."""
    return "    " + _dump(raw, 4)


def split_fragments(text: str, head: dict[str, Any], count: int) -> list[str] | None:
    """The text of each task, cut from a file in the original's own layout (``json.dump`` with
    ``indent=2``), or None when the file is laid out otherwise.

    At that indentation ``,\n    {\n`` only appears between two tasks (a newline inside a
    string is escaped; anything nested in a task is indented deeper), and the pieces are
    accepted only if they rebuild the file exactly.
    """
    marker = '\n  "tasks": [\n'
    start = text.find(marker)
    if start < 0 or count == 0:
        return None
    start += len(marker)
    end = text.find("\n  ]", start)
    while end >= 0 and text[end + 4:end + 5] not in (",", "\n", ""):
        end = text.find("\n  ]", end + 1)
    if end < 0:
        return None
    parts = text[start:end].split(",\n    {\n")
    if len(parts) != count:
        return None
    frags = [parts[0]] + ["    {\n" + part for part in parts[1:]]
    return frags if render(head, frags) == text else None


def render(head: dict[str, Any], fragments: Iterable[str]) -> str:
    """The whole file, byte for byte what ``json.dump(data, indent=2, ensure_ascii=False)``
    writes, from the head and the cached text of each task (only changed tasks are encoded)."""
    items = []
    for key, value in head.items():
        if key == "tasks":
            frags = list(fragments)
            text = "[\n" + ",\n".join(frags) + "\n  ]" if frags else "[]"
        else:
            text = _dump(value, 2)
        items.append(f"  {json.dumps(key, ensure_ascii=False)}: {text}")
    return "{\n" + ",\n".join(items) + "\n}"
