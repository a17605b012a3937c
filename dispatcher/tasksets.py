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

import difflib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import limits
from .agents.checks import TASKSET_AGENT_KEYS, task_agent_fields
from .config import DispatcherConfig
from .errors import Problem, TasksetError
from .graph import parse_duration
from .models import Resources, Task, Taskset, TaskState
from .names import name_problem
from .path_claims import parse_paths
from .registry.base import SubmitResult, TaskRegistry
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
TASK_KEYS = ("id", "title", "description", "skill", "priority", "depends_on", "resources",
             "command", "timeout", "max_attempts", "tenant", "metadata", "estimate", "optional",
             "repo", "paths", *TASKSET_AGENT_KEYS)
RESOURCE_KEYS = ("cpu", "memory_mb")
_TASK_KEY_SET = frozenset(TASK_KEYS)


class _Collector:
    """Collects problems with their locations."""

    def __init__(self, source: str, locate: Callable[[Path_], str]) -> None:
        self.source = source
        self.locate = locate
        self.problems: list[Problem] = []

    def add(self, path: Path_, key: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.locate(path), key, message, hint))

    def unknown(self, path: Path_, key: str, name: str, valid: tuple[str, ...], where: str) -> None:
        close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
        self.add(path, key, f"unknown key in {where}", hint)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_url(text: str) -> bool:
    return "://" in text or bool(re.match(r"^[\w.-]+@[\w.-]+:", text))


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
        try:
            doc = parse_yaml(text)
        except yaml.YAMLError as exc:
            raise TasksetError([yaml_error_problem(exc, source)], title=title) from exc
        parsed = _parse(doc, source, p.resolve().parent)
        del doc
        taskset, problems = parsed.taskset, parsed.problems
        warnings: list[str] = []
        # Every check runs in one pass: dependencies of every task with an id (even one with
        # other bad fields, even a duplicate) and cycles over the known edges, whatever else
        # is wrong. Without a taskset name _parse said why, and the other checks still ran.
        more, warnings = validate_all(taskset, existing, config, parsed.locate_task,
                                   parsed.all_ids, extra=parsed.extra, check_name=False)
        problems += more
    if problems:
        raise TasksetError(_sorted(problems), title=f"invalid taskset {source}; nothing written")
    return taskset, warnings


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
    out = _Collector(source, locate)
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
    repo = _resolve_repo(header["repo"], base_dir)
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

    def locate_at(path: Path_) -> LocateTask:
        return lambda _tid, fld: locate((*path, fld)) if fld else locate(path)

    for i, item in enumerate(raw_tasks):
        path: Path_ = ("tasks", i)
        raw_id = item.get("id") if isinstance(item, dict) else None
        tid = _scalar_text(raw_id, (*path, "id"), doc)
        duplicate = tid is not None and tid in seen
        if duplicate:
            first = locate(("tasks", seen[str(tid)], "id"))
            out.add((*path, "id"), f"tasks[{tid}].id", f"duplicate id {tid!r} (first at {first})",
                    "give each task of the taskset its own id")
        elif tid is not None:
            seen[tid] = i
            where_task[tid] = path
        before = len(out.problems)
        task = _parse_task(item, path, doc, out, taskset, base_dir, agent_defaults, inherited)
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


def _resolve_repo(repo: str | None, base_dir: Path | None) -> str | None:
    if not repo or base_dir is None or _is_url(repo):
        return repo
    p = Path(repo).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _scalar_text(value: Any, path: Path_, doc: YamlDocument) -> str | None:
    """Ids as written: ``1.10`` unquoted is the string "1.10", not the float 1.1."""
    if isinstance(value, str):
        return value
    if _is_number(value):
        return doc.raw.get(path, str(value))
    return None


def _parse_task(item: Any, path: Path_, doc: YamlDocument, out: _Collector, taskset: Taskset,
                base_dir: Path | None, agent_defaults: dict[str, Any],
                inherited: dict[str, Any] | None = None) -> Task | None:
    """One task of the file, or None without a usable id; its problems go to ``out``.

    ``inherited``: the agent fields of a task that names none (the taskset's), when those
    cannot be wrong; None to check every task's own way.
    """
    if not isinstance(item, dict):
        out.add(path, f"tasks[#{path[-1] + 1}]",  # type: ignore[operator]
                f"expected a task (a mapping with id and title), got {type_name(item)}")
        return None
    tid = _scalar_text(item.get("id"), (*path, "id"), doc)
    label = f"tasks[{tid}]" if tid else f"tasks[#{int(path[-1]) + 1}]"
    before = len(out.problems)

    def bad(key: str, message: str, hint: str = "") -> None:
        out.add((*path, *key.split(".")), f"{label}.{key}", message, hint)

    for key in item:
        if key not in _TASK_KEY_SET and str(key) not in _TASK_KEY_SET:
            out.unknown((*path, str(key)), f"{label}.{key}", str(key), TASK_KEYS,
                        f"task {tid or '#' + str(int(path[-1]) + 1)}")
    if "id" not in item:
        out.add(path, label, "missing id", 'add e.g. id: "1.1"')
    elif tid is None:
        bad("id", f"expected a task id without '/', got {type_name(item.get('id'))}")
    elif (why := name_problem(tid)) is not None:
        bad("id", f"task id {tid!r} {why}", NAME_HINT)
    title = item.get("title")
    if title is None:
        out.add(path, label, "missing title", "add 'title: what the task does'")
    elif not isinstance(title, str):
        bad("title", f"expected a string, got {type_name(title)}")
    for key in ("description", "skill", "tenant", "repo"):
        if item.get(key) is not None and not isinstance(item[key], str):
            bad(key, f"expected a string, got {type_name(item[key])}")
    priority = item.get("priority", 0)
    why = limits.PRIORITY.problem(priority)
    if why:
        bad("priority", why, f"{limits.PRIORITY.hint()}; higher runs first")
    deps_raw = item.get("depends_on")
    deps: list[str] = []
    dep_items: list[tuple[Any, Path_]] = []
    if isinstance(deps_raw, list):
        dep_items = [(d, (*path, "depends_on", j)) for j, d in enumerate(deps_raw)]
    elif isinstance(deps_raw, str) or _is_number(deps_raw):
        dep_items = [(deps_raw, (*path, "depends_on"))]  # a single id is fine
    elif deps_raw is not None:
        bad("depends_on", f"expected a list of task ids, got {type_name(deps_raw)}")
    for dep, dep_path in dep_items:
        text = _scalar_text(dep, dep_path, doc)
        if text is None:
            bad("depends_on", f"expected task ids, got {type_name(dep)}")
        else:
            deps.append(text)
    resources = _parse_resources(item.get("resources"), bad)
    command = item.get("command")
    if command is not None and not (isinstance(command, list) and command
                                    and all(isinstance(x, str) for x in command)):
        hint = ('write it as a list of arguments, e.g. ["python", "agent.py"]; '
                "commands never run through a shell")
        bad("command", f"expected a non-empty list of strings (argv), got {type_name(command)}",
            hint)
    timeout = item.get("timeout")
    why = None if timeout is None else limits.SECONDS.problem(timeout)
    if why:
        bad("timeout", why, limits.SECONDS.hint())
    max_attempts = item.get("max_attempts")
    why = None if max_attempts is None else limits.MAX_ATTEMPTS.problem(max_attempts)
    if why:
        bad("max_attempts", why, limits.MAX_ATTEMPTS.hint())
    metadata = item.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        bad("metadata", f"expected a mapping, got {type_name(metadata)}")
    estimate: float | None = None
    if item.get("estimate") is not None:
        raw_estimate = item["estimate"]
        finite = not limits.is_number(raw_estimate) or limits.GENERIC.problem(raw_estimate) is None
        estimate = parse_duration(raw_estimate) if finite else None
        if estimate is None:
            bad("estimate", f"expected seconds or a duration like '10m', "
                f"got {type_name(raw_estimate)}")
        elif estimate > limits.YEAR:
            bad("estimate", f"must be at most a year ({limits.YEAR} seconds), "
                f"got {limits.describe(estimate)} seconds", "estimate in seconds, m, h or d")
            estimate = None
    optional = item.get("optional", False)
    if not isinstance(optional, bool):
        bad("optional", f"expected true or false, got {type_name(optional)}")
    paths, path_problems = parse_paths(item.get("paths"))
    for index, why in path_problems:
        out.add((*path, "paths") if index is None else (*path, "paths", index),
                f"{label}.paths", why, 'e.g. "src/api/**" or "docs/*.md"')
    if inherited is not None and not any(k in item for k in TASKSET_AGENT_KEYS):
        # What task_agent_fields gives an item without agent keys (checked once per file).
        agent = {**inherited, "agent_options": dict(inherited["agent_options"])}
    else:
        agent = task_agent_fields(item, agent_defaults, path, lambda p, m, h="": bad(
            ".".join(str(x) for x in p[len(path):]), m, h))
    if tid is None:
        return None
    if len(out.problems) > before:
        # Only for the dependency and cycle checks: the fields that matter are valid.
        return Task(id=tid, title="", taskset=taskset.name, dependencies=deps,
                    state=TaskState.BLOCKED if deps else TaskState.READY)
    repo = _resolve_repo(item.get("repo"), base_dir) if item.get("repo") else taskset.repo
    return Task(
        id=tid,
        title=title or "",
        taskset=taskset.name,
        description=item.get("description") or "",
        state=TaskState.BLOCKED if deps else TaskState.READY,
        dependencies=deps,
        required_skill=item.get("skill") or "",
        priority=priority,
        tenant=item.get("tenant") or taskset.tenant or "",
        resources=resources,
        command=list(command) if command is not None else None,
        timeout=float(timeout) if timeout is not None else None,
        max_attempts=max_attempts,
        metadata=dict(metadata),
        repo=repo,
        optional=optional,
        estimated_duration=estimate,
        paths=paths,
        **agent,
    )


def _parse_resources(raw: Any, bad: Callable[..., None]) -> Resources:
    if raw is None:
        return Resources()
    if not isinstance(raw, dict):
        bad("resources", f"expected a mapping like {{cpu: 1, memory_mb: 512}}, "
            f"got {type_name(raw)}")
        return Resources()
    for key in raw:
        if str(key) not in RESOURCE_KEYS:
            close = difflib.get_close_matches(str(key), list(RESOURCE_KEYS), n=1, cutoff=0.5)
            bad(f"resources.{key}", "unknown resource",
                f"did you mean {close[0]!r}?" if close else "valid: cpu, memory_mb")
    cpu, mem = raw.get("cpu", 1.0), raw.get("memory_mb", 512)
    why = limits.CPU.problem(cpu)
    if why:
        bad("resources.cpu", why, limits.CPU.hint())
        cpu = 1.0
    why = limits.MEMORY_MB.problem(mem)
    if why:
        bad("resources.memory_mb", why, limits.MEMORY_MB.hint())
        mem = 512
    return Resources(cpu=float(cpu), memory_mb=int(mem))


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
