"""The original NecroCode Task Registry's format, re-implemented for tests from its documentation.

``read_taskset`` / ``read_events`` accept only what the original's loaders accept (required keys,
its five states, its event and artifact types, ISO times); they raise ``FormatViolation``
otherwise. ``OriginalWriter`` writes a registry directory the way the original's TaskRegistry
does: under ``filelock.FileLock(locks/<spec>.lock)``, the taskset rewritten whole through
``taskset.tmp`` and a rename, the version incremented, events appended to
``events/<spec>/events.jsonl``. Tests use it as "the other writer" in the same directory.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import filelock

STATES = {"ready", "running", "blocked", "done", "failed"}
EVENT_TYPES = {"TaskCreated", "TaskUpdated", "TaskReady", "TaskAssigned", "TaskCompleted",
               "TaskFailed", "RunnerStarted", "RunnerFinished", "PROpened", "PRMerged"}
ARTIFACT_TYPES = {"diff", "log", "test"}


class FormatViolation(AssertionError):
    """The file would not load in the original NecroCode tools."""


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise FormatViolation(what)


def _time(value: Any, what: str) -> datetime:
    _need(isinstance(value, str), f"{what}: not an ISO time string: {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise FormatViolation(f"{what}: {exc}") from None


def check_task(raw: Any, where: str) -> None:
    _need(isinstance(raw, dict), f"{where}: not an object")
    for key in ("id", "title", "description", "state", "created_at", "updated_at"):
        _need(key in raw, f"{where}: no {key}")
    _need(raw["state"] in STATES, f"{where}: state {raw['state']!r}")
    _need(isinstance(raw.get("dependencies", []), list), f"{where}: dependencies")
    _need(isinstance(raw.get("priority", 0), int), f"{where}: priority")
    _need(isinstance(raw.get("is_optional", False), bool), f"{where}: is_optional")
    for key in ("required_skill", "assigned_slot", "reserved_branch", "runner_id"):
        _need(raw.get(key) is None or isinstance(raw[key], str), f"{where}: {key}")
    for art in raw.get("artifacts", []):
        _need(isinstance(art, dict) and art.get("type") in ARTIFACT_TYPES
              and isinstance(art.get("uri"), str), f"{where}: artifact {art!r}")
        _time(art.get("created_at"), f"{where}: artifact created_at")
    _need(isinstance(raw.get("metadata", {}), dict), f"{where}: metadata")
    _time(raw["created_at"], f"{where}: created_at")
    _time(raw["updated_at"], f"{where}: updated_at")


def read_taskset(path: Path) -> dict[str, Any]:
    """A taskset file as the original loads it (raises FormatViolation otherwise)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    _need(isinstance(data, dict), f"{path}: not an object")
    for key in ("spec_name", "version", "created_at", "updated_at", "tasks"):
        _need(key in data, f"{path}: no {key}")
    _need(data["spec_name"] == path.parent.name, f"{path}: spec_name {data['spec_name']!r}")
    _need(isinstance(data["version"], int), f"{path}: version")
    _time(data["created_at"], f"{path}: created_at")
    _time(data["updated_at"], f"{path}: updated_at")
    _need(isinstance(data["tasks"], list), f"{path}: tasks")
    for i, raw in enumerate(data["tasks"]):
        check_task(raw, f"{path}: tasks[{i}]")
    _need(isinstance(data.get("metadata", {}), dict), f"{path}: metadata")
    return data


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every line of an event file as the original parses it (raises FormatViolation)."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        data = json.loads(line)
        where = f"{path}:{n}"
        for key in ("event_type", "spec_name", "task_id", "timestamp"):
            _need(key in data, f"{where}: no {key}")
        _need(data["event_type"] in EVENT_TYPES, f"{where}: event_type {data['event_type']!r}")
        _need(data["spec_name"] == path.parent.name, f"{where}: spec_name")
        _time(data["timestamp"], f"{where}: timestamp")
        _need(isinstance(data.get("details", {}), dict), f"{where}: details")
        out.append(data)
    return out


def read_registry(root: Path) -> dict[str, dict[str, Any]]:
    """Every taskset (and its events, under "_events") of a directory, checked."""
    out = {}
    for path in sorted((root / "tasksets").glob("*/taskset.json")):
        data = read_taskset(path)
        events = root / "events" / path.parent.name / "events.jsonl"
        data["_events"] = read_events(events) if events.exists() else []
        out[path.parent.name] = data
    return out


def _now() -> str:
    return datetime.now().isoformat()


def new_task(tid: str, *, state: str = "ready", deps: list[str] | None = None,
             skill: str | None = None, priority: int = 0, **extra: Any) -> dict[str, Any]:
    """A task object as the original's Task.to_dict writes it."""
    stamp = _now()
    return {"id": tid, "title": f"task {tid}", "description": "", "state": state,
            "dependencies": deps or [], "required_skill": skill, "priority": priority,
            "is_optional": False, "assigned_slot": None, "reserved_branch": None,
            "runner_id": None, "artifacts": [], "metadata": {}, "created_at": stamp,
            "updated_at": stamp, **extra}


class OriginalWriter:
    """Writes a registry directory the way the original TaskRegistry does."""

    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def lock(self, spec: str) -> filelock.BaseFileLock:
        path = self.root / "locks" / f"{spec}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(path), timeout=self.lock_timeout)

    def _path(self, spec: str) -> Path:
        return self.root / "tasksets" / spec / "taskset.json"

    def load(self, spec: str) -> dict[str, Any]:
        return json.loads(self._path(spec).read_text(encoding="utf-8"))

    def save(self, data: dict[str, Any]) -> None:
        path = self._path(data["spec_name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        data["updated_at"] = _now()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)

    def event(self, spec: str, tid: str, kind: str, **details: Any) -> None:
        path = self.root / "events" / spec / "events.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {"event_type": kind, "spec_name": spec, "task_id": tid, "timestamp": _now(),
                "details": details}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    def create_taskset(self, spec: str, tasks: list[dict[str, Any]],
                       hold: float = 0.0) -> None:
        """create_taskset: BLOCKED when it has dependencies, READY else (DONE kept)."""
        with self.lock(spec):
            version = self.load(spec)["version"] + 1 if self._path(spec).exists() else 1
            for task in tasks:
                if task["state"] != "done":
                    task["state"] = "blocked" if task["dependencies"] else "ready"
            now = _now()
            self.save({"spec_name": spec, "version": version, "created_at": now,
                       "updated_at": now, "tasks": tasks, "metadata": {}})
            for task in tasks:
                self.event(spec, task["id"], "TaskCreated", title=task["title"],
                           state=task["state"])
            time.sleep(hold)

    def update_task_state(self, spec: str, tid: str, new_state: str,
                          metadata: dict[str, Any] | None = None, hold: float = 0.0) -> None:
        """update_task_state: the state (and runner fields when RUNNING), dependents unblocked
        on DONE, version + 1, one event typed by the new state. ``hold``: keep the lock that
        many seconds longer (a slow writer)."""
        with self.lock(spec):
            data = self.load(spec)
            tasks = {t["id"]: t for t in data["tasks"]}
            task = tasks[tid]
            old = task["state"]
            task["state"] = new_state
            task["updated_at"] = _now()
            if new_state == "running":
                for key in ("assigned_slot", "reserved_branch", "runner_id"):
                    if metadata and key in metadata:
                        task[key] = metadata[key]
            if new_state == "done":
                for other in data["tasks"]:
                    if other["state"] == "blocked" and tid in other["dependencies"] and all(
                            tasks.get(d, {}).get("state") == "done"
                            for d in other["dependencies"]):
                        other["state"] = "ready"
                        other["updated_at"] = _now()
            data["version"] += 1
            self.save(data)
            kind = {"ready": "TaskReady", "running": "TaskAssigned", "done": "TaskCompleted",
                    "failed": "TaskFailed"}.get(new_state, "TaskUpdated")
            self.event(spec, tid, kind, old_state=old, new_state=new_state, **(metadata or {}))
            time.sleep(hold)

    def modify(self, spec: str, change: Any, hold: float = 0.0) -> Any:
        """A read-modify-write of the whole taskset under its lock (the original README's
        "lock, get_taskset, change, save_taskset"); ``change(data)`` returns a result."""
        with self.lock(spec):
            data = self.load(spec)
            result = change(data)
            data["version"] += 1
            self.save(data)
            time.sleep(hold)
            return result

    def add_artifact(self, spec: str, tid: str, kind: str, uri: str) -> None:
        """add_artifact: an artifact object appended, version + 1, a TaskUpdated event."""
        with self.lock(spec):
            data = self.load(spec)
            task = next(t for t in data["tasks"] if t["id"] == tid)
            task["artifacts"].append({"type": kind, "uri": uri, "size_bytes": None,
                                      "created_at": _now(), "metadata": {}})
            task["updated_at"] = _now()
            data["version"] += 1
            self.save(data)
            self.event(spec, tid, "TaskUpdated", action="artifact_added", artifact_type=kind,
                       uri=uri)
