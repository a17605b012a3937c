"""YAML tasksets in: parse, validate everything, then submit (R1.5).

The format::

    taskset: chat-app            # required: the taskset (spec) name
    repo: ./path/or/url          # optional: repository the tasks work in
    tenant: team-a               # optional: default tenant of its tasks
    description: ...             # optional
    tasks:
      - id: "1.1"                # required, unique in the taskset
        title: Create the schema # required
        description: ...
        skill: database          # -> Task.required_skill
        priority: 5              # integer, higher first
        depends_on: ["1.0"]      # -> Task.dependencies (ids in this taskset)
        resources: {cpu: 1, memory_mb: 512}
        command: ["python", "agent.py", "--task", "1.1"]   # argv, never run through a shell
        timeout: 600             # seconds
        max_attempts: 3
        tenant: team-b
        estimate: 10m            # -> Task.estimated_duration (seconds, or "90s", "10m", "2h")
        optional: false
        repo: ./other            # overrides the taskset's repo
        paths: ["src/api/**"]    # globs of the files it touches: overlapping tasks never run
                                 # at once (relative to the repository; ** spans folders)
        metadata: {any: thing}

Ids and dependencies are kept as written (``1.10`` stays ``"1.10"`` even unquoted). A relative
``repo`` path is resolved against the taskset file's folder (URLs are left alone).

Nothing is written unless the whole taskset is valid: every problem (file:line, task id, field)
is collected and raised as one :class:`~.errors.TasksetError`. Dependencies are checked against
the taskset plus the tasks of the same taskset already in the registry, so a re-submit may add
tasks that depend on earlier ones. What only a config can tell (resources above every quota,
tasks without a command on a pool without ``agent_command``) are warnings, not errors
(:mod:`.taskset_warnings`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .agents.checks import TASKSET_AGENT_KEYS, task_agent_fields
from .config import DispatcherConfig
from .errors import Problem, TasksetError
from .models import Task, Taskset
from .names import name_problem
from .registry.base import SubmitResult, TaskRegistry
from .taskset_task import TASK_KEYS as TASK_KEYS
from .taskset_task import Collector, parse_task, prototype, resolve_repo, scalar_text
from .taskset_validate import NAME_HINT, LocateTask, validate_all, validate_taskset
from .yaml_source import (
    YamlDocument,
    dotted,
    locator,
    parse_yaml,
    paused_gc,
    type_name,
    yaml_error_problem,
)

log = logging.getLogger(__name__)

__all__ = ["load_taskset_file", "parse_taskset", "submit_taskset_file", "tasks_not_in",
           "validate_taskset"]

Path_ = tuple[str | int, ...]
TOP_KEYS = ("taskset", "repo", "tenant", "description", "tasks", *TASKSET_AGENT_KEYS)


# --- parsing -------------------------------------------------------------------------------


def load_taskset_file(
    path: str | os.PathLike[str],
    config: DispatcherConfig | None = None,
    existing: TaskRegistry | None = None,
) -> tuple[Taskset, list[str]]:
    """Read, parse and validate a YAML taskset file; returns it with its warnings.

    Raises TasksetError naming every problem (file:line, task id, field).
    """
    source = os.fspath(path)
    p = Path(source)
    title = f"invalid taskset {source}; nothing written"
    if not p.is_file():
        what = "not a file" if p.exists() else "taskset file not found"
        raise TasksetError([Problem(source, "", what, "give the path of a YAML taskset file")],
                           title=title)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TasksetError([Problem(source, "", f"cannot read the file: {exc}")],
                           title=title) from exc
    with paused_gc():
        # A valid file needs no line numbers: built without them first, it is parsed again
        # with them only when there is a problem to locate (the same values, so the same
        # problems, now with their lines).
        taskset, problems, warnings, located = _check(text, source, p, config, existing, False)
        if problems and not located:
            taskset, problems, warnings, _ = _check(text, source, p, config, existing, True)
    if problems:
        raise TasksetError(_sorted(problems), title=f"invalid taskset {source}; nothing written")
    return taskset, warnings


def _check(text: str, source: str, p: Path, config: DispatcherConfig | None,
           existing: TaskRegistry | None, lines: bool
           ) -> tuple[Taskset, list[Problem], list[str], bool]:
    """Parse and validate the text of a taskset file: the taskset, its problems, warnings,
    and whether the problems carry their lines."""
    try:
        doc = parse_yaml(text, lines=lines)
    except yaml.YAMLError as exc:
        raise TasksetError([yaml_error_problem(exc, source)],
                           title=f"invalid taskset {source}; nothing written") from exc
    located = doc.located
    parsed = _parse(doc, source, p.resolve().parent)
    del doc
    # Every check runs in one pass: dependencies of every task with an id (even one with
    # other bad fields, even a duplicate) and cycles over the known edges, whatever else
    # is wrong. Without a taskset name _parse said why, and the other checks still ran.
    more, warnings = validate_all(parsed.taskset, existing, config, parsed.locate_task,
                                  parsed.all_ids, extra=parsed.extra, check_name=False,
                                  fields_checked=True)
    return parsed.taskset, parsed.problems + more, warnings, located


def parse_taskset(data: Any, source: str = "<taskset>", base_dir: Path | None = None) -> Taskset:
    """Build a Taskset from parsed YAML data, checking its structure and types.

    Dependencies and cycles are checked by :func:`validate_taskset`.
    """
    parsed = _parse(YamlDocument(data), source, base_dir)
    if parsed.problems:
        raise TasksetError(parsed.problems, title=f"invalid taskset {source}; nothing written")
    return parsed.taskset


def _sorted(problems: list[Problem]) -> list[Problem]:
    def line(p: Problem) -> int:
        tail = p.location.rpartition(":")[2]
        return int(tail) if tail.isdigit() else 0

    return sorted(problems, key=line)




@dataclass
class _Parsed:
    """What :func:`_parse` found: the valid tasks, the problems, and what validation needs.

    ``extra`` holds tasks with a usable id that are not in the taskset (some other field is
    bad, or the id is a duplicate), each with its own locator, so their dependencies are
    still checked and the valid ones still take part in the cycle check.
    """

    taskset: Taskset
    problems: list[Problem]
    locate_task: LocateTask
    all_ids: set[str] = field(default_factory=set)
    extra: list[tuple[Task, LocateTask, bool]] = field(default_factory=list)


def _parse(doc: YamlDocument, source: str, base_dir: Path | None) -> _Parsed:
    locate = locator(source, doc.lines)
    out = Collector(source, locate)
    for dup, _line in doc.duplicates:
        out.add(dup, dotted(dup), "key given twice", "keep only one of them")
    data = doc.value
    empty = Taskset(name="", source=source)
    if not isinstance(data, dict):
        out.add((), "", f"expected a mapping with 'taskset:' and 'tasks:', got {type_name(data)}")
        return _Parsed(empty, out.problems, lambda tid, field: source)
    for key in data:
        if str(key) not in TOP_KEYS:
            out.unknown((str(key),), str(key), str(key), TOP_KEYS, "the taskset")
    name = data.get("taskset")
    if name is None:
        out.add((), "taskset", "missing the taskset name", "add 'taskset: my-spec' at the top")
        name = ""
    elif not isinstance(name, str):
        out.add(("taskset",), "taskset",
                f"expected a name (a string without '/'), got {type_name(name)}")
        name = ""
    elif (why := name_problem(name)) is not None:
        out.add(("taskset",), "taskset", f"taskset name {name!r} {why}", NAME_HINT)
        name = ""
    header: dict[str, str | None] = {}
    for key in ("repo", "tenant", "description"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            out.add((key,), key, f"expected a string, got {type_name(value)}")
            value = None
        header[key] = value
    repo = resolve_repo(header["repo"], base_dir)
    taskset = Taskset(name=name, repo=repo, tenant=header["tenant"],
                      description=header["description"] or "", source=source)
    agent_defaults = task_agent_fields(data, {}, (), lambda p, m, h="": out.add(
        p, dotted(p), m, h))

    inherited: dict[str, Any] | None = None
    if agent_defaults.get("agent") is None:  # else each task reports an unknown agent itself
        quiet: list[str] = []
        inherited = task_agent_fields({}, agent_defaults, (), lambda p, m, h="": quiet.append(m))
        if quiet:
            inherited = None
    raw_tasks = data.get("tasks")
    where_task: dict[str, Path_] = {}
    all_ids: set[str] = set()
    if raw_tasks is None:
        out.add((), "tasks", "missing the list of tasks", "add 'tasks:' with '- id: ...' items")
        raw_tasks = []
    elif not isinstance(raw_tasks, list):
        out.add(("tasks",), "tasks", f"expected a list of tasks, got {type_name(raw_tasks)}")
        raw_tasks = []
    seen: dict[str, int] = {}
    extra: list[tuple[Task, LocateTask, bool]] = []
    proto = prototype(taskset)

    def locate_at(path: Path_) -> LocateTask:
        return lambda _tid, fld: locate((*path, fld)) if fld else locate(path)

    for i, item in enumerate(raw_tasks):
        path: Path_ = ("tasks", i)
        raw_id = item.get("id") if isinstance(item, dict) else None
        tid = raw_id if type(raw_id) is str else scalar_text(raw_id, (*path, "id"), doc)
        duplicate = tid is not None and tid in seen
        if duplicate:
            first = locate(("tasks", seen[str(tid)], "id"))
            out.add((*path, "id"), f"tasks[{tid}].id", f"duplicate id {tid!r} (first at {first})",
                    "give each task of the taskset its own id")
        elif tid is not None:
            seen[tid] = i
            where_task[tid] = path
        before = len(out.problems)
        task = parse_task(item, path, doc, out, taskset, base_dir, agent_defaults, inherited,
                          proto)
        if task is None:
            continue
        if duplicate:  # its dependencies are checked; it takes no part in the graph
            extra.append((task, locate_at(path), False))
        elif len(out.problems) > before:  # another field is bad: still check its edges
            extra.append((task, locate_at(path), True))
        else:
            taskset.tasks.append(task)
    all_ids.update(seen)

    def locate_task(task_id: str, field: str) -> str:
        path = where_task.get(task_id)
        if path is None:
            return source
        return locate((*path, field)) if field else locate(path)

    return _Parsed(taskset, out.problems, locate_task, all_ids, extra)


# --- submit -------------------------------------------------------------------------------


def tasks_not_in(
    taskset: Taskset, registry: TaskRegistry, *, submitted: bool = False
) -> list[Task]:
    """Tasks of the taskset already in the registry that ``taskset`` no longer lists.

    A submit keeps them (it creates and updates, it never deletes). With ``submitted`` (the
    taskset was just written, so every task it lists is in the registry) a count answers the
    common case without loading the tasks.
    """
    ids = {t.id for t in taskset.tasks}
    stored = sum(registry.count_tasks(taskset=taskset.name).values())
    if stored == 0 or (submitted and stored <= len(ids)):
        return []
    return [t for t in registry.list_tasks(taskset=taskset.name) if t.id not in ids]


def submit_taskset_file(
    registry: TaskRegistry, path: str | os.PathLike[str], config: DispatcherConfig | None = None
) -> SubmitResult:
    """Validate a YAML taskset file against the registry, then create or update it.

    Raises TasksetError (nothing written) when anything is wrong; warnings are logged.
    """
    taskset, warnings = load_taskset_file(path, config, existing=registry)
    for warning in warnings:
        log.warning("%s", warning)
    return registry.submit_taskset(taskset)
