"""queued_views: generated construction and copies equal to the dataclass's own."""

from __future__ import annotations

from dataclasses import replace

from necrocode.dispatcher.engine.queued_views import queued_view, shows, view_with
from necrocode.dispatcher.models import Task, TaskState
from necrocode.dispatcher.snapshot import Pending, PendingReason, QueuedTaskView, work_fields

WAIT = Pending(PendingReason.POOL_FULL, "pool 'p' full (2/2)")


def _task() -> Task:
    return Task("7", title="t", taskset="s", state=TaskState.READY, required_skill="py",
                tenant="x", priority=3, ready_at=2.0, created_at=1.0, attempts=1,
                next_attempt_at=9.0, reserved_branch="b7", head="h", commits=2,
                files_changed=("f",), landed="main", gate_failed="g")


def test_queued_view_equals_the_constructor() -> None:
    t = _task()
    expected = QueuedTaskView(
        key=t.key, taskset=t.taskset, task_id=t.id, title=t.title, state=t.state,
        skill=t.required_skill, tenant=t.tenant, priority=t.priority, ready_at=t.ready_at,
        created_at=t.created_at, attempts=t.attempts, in_queue=False, pending=WAIT,
        next_attempt_at=t.next_attempt_at, rev=4, **work_fields(t))
    got = queued_view(t.key, t, WAIT, False, 4)
    assert type(got) is QueuedTaskView and got == expected and got.branch == "b7"
    assert shows(got, t, WAIT, False) and not shows(got, t, WAIT, True)
    assert not shows(got, replace(t, title="other"), WAIT, False)


def test_view_with_changes_fields_and_bumps_rev_only() -> None:
    t = _task()
    view = queued_view(t.key, t, WAIT, True, 0)
    other = Pending(PendingReason.QUEUED, "queued")
    changed = view_with(view, pending=other, in_queue=False)
    assert changed == replace(view, pending=other, in_queue=False, rev=1)
    assert view.rev == 0 and view.pending == WAIT  # the original is untouched
