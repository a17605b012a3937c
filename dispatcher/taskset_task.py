"""One task of a YAML taskset: its own fields checked and built into a :class:`~.models.Task`.

:mod:`.tasksets` parses the file and checks what spans tasks through :mod:`.taskset_validate`;
this module checks each task's keys, types and ranges (every problem with its path, for the
file's line) and builds the task. A 100,000-task file passes through :func:`parse_task`
100,000 times, so the common case (a key absent, a string where a string is expected, an
integer in range) is decided by a type test before the general checks that word a problem.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import limits
from .agents.checks import TASKSET_AGENT_KEYS, task_agent_fields
from .errors import Problem
from .graph import parse_duration
from .models import Resources, Task, Taskset, TaskState, shallow_copy
from .names import name_problem
from .path_claims import parse_paths
from .taskset_validate import NAME_HINT
from .yaml_source import YamlDocument, type_name

Path_ = tuple[str | int, ...]
TASK_KEYS = ("id", "title", "description", "skill", "priority", "depends_on", "resources",
             "command", "timeout", "max_attempts", "tenant", "metadata", "estimate", "optional",
             "repo", "paths", *TASKSET_AGENT_KEYS)
RESOURCE_KEYS = ("cpu", "memory_mb")
_TASK_KEY_SET = frozenset(TASK_KEYS)
_AGENT_KEY_SET = frozenset(TASKSET_AGENT_KEYS)
_RARE_KEY_SET = frozenset(("resources", "command", "timeout", "max_attempts", "metadata",
                           "optional", "paths"))
_PRIO_LOW, _PRIO_HIGH = limits.PRIORITY.low, limits.PRIORITY.high


class Collector:
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


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_url(text: str) -> bool:
    return "://" in text or bool(re.match(r"^[\w.-]+@[\w.-]+:", text))


def resolve_repo(repo: str | None, base_dir: Path | None) -> str | None:
    """A relative repository path against the taskset file's folder (URLs left alone)."""
    if not repo or base_dir is None or _is_url(repo):
        return repo
    p = Path(repo).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def scalar_text(value: Any, path: Path_, doc: YamlDocument) -> str | None:
    """Ids as written: ``1.10`` unquoted is the string "1.10", not the float 1.1."""
    if isinstance(value, str):
        return value
    if _is_number(value):
        return doc.raw.get(path, str(value))
    return None


def parse_task(item: Any, path: Path_, doc: YamlDocument, out: Collector, taskset: Taskset,
               base_dir: Path | None, agent_defaults: dict[str, Any],
               inherited: dict[str, Any] | None = None, proto: Task | None = None
               ) -> Task | None:
    """One task of the file, or None without a usable id; its problems go to ``out``.

    ``inherited``: the agent fields of a task that names none (the taskset's), when those
    cannot be wrong; None to check every task's own way. ``proto``: :func:`prototype` of
    the taskset, made once for all its tasks.
    """
    if not isinstance(item, dict):
        out.add(path, f"tasks[#{path[-1] + 1}]",  # type: ignore[operator]
                f"expected a task (a mapping with id and title), got {type_name(item)}")
        return None
    if proto is not None and inherited is not None and _QUICK_KEY_SET.issuperset(item):
        quick = _quick_task(item, proto, inherited)
        if quick is not None:
            return quick
    get = item.get
    raw_id = get("id")
    tid = raw_id if type(raw_id) is str else scalar_text(raw_id, (*path, "id"), doc)
    label = f"tasks[{tid}]" if tid else f"tasks[#{int(path[-1]) + 1}]"
    before = len(out.problems)

    def bad(key: str, message: str, hint: str = "") -> None:
        out.add((*path, *key.split(".")), f"{label}.{key}", message, hint)

    if not _TASK_KEY_SET.issuperset(item):
        for key in item:
            if key not in _TASK_KEY_SET and str(key) not in _TASK_KEY_SET:
                out.unknown((*path, str(key)), f"{label}.{key}", str(key), TASK_KEYS,
                            f"task {tid or '#' + str(int(path[-1]) + 1)}")
    if "id" not in item:
        out.add(path, label, "missing id", 'add e.g. id: "1.1"')
    elif tid is None:
        bad("id", f"expected a task id without '/', got {type_name(raw_id)}")
    elif (why := name_problem(tid)) is not None:
        bad("id", f"task id {tid!r} {why}", NAME_HINT)
    title = get("title")
    if title is None:
        out.add(path, label, "missing title", "add 'title: what the task does'")
    elif not isinstance(title, str):
        bad("title", f"expected a string, got {type_name(title)}")
    for key in ("description", "skill", "tenant", "repo"):
        value = get(key)
        if value is not None and not isinstance(value, str):
            bad(key, f"expected a string, got {type_name(value)}")
    priority = get("priority", 0)
    if type(priority) is not int or not _PRIO_LOW <= priority <= _PRIO_HIGH:
        why = limits.PRIORITY.problem(priority)
        if why:
            bad("priority", why, f"{limits.PRIORITY.hint()}; higher runs first")
    deps = _dependencies(get("depends_on"), path, doc, bad)
    if _RARE_KEY_SET.isdisjoint(item):  # the common case: each of these at its default
        resources, command, timeout, max_attempts, metadata, optional, paths = (
            Resources(), None, None, None, {}, False, ())
        estimate = _estimate(get("estimate"), bad)
    else:
        (resources, command, timeout, max_attempts, metadata, estimate, optional,
         paths) = _rare_fields(get, path, label, out, bad)
    if inherited is not None and _AGENT_KEY_SET.isdisjoint(item):
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
    repo = get("repo")
    # A copy of a prototype with its fields set: a third of the cost of Task(...) (46
    # keyword arguments, default factories, __post_init__), for what Task(...) would build.
    task = shallow_copy(proto if proto is not None else prototype(taskset))
    task.id = tid
    task.title = title or ""
    task.description = get("description") or ""
    task.state = TaskState.BLOCKED if deps else TaskState.READY
    task.dependencies = deps
    task.required_skill = get("skill") or ""
    task.priority = priority
    tenant = get("tenant")
    if tenant:
        task.tenant = tenant
    task.resources = resources
    task.command = list(command) if command is not None else None
    task.timeout = float(timeout) if timeout is not None else None
    task.max_attempts = max_attempts
    task.metadata = dict(metadata)
    task.repo = resolve_repo(repo, base_dir) if repo else taskset.repo
    task.optional = optional
    task.estimated_duration = estimate
    task.paths = paths
    task.artifacts = []
    task.agent = agent["agent"]
    task.agent_options = agent["agent_options"]
    task.max_cost_usd = agent["max_cost_usd"]
    task.max_tokens = agent["max_tokens"]
    task.max_turns = agent["max_turns"]
    return task


def _rare_fields(get: Callable[..., Any], path: Path_, label: str, out: Collector,
                 bad: Callable[..., None]) -> tuple[Any, ...]:
    """The fields most tasks leave out, checked in this order: resources, command, timeout,
    max_attempts, metadata, (estimate,) optional and paths."""
    raw_resources = get("resources")
    resources = Resources() if raw_resources is None else _parse_resources(raw_resources, bad)
    command = get("command")
    if command is not None and not (isinstance(command, list) and command
                                    and all(isinstance(x, str) for x in command)):
        hint = ('write it as a list of arguments, e.g. ["python", "agent.py"]; '
                "commands never run through a shell")
        bad("command", f"expected a non-empty list of strings (argv), got {type_name(command)}",
            hint)
    timeout = get("timeout")
    why = None if timeout is None else limits.SECONDS.problem(timeout)
    if why:
        bad("timeout", why, limits.SECONDS.hint())
    max_attempts = get("max_attempts")
    why = None if max_attempts is None else limits.MAX_ATTEMPTS.problem(max_attempts)
    if why:
        bad("max_attempts", why, limits.MAX_ATTEMPTS.hint())
    metadata = get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        bad("metadata", f"expected a mapping, got {type_name(metadata)}")
    estimate = _estimate(get("estimate"), bad)
    optional = get("optional", False)
    if not isinstance(optional, bool):
        bad("optional", f"expected true or false, got {type_name(optional)}")
    raw_paths = get("paths")
    paths: tuple[str, ...] = ()
    if raw_paths is not None:
        paths, path_problems = parse_paths(raw_paths)
        for index, why in path_problems:
            out.add((*path, "paths") if index is None else (*path, "paths", index),
                    f"{label}.paths", why, 'e.g. "src/api/**" or "docs/*.md"')
    return resources, command, timeout, max_attempts, metadata, estimate, optional, paths


def _quick_task(item: dict[str, Any], proto: Task, inherited: dict[str, Any]) -> Task | None:
    """The task of an item with only common keys (:data:`_QUICK_KEY_SET`), each of the
    plainest valid kind (strings, an integer priority and estimate in range, a list of string
    ids); None when any is not, for the general checks. It builds what :func:`parse_task`
    builds for the same item."""
    get = item.get
    tid, title = get("id"), get("title")
    if type(tid) is not str or type(title) is not str or name_problem(tid) is not None:
        return None
    task = shallow_copy(proto)
    task.id, task.title = tid, title
    for key, attr in _QUICK_STRINGS:
        value = get(key)
        if value is not None:
            if type(value) is not str:
                return None
            if value:
                setattr(task, attr, value)
    priority = get("priority", 0)  # given as null: refused by the general checks
    if type(priority) is not int or not _PRIO_LOW <= priority <= _PRIO_HIGH:
        return None
    task.priority = priority
    estimate = get("estimate")
    if estimate is not None:
        if type(estimate) is not int or not 0 <= estimate <= limits.YEAR:
            return None
        task.estimated_duration = float(estimate)
    deps = get("depends_on")
    if deps is None:
        task.dependencies = []
    elif type(deps) is list and all(type(d) is str for d in deps):
        task.dependencies = list(deps)
        if deps:
            task.state = TaskState.BLOCKED
    else:
        return None
    task.resources = Resources()
    task.metadata = {}
    task.artifacts = []
    task.agent = inherited["agent"]
    task.agent_options = dict(inherited["agent_options"])
    task.max_cost_usd = inherited["max_cost_usd"]
    task.max_tokens = inherited["max_tokens"]
    task.max_turns = inherited["max_turns"]
    return task


_QUICK_KEY_SET = frozenset(("id", "title", "description", "skill", "tenant", "priority",
                            "estimate", "depends_on"))
_QUICK_STRINGS = (("description", "description"), ("skill", "required_skill"),
                  ("tenant", "tenant"))


def prototype(taskset: Taskset) -> Task:
    """A task of ``taskset`` with every other field at its default, for :func:`parse_task`
    to copy (one per file)."""
    return Task(id="", taskset=taskset.name, tenant=taskset.tenant or "", repo=taskset.repo)


def _dependencies(raw: Any, path: Path_, doc: YamlDocument, bad: Callable[..., None]
                  ) -> list[str]:
    """``depends_on``: a list of ids, or one id; each as written."""
    deps: list[str] = []
    if isinstance(raw, list):
        for j, dep in enumerate(raw):
            text = dep if type(dep) is str else scalar_text(dep, (*path, "depends_on", j), doc)
            if text is None:
                bad("depends_on", f"expected task ids, got {type_name(dep)}")
            else:
                deps.append(text)
    elif isinstance(raw, str) or _is_number(raw):
        text = scalar_text(raw, (*path, "depends_on"), doc)  # a single id is fine
        if text is not None:
            deps.append(text)
    elif raw is not None:
        bad("depends_on", f"expected a list of task ids, got {type_name(raw)}")
    return deps


def _estimate(raw: Any, bad: Callable[..., None]) -> float | None:
    """``estimate``: seconds (a number, or "90s", "10m", "2h") up to a year; None if absent."""
    if raw is None:
        return None
    if type(raw) is int and 0 <= raw <= limits.YEAR:
        return float(raw)
    finite = not limits.is_number(raw) or limits.GENERIC.problem(raw) is None
    estimate = parse_duration(raw) if finite else None
    if estimate is None:
        bad("estimate", f"expected seconds or a duration like '10m', got {type_name(raw)}")
    elif estimate > limits.YEAR:
        bad("estimate", f"must be at most a year ({limits.YEAR} seconds), "
            f"got {limits.describe(estimate)} seconds", "estimate in seconds, m, h or d")
        estimate = None
    return estimate


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

