"""Copy an original NecroCode registry directory into another registry (``necroui
import-necrocode DIR``), for teams that move to the embedded SQLite registry.

Each taskset is submitted with every field of its tasks (the Dispatcher's extras included) and
its event history is copied first, with its own times. States: DONE and CANCELLED are kept;
READY and BLOCKED follow the dependencies, as on any submit; FAILED is kept where the task is
free to run (else it waits BLOCKED behind its dependencies); RUNNING becomes READY, since no
runner of this Dispatcher holds it, and runs again. A taskset the target already has is updated
like a resubmit (states kept) and its events are not copied twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidTransitionError
from ..models import EventType, TaskEvent, TaskState
from .base import TaskRegistry


@dataclass
class ImportedTaskset:
    """What the import did with one taskset."""

    name: str
    tasks: int
    created: int
    updated: int
    events: int
    states: dict[str, int] = field(default_factory=dict)  # state value -> tasks, after
    requeued: list[str] = field(default_factory=list)  # RUNNING in the source, READY now
    not_failed: list[str] = field(default_factory=list)  # FAILED there, BLOCKED here


def import_tasksets(source: TaskRegistry, target: TaskRegistry) -> list[ImportedTaskset]:
    """Copy every taskset of ``source`` into ``target`` (see the module doc)."""
    known = {t.name for t in target.list_tasksets()}
    out = []
    for info in source.list_tasksets():
        taskset = source.get_taskset(info.name)
        if taskset is None:
            continue
        events = 0
        if taskset.name not in known:
            history = [e for e in source.get_events() if e.task_key is not None
                       and e.task_key.rpartition("/")[0] == taskset.name]
            target.record_events(history)
            events = len(history)
        wanted = {t.key: t.state for t in taskset.tasks}
        result = target.submit_taskset(taskset)
        report = ImportedTaskset(taskset.name, len(taskset.tasks), len(result.created),
                                 len(result.updated), events)
        for key in result.created:
            if wanted[key] is TaskState.RUNNING:
                report.requeued.append(key)
            elif wanted[key] is TaskState.FAILED:
                try:
                    target.transition(key, TaskState.FAILED, expected=TaskState.READY,
                                      event=TaskEvent(EventType.TASK_FAILED, message="failed "
                                                      "in the NecroCode registry imported"))
                except InvalidTransitionError:
                    report.not_failed.append(key)
        counts = target.count_tasks(taskset=taskset.name)
        report.states = {s.value: n for s, n in counts.items() if n}
        out.append(report)
    return out
