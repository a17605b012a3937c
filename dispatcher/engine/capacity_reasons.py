"""CapacityReasons: which queued views show the scheduler's capacity answer for their task's
shape, grouped by the answer each shows, so that a change of the pools updates exactly the views
whose reason changed (O(views changed), not a pass over every queued task).

A READY task that waits for capacity shows the scheduler's explanation for its *shape* (skill,
cores, memory), which is the same for every task of that shape. When the pools change, the
snapshot builder asks the scheduler again once per shape (:meth:`CapacityReasons.refresh`) and
gets back the views to update: the members of the groups whose shown answer is no longer the
shape's answer. A view rebuilt on its own (its task changed) is placed in the group of the answer
it now shows (:meth:`shown`); a view that leaves is forgotten (:meth:`forget`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..models import Task
from ..snapshot import Pending

Shape = tuple[Any, ...]
_Group = tuple[Shape, Pending]


def shape_of(task: Task) -> Shape:
    """What a READY task's capacity reason depends on (the scheduler explains per shape)."""
    return (task.required_skill, task.resources.cpu, task.resources.memory_mb)


class CapacityReasons:
    """Views by (shape, answer shown) (engine thread only)."""

    def __init__(self) -> None:
        self._group_of: dict[str, _Group] = {}  # key -> the group its view is in
        self._members: dict[_Group, set[str]] = {}
        self._groups: dict[_Group, _Group] = {}  # one tuple per group
        self._shapes: dict[Shape, Shape] = {}  # one tuple per shape
        self._sample: dict[Shape, Task] = {}  # a task of each shape, to ask the scheduler with

    def __len__(self) -> int:
        return len(self._group_of)

    def shown(self, key: str, task: Task, answer: Pending) -> None:
        """``key``'s view now shows the capacity ``answer`` for its task's shape."""
        shape = shape_of(task)
        shape = self._shapes.setdefault(shape, shape)
        self._sample[shape] = task
        group = (shape, answer)
        group = self._groups.setdefault(group, group)
        old = self._group_of.get(key)
        if old is group:
            return
        if old is not None:
            self._leave(key, old)
        self._group_of[key] = group
        self._members.setdefault(group, set()).add(key)

    def forget(self, key: str) -> None:
        """``key``'s view shows something else now, or is gone."""
        old = self._group_of.pop(key, None)
        if old is not None:
            self._leave(key, old)

    def refresh(self, explain: Callable[[Task], Pending],
                failed: Callable[[Exception, Task], None]) -> list[tuple[str, Pending]]:
        """Ask ``explain`` once per shape; ``(key, answer)`` for each view whose shown answer
        is no longer its shape's (the caller updates the view), each moved into its new
        group. A shape whose explanation raised keeps its views as they are."""
        moved: list[tuple[str, Pending]] = []
        answers: dict[Shape, Pending] = {}
        for shape, task in list(self._sample.items()):
            try:
                answers[shape] = explain(task)
            except Exception as exc:
                failed(exc, task)
        for group in [g for g in self._members if g[0] in answers and answers[g[0]] != g[1]]:
            shape = group[0]
            keys = self._members.pop(group)
            del self._groups[group]
            target = (shape, answers[shape])
            target = self._groups.setdefault(target, target)
            self._members.setdefault(target, set()).update(keys)
            for key in keys:
                self._group_of[key] = target
                moved.append((key, target[1]))
        return moved

    def _leave(self, key: str, group: _Group) -> None:
        members = self._members.get(group)
        if members is None:
            return
        members.discard(key)
        if not members:
            del self._members[group]
            del self._groups[group]
            shape = group[0]
            if not any(g[0] == shape for g in self._members):
                self._sample.pop(shape, None)
                self._shapes.pop(shape, None)
