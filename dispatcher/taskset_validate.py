"""Taskset validation across tasks: names, duplicate ids, dependencies and cycles.

The file parser (:mod:`.tasksets`) checks each task's own fields; this module checks what spans
tasks (and the tasks of the same taskset already in the registry), all in one pass, so every
problem is reported at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence

from . import limits
from .config import DispatcherConfig
from .errors import Problem, TasksetError
from .graph import build_graph, cycle_text, find_cycles, is_acyclic
from .models import Task, Taskset
from .names import name_problem
from .registry.base import TaskRegistry
from .taskset_warnings import command_warnings, quota_warnings

__all__ = ["LocateTask", "validate_all", "validate_taskset"]

#: The fix of a refused taskset name or task id.
NAME_HINT = "use letters, digits, '.', '-' and '_' (no '/', not '.' or '..')"

#: Where a task's field was written: (task id, field) -> ``file:line``.
LocateTask = Callable[[str, str], str]


def validate_taskset(
    taskset: Taskset,
    existing: TaskRegistry | None = None,
    config: DispatcherConfig | None = None,
) -> list[str]:
    """Check names, duplicate ids, dependencies and cycles; returns warnings.

    Dependencies may name tasks of the same taskset already in ``existing``. Raises
    TasksetError with every problem.
    """
    source = taskset.source or f"taskset {taskset.name}"
    problems, warnings = validate_all(taskset, existing, config, lambda tid, field: source)
    if problems:
        raise TasksetError(problems, title=f"invalid taskset {source}; nothing written")
    return warnings


def _cycles(tasks: Iterable[Task], name: str) -> list[list[str]]:
    """One cycle per knot (:func:`~.graph.find_cycles`), searched only when there is one.

    ``tasks`` are the tasks of the taskset ``name``, by id."""
    tasks = list(tasks)
    if _in_order(tasks, name):
        return []
    return [] if is_acyclic(tasks) else find_cycles(build_graph(tasks))


def _in_order(tasks: list[Task], name: str) -> bool:
    """Whether each task comes after every task of ``tasks`` it depends on: they are then
    in an order that runs them all (no cycle), told with a set instead of Kahn's algorithm.
    Most files list a task after what it needs."""
    ids = {t.id for t in tasks}
    prefix = f"{name}/"
    seen: set[str] = set()
    add = seen.add
    for task in tasks:
        for dep in task.dependencies:
            if dep in seen:
                continue
            if "/" in dep:  # a key: of this taskset, or of another (not among the tasks)
                if not dep.startswith(prefix) or dep[len(prefix):] not in ids:
                    continue
                if dep[len(prefix):] in seen:
                    continue
                return False
            if dep in ids:
                return False
        add(task.id)
    return True


def validate_all(
    taskset: Taskset,
    existing: TaskRegistry | None,
    config: DispatcherConfig | None,
    locate: LocateTask,
    also_known: set[str] | None = None,
    *,
    extra: Sequence[tuple[Task, LocateTask, bool]] = (),
    check_name: bool = True,
    fields_checked: bool = False,
) -> tuple[list[Problem], list[str]]:
    """Names, duplicate ids, dependencies and cycles, all in one pass.

    ``extra`` (from the file parser) are tasks not in the taskset whose dependencies are still
    checked; those flagged True also take part in the cycle check. ``fields_checked``: the
    tasks come from the file parser, which checked each id and number where it was written
    (so they are not checked again here).
    """
    problems: list[Problem] = []
    warnings: list[str] = []

    def add(tid: str, field: str, message: str, hint: str = "",
            where: LocateTask = locate) -> None:
        key = f"tasks[{tid}]" + (f".{field}" if field else "")
        problems.append(Problem(where(tid, field), key, message, hint))

    why = name_problem(taskset.name)
    if check_name and why is not None:
        problems.append(Problem(locate("", ""), "taskset",
                                f"invalid taskset name {taskset.name!r}: {why}", NAME_HINT))
    ids: set[str] = set()
    if fields_checked:  # the parser left duplicates out of the taskset
        ids = {task.id for task in taskset.tasks}
    for task in () if fields_checked else taskset.tasks:
        if task.id in ids:
            add(task.id, "id", f"duplicate id {task.id!r}", "give each task its own id")
        ids.add(task.id)
        why = name_problem(task.id)
        if why is not None:
            add(task.id, "id", f"invalid task id {task.id!r}: {why}", NAME_HINT)
        why = limits.task_problem(task)  # a task built in code (a file's are checked already)
        if why is not None:
            add(task.id, "", f"{why}", "numbers must be finite and in range (README: Limits)")
    in_file = ids | (also_known or set())
    known = set(in_file)
    union: dict[str, Task] = {}
    if existing is not None and taskset.name:
        for old in existing.list_tasks(taskset=taskset.name):
            known.add(old.id)
            union[old.id] = old
    checked: list[tuple[Task, LocateTask]] = [(t, locate) for t in taskset.tasks]
    checked += [(t, where) for t, where, _ in extra]
    for task in [*taskset.tasks, *(t for t, _, in_graph in extra if in_graph)]:
        union[task.id] = (task if task.taskset == taskset.name
                          else task.copy(taskset=taskset.name))
    for task, where in checked:
        for dep in task.dependencies:
            if dep == task.id:
                add(task.id, "depends_on", "depends on itself",
                    "remove it from its own depends_on", where)
            elif dep not in known:
                close = difflib.get_close_matches(dep, sorted(known), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else "define that task or remove it"
                add(task.id, "depends_on", f"unknown dependency {dep!r}", hint, where)
    # Cycles among the known edges (an unknown dependency cannot be part of one).
    for cycle in _cycles(union.values(), taskset.name):
        ids_in = [k.rpartition("/")[2] for k in cycle]
        if len(ids_in) == 1:
            continue  # reported above as "depends on itself"
        first = next((i for i in ids_in if i in in_file), ids_in[0])
        add(first, "depends_on", f"dependency cycle: {cycle_text(ids_in)}",
            "remove one dependency of the cycle")
    if config is not None:
        warnings += quota_warnings(taskset, config)
        warnings += command_warnings(taskset, config)
    return problems, warnings
