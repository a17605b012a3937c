"""The taskset files of a NecroCode registry, cached and rewritten whole.

A file is read again only when its identity (inode, size, modification time) moved: the
original replaces it by renaming a new file over it, so every write by anyone is seen by a
``stat``. A write re-encodes only the changed tasks: the text of every other task is kept from
the last read or write and the file is assembled from those pieces, then written to a temporary
file in the same folder, flushed to disk and renamed over the old one (as the original does).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from ..models import Task, Taskset
from .necrocode_format import (
    NecroCodeFormatError,
    check_taskset,
    decode_task,
    decode_taskset_info,
    encode_task,
    fragment,
    iso,
    parse_json,
    render,
    split_fragments,
)

log = logging.getLogger(__name__)

TASKSET_FILE = "taskset.json"
Identity = tuple[int, int, int]  # inode, size, mtime (ns)


@dataclass
class Spec:
    """One taskset file as last read or written."""

    name: str
    path: Path
    ident: Identity | None
    head: dict[str, Any]  # top-level keys in file order ("tasks" left None)
    order: list[str]  # task ids in file order
    tasks: dict[str, Task]
    raws: dict[str, dict[str, Any]]
    info: Taskset
    frags: dict[str, str] = field(default_factory=dict)  # task id -> its text in the file

    @property
    def version(self) -> int:
        return int(self.head.get("version") or 0)


def identity(st: os.stat_result) -> Identity:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class SpecStore:
    """Reads and writes ``tasksets/<spec>/taskset.json`` of one registry directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "tasksets"

    def path_of(self, name: str) -> Path:
        return self.dir / name / TASKSET_FILE

    def scan(self) -> dict[str, Identity]:
        """Every spec that has a taskset file, with the file's identity, sorted by name."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryError(f"cannot list the NecroCode tasksets folder {self.dir}: "
                                f"{exc.strerror or exc}; check its permissions") from exc
        found: dict[str, Identity] = {}
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                found[entry.name] = identity(os.stat(os.path.join(entry.path, TASKSET_FILE)))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RegistryError(f"cannot read {entry.path}/{TASKSET_FILE}: "
                                    f"{exc.strerror or exc}; check its permissions") from exc
        return found

    def stat(self, name: str) -> Identity | None:
        if not name or "/" in name or name.startswith("."):
            return None  # not a spec folder
        try:
            return identity(os.stat(self.path_of(name)))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {self.path_of(name)}: {exc.strerror or exc}; "
                                "check its permissions") from exc

    def load(self, name: str, cached: Spec | None = None) -> Spec | None:
        """The spec as it is on disk now (None when it has no file). Tasks whose object did
        not change keep their cached Task and text. Raises NecroCodeFormatError."""
        path = self.path_of(name)
        for _ in range(5):
            try:
                with open(path, encoding="utf-8") as fh:
                    before = identity(os.fstat(fh.fileno()))
                    text = fh.read()
                    after = identity(os.fstat(fh.fileno()))
            except FileNotFoundError:
                return None
            except UnicodeDecodeError as exc:
                raise NecroCodeFormatError(path, [f"not UTF-8 text ({exc.reason} at byte "
                                                  f"{exc.start})"]) from None
            except OSError as exc:
                raise RegistryError(f"cannot read {path}: {exc.strerror or exc}; check its "
                                    "permissions") from exc
            if before == after:  # not rewritten in place while we read it
                break
        data = parse_json(path, text)
        old_raws = cached.raws if cached is not None else {}
        check_taskset(path, name, data, old_raws)
        tasks: dict[str, Task] = {}
        raws: dict[str, dict[str, Any]] = {}
        frags: dict[str, str] = {}
        for raw in data["tasks"]:
            tid = raw["id"]
            raws[tid] = raw
            if cached is not None and old_raws.get(tid) == raw:
                tasks[tid] = cached.tasks[tid]
                if tid in cached.frags:
                    frags[tid] = cached.frags[tid]
            else:
                tasks[tid] = decode_task(name, raw)
        head = {k: (None if k == "tasks" else v) for k, v in data.items()}
        cut = split_fragments(text, head, len(data["tasks"]))
        if cut is not None:  # the file's own text of each task: nothing to encode again
            frags = {raw["id"]: piece for raw, piece in zip(data["tasks"], cut, strict=True)}
        return Spec(name=name, path=path, ident=after, head=head, order=list(tasks),
                    tasks=tasks, raws=raws, info=decode_taskset_info(name, data, path),
                    frags=frags)

    def write(self, spec: Spec, changed: dict[str, Task], order: list[str], stamp: float,
              head: dict[str, Any] | None = None, info: Taskset | None = None) -> Spec:
        """Write ``spec`` with ``changed`` tasks (new or replaced) in ``order``; version + 1.

        Returns the spec as written; ``spec`` itself is left as it was if the write fails.
        """
        raws = dict(spec.raws)
        tasks = dict(spec.tasks)
        frags = dict(spec.frags)
        for tid, task in changed.items():
            raw = encode_task(task, spec.raws.get(tid))
            raws[tid] = raw
            tasks[tid] = task
            frags[tid] = fragment(raw)
        for tid in order:
            if tid not in frags:
                frags[tid] = fragment(raws[tid])
        new_head = dict(head if head is not None else spec.head)
        new_head["version"] = spec.version + 1
        new_head["updated_at"] = iso(stamp)
        text = render(new_head, (frags[tid] for tid in order))
        ident = self._replace(spec.path, text)
        return Spec(name=spec.name, path=spec.path, ident=ident, head=new_head,
                    order=list(order), tasks=tasks, raws=raws, info=info or spec.info,
                    frags=frags)

    @staticmethod
    def _replace(path: Path, text: str) -> Identity:
        """Write ``text`` to a temporary file beside ``path``, fsync, rename over ``path``."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
                ident = identity(os.fstat(fh.fileno()))
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove the temporary file %s", tmp)
            raise RegistryError(f"cannot write {path}: {exc.strerror or exc}; check the "
                                "folder's permissions and free space (nothing was "
                                "changed)") from exc
        return ident


def new_spec(store: SpecStore, taskset: Taskset, head: dict[str, Any]) -> Spec:
    """An empty spec for a taskset that has no file yet."""
    return Spec(name=taskset.name, path=store.path_of(taskset.name), ident=None, head=head,
                order=[], tasks={}, raws={}, info=taskset)
