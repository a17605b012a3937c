"""Import a Kiro spec's ``tasks.md`` as a taskset (``necroui import-kiro``).

Kiro writes an implementation plan as a Markdown checklist::

    - [x] 1. Set up the project structure
      - Create the package layout
      - _Requirements: 1.1, 1.2_
    - [ ] 2. Implement the data models
    - [ ] 2.1 Create the User model
      - _Requirements: 2.1_
    - [ ]* 2.2 Write unit tests for the models

How it maps to tasks:

- **ids**: the numbering (``1``, ``2.1``; a trailing dot is dropped). An item without a number
  gets ``line<N>`` (its line number).
- **title**: the rest of the checkbox line.
- **state**: ``[x]`` is DONE; anything else (``[ ]``, ``[-]`` in progress) is not done, and the
  registry makes it READY or BLOCKED from its dependencies.
- **optional**: a ``*`` right after the checkbox (``- [ ]* 2.2``) sets ``optional=True``.
- **description**: the detail lines under an item (bullets and text, indented or not, up to the
  next checkbox), one per line; ``_Requirements: 1.1, 2.3_`` becomes ``Requirements: 1.1, 2.3``
  and also ``metadata["requirements"] = ["1.1", "2.3"]`` (any ``_Key: value_`` line likewise).
- **hierarchy**: ``N.M`` is a sub-task of ``N`` (the longest numbered prefix present). Sub-tasks
  are the work; a parent is the roll-up: it **depends on its (non-optional) sub-tasks**, so it
  runs (as a final integration/check step) when they are done.
- **order** (default, ``sequential=True``): Kiro runs a plan top to bottom, each step building on
  the previous, so every item depends on the previous non-optional item at its level
  (``2.2`` on ``2.1``, ``3`` on ``2``), and a first sub-task depends on what its parent would
  have waited for (``2.1`` on ``1``). Nothing depends on an optional task, so skipping (cancelling)
  optional tasks never blocks the plan. With ``sequential=False`` only the parent -> sub-task
  dependencies are made and independent items may run in parallel.
- **taskset name**: ``taskset_name`` when given, else the spec's folder for a file named
  ``tasks.md`` (``.kiro/specs/chat-app/tasks.md`` -> ``chat-app``), else the file's stem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Problem, TasksetError
from ..models import Task, Taskset, TaskState
from ..yaml_source import paused_gc

_CHECKBOX = re.compile(
    r"^(?P<indent>\s*)[-*+]\s+\[(?P<mark>[^\]]?)\](?P<optional>\*)?\s*"
    r"(?:(?P<num>\d+(?:\.\d+)*)\.?(?:\s+|$))?(?P<title>.*?)\s*$"
)
_FIELD = re.compile(r"^_(?P<key>[A-Za-z][\w ]*):\s*(?P<value>.*?)_$")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")


@dataclass
class _Item:
    id: str
    title: str
    done: bool
    optional: bool
    line: int
    details: list[str] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)
    parent: str | None = None
    children: list[str] = field(default_factory=list)


def default_taskset_name(path: Path) -> str:
    """The spec folder for ``tasks.md``, else the file's stem."""
    if path.name.lower() == "tasks.md" and path.resolve().parent.name:
        return path.resolve().parent.name
    return path.stem


def load_kiro_file(
    path: str | os.PathLike[str], taskset_name: str | None = None, *, sequential: bool = True
) -> Taskset:
    """Read a Kiro ``tasks.md`` into a Taskset (see the module doc for the mapping).

    Raises TasksetError when the file is missing, has no checkbox items, or repeats a number.
    """
    source = os.fspath(path)
    p = Path(source)
    if not p.is_file():
        raise TasksetError([Problem(source, "", "Kiro tasks file not found",
                                    "give the path of a tasks.md, e.g. .kiro/specs/NAME/tasks.md")])
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TasksetError([Problem(source, "", f"cannot read the file: {exc}")]) from exc
    name = taskset_name or default_taskset_name(p)
    with paused_gc():
        return parse_kiro(text, name, source=source, sequential=sequential)


def parse_kiro(text: str, taskset_name: str, *, source: str = "<tasks.md>",
               sequential: bool = True) -> Taskset:
    """Parse the text of a Kiro ``tasks.md``."""
    items: dict[str, _Item] = {}
    problems: list[Problem] = []
    current: _Item | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _CHECKBOX.match(line)
        if m:
            tid = m.group("num") or f"line{lineno}"
            if tid in items:
                problems.append(Problem(f"{source}:{lineno}", f"tasks[{tid}]",
                                        f"number {tid} used twice (first at line "
                                        f"{items[tid].line})", "renumber one of them"))
                current = None
                continue
            title = m.group("title") or f"task {tid}"
            current = _Item(tid, title, m.group("mark").lower() == "x",
                            bool(m.group("optional")), lineno)
            items[tid] = current
            continue
        stripped = line.strip()
        if current is None or not stripped:
            continue
        if stripped.startswith("#"):
            current = None  # a heading ends the item's details
            continue
        detail = _BULLET.sub("", stripped)
        fm = _FIELD.match(detail)
        if fm:
            key, value = fm.group("key").strip(), fm.group("value").strip()
            values = [v.strip() for v in value.split(",") if v.strip()]
            current.metadata[key.lower().replace(" ", "_")] = values
            detail = f"{key}: {value}"
        current.details.append(detail)
    if not items and not problems:
        problems.append(Problem(source, "", "no checkbox items found",
                                "Kiro tasks look like '- [ ] 1. Title'"))
    if problems:
        raise TasksetError(problems, title=f"invalid Kiro tasks file {source}; nothing written")
    _link(items)
    deps = _dependencies(items, sequential)
    tasks = [
        Task(
            id=item.id,
            title=item.title,
            taskset=taskset_name,
            description="\n".join(item.details),
            state=TaskState.DONE if item.done else TaskState.READY,
            dependencies=deps[item.id],
            optional=item.optional,
            metadata={"kiro_line": item.line, **item.metadata},
        )
        for item in items.values()
    ]
    return Taskset(name=taskset_name, tasks=tasks, source=source)


def _link(items: dict[str, _Item]) -> None:
    """Parent of ``2.1.3`` is the longest numbered prefix present (``2.1``, else ``2``)."""
    for item in items.values():
        parts = item.id.split(".")
        for n in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in items and not item.id.startswith("line"):
                item.parent = prefix
                items[prefix].children.append(item.id)
                break


def _dependencies(items: dict[str, _Item], sequential: bool) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {tid: [] for tid in items}
    for item in items.values():
        deps[item.id] += [c for c in item.children if not items[c].optional]
    if not sequential:
        return deps
    # previous non-optional sibling, by document order, per parent
    prev: dict[str, str | None] = {}
    last: dict[str | None, str | None] = {}
    for item in items.values():
        prev[item.id] = last.get(item.parent)
        if not item.optional:
            last[item.parent] = item.id

    def predecessor(tid: str) -> str | None:
        cursor: str | None = tid
        while cursor is not None:
            if prev[cursor] is not None:
                return prev[cursor]
            cursor = items[cursor].parent
        return None

    for item in items.values():
        before = predecessor(item.id)
        if before is not None and before not in deps[item.id]:
            deps[item.id].insert(0, before)
    return deps
