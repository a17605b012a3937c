"""Queued task views made, compared and changed fast (one per queued task: 100,000 of them).

:class:`~..snapshot.QueuedTaskView` is a frozen slots dataclass; its ``__init__`` with keyword
arguments goes through ``object.__setattr__`` once per field. :func:`queued_view` and
:func:`view_with` are generated as straight-line code that sets the slots directly (several
times faster: the first snapshot of a big queue makes every view at once). The views they make
are equal to the ones ``QueuedTaskView(...)`` and :func:`dataclasses.replace` make.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ..models import Task, TaskState
from ..snapshot import Pending, QueuedTaskView

_NAMES = tuple(f.name for f in fields(QueuedTaskView))

#: view field -> the expression of its value in :func:`queued_view` (``t``: the task)
_FROM_TASK = {
    "key": "key", "taskset": "t.taskset", "task_id": "t.id", "title": "t.title",
    "state": "t.state", "skill": "t.required_skill", "tenant": "t.tenant",
    "priority": "t.priority", "ready_at": "t.ready_at", "created_at": "t.created_at",
    "attempts": "t.attempts", "pending": "pending", "next_attempt_at": "t.next_attempt_at",
    "in_queue": "in_queue", "branch": "t.branch or t.reserved_branch", "head": "t.head",
    "commits": "t.commits", "files_changed": "t.files_changed", "landed": "t.landed",
    "gate_failed": "t.gate_failed", "rev": "rev",
}


def _generate() -> tuple[Callable[..., QueuedTaskView], Callable[..., QueuedTaskView]]:
    if set(_FROM_TASK) != set(_NAMES):  # a new view field must say where its value comes from
        raise TypeError(f"queued_views: fields {sorted(set(_NAMES) ^ set(_FROM_TASK))} "
                        "differ between QueuedTaskView and _FROM_TASK")
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": QueuedTaskView}
    for name in _NAMES:
        scope[f"_set_{name}"] = getattr(QueuedTaskView, name).__set__
    make = ["def queued_view(key, t, pending, in_queue, rev):", "    new = _new(_cls)"]
    make += [f"    _set_{name}(new, {_FROM_TASK[name]})" for name in _NAMES]
    copy = ["def copy_view(old):", "    new = _new(_cls)"]
    copy += [f"    _set_{name}(new, old.{name})" for name in _NAMES]
    exec("\n".join(make + ["    return new", ""] + copy + ["    return new", ""]),  # noqa: S102
         scope)  # code made from the field names only
    return scope["queued_view"], scope["copy_view"]


_make, _copy = _generate()
_SETTERS: dict[str, Callable[[QueuedTaskView, Any], None]] = {
    name: getattr(QueuedTaskView, name).__set__ for name in _NAMES}


def queued_view(key: str, task: Task, pending: Pending, in_queue: bool,
                rev: int) -> QueuedTaskView:
    """The view of the queued ``task`` (whose key is ``key``)."""
    return _make(key, task, pending, in_queue, rev)


def view_with(view: QueuedTaskView, **changes: Any) -> QueuedTaskView:
    """A copy of ``view`` with ``changes`` applied and ``rev`` bumped."""
    new = _copy(view)
    for name, value in changes.items():
        _SETTERS[name](new, value)
    _SETTERS["rev"](new, view.rev + 1)
    return new


def shows(view: QueuedTaskView, task: Task, pending: Pending, in_queue: bool) -> bool:
    """Whether ``view`` already shows ``task`` with ``pending`` and ``in_queue`` (compared
    field by field instead of keeping a signature tuple per queued task: 25 MB at 100k)."""
    return (view.state is task.state and view.priority == task.priority
            and view.in_queue == in_queue and view.pending == pending
            and view.title == task.title and view.skill == task.required_skill
            and view.tenant == task.tenant and view.ready_at == task.ready_at
            and view.created_at == task.created_at and view.attempts == task.attempts
            and view.next_attempt_at == task.next_attempt_at
            and view.branch == (task.branch or task.reserved_branch)
            and view.head == task.head and view.commits == task.commits
            and view.files_changed == task.files_changed and view.landed == task.landed
            and view.gate_failed == task.gate_failed)


def rest_order(view: QueuedTaskView) -> tuple[bool, int, str]:
    """The order of queued views outside the dispatch order: READY first, then by priority
    (higher first) and key."""
    return (view.state is TaskState.BLOCKED, -view.priority, view.key)
