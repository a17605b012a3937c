"""DeadlockDetector: cycles (raising and not), tasks blocked for good by a failed root."""

from __future__ import annotations

import pytest
from necrocode.dispatcher.deadlock import DeadlockDetector
from necrocode.dispatcher.errors import DeadlockDetectedError
from necrocode.dispatcher.models import Task, TaskState


def t(i: str, deps: list[str] | None = None, state: TaskState = TaskState.BLOCKED) -> Task:
    return Task(id=i, taskset="chat", dependencies=deps or [], state=state)


def test_no_deadlock() -> None:
    tasks = [t("1", state=TaskState.DONE), t("2", ["1"], TaskState.READY), t("3", ["2"])]
    report = DeadlockDetector().check(tasks)
    assert not report and report.cycles == () and report.blocked_by_failure == ()


def test_simple_cycle_raises_naming_every_task() -> None:
    tasks = [t("1", ["3"]), t("2", ["1"]), t("3", ["2"]), t("4")]
    with pytest.raises(DeadlockDetectedError) as err:
        DeadlockDetector().check(tasks)
    assert err.value.cycles == [["chat/1", "chat/2", "chat/3"]]
    assert "chat/1 -> chat/2 -> chat/3 -> chat/1" in str(err.value)


def test_detect_does_not_raise_and_suggests() -> None:
    report = DeadlockDetector().detect([t("a", ["b"]), t("b", ["a"])])
    (entry,) = report.cycles
    assert entry.kind == "cycle" and entry.tasks == ("chat/a", "chat/b") and entry.root is None
    assert "chat/b on chat/a" in entry.suggestion and "chat/a on chat/b" in entry.suggestion
    assert report.cycle_of("chat/b") == ("chat/a", "chat/b")
    view = report.to_views()[0]
    assert view.kind == "cycle" and view.tasks == ("chat/a", "chat/b")


def test_self_dependency_and_two_separate_cycles() -> None:
    tasks = [t("s", ["s"]), t("a", ["b"]), t("b", ["a"]), t("c", ["d"]), t("d", ["c"])]
    cycles = DeadlockDetector().detect_deadlock(tasks)
    assert sorted(cycles) == [["chat/a", "chat/b"], ["chat/c", "chat/d"], ["chat/s"]]


def test_every_task_of_a_knot_is_named() -> None:
    # two loops sharing chat/a: a<->b and a<->c
    tasks = [t("a", ["b", "c"]), t("b", ["a"]), t("c", ["a"])]
    named = {k for c in DeadlockDetector().detect(tasks).cycles for k in c.tasks}
    assert named == {"chat/a", "chat/b", "chat/c"}


def test_blocked_by_failed_root_transitively() -> None:
    tasks = [
        t("1.1", state=TaskState.FAILED),
        t("1.2", ["1.1"]),
        t("1.3", ["1.2"]),
        t("1.4", ["1.3"], TaskState.CANCELLED),  # terminal itself: not listed as blocked
        t("2.1", state=TaskState.DONE),
        t("2.2", ["2.1"], TaskState.READY),
    ]
    report = DeadlockDetector().check(tasks)  # no cycle: does not raise
    (entry,) = [e for e in report.blocked_by_failure if e.root == "chat/1.1"]
    assert entry.kind == "failed_dependency"
    assert entry.tasks == ("chat/1.2", "chat/1.3")
    assert entry.suggestion == "retry chat/1.1 (the failed root) or cancel chat/1.2, chat/1.3"
    assert report.roots_of("chat/1.3") == ("chat/1.1",)
    assert report.roots_of("chat/2.2") == ()


def test_cancelled_root() -> None:
    tasks = [t("1", state=TaskState.CANCELLED), t("2", ["1"])]
    (entry,) = DeadlockDetector().detect(tasks).blocked_by_failure
    assert entry.root == "chat/1" and "(the cancelled root)" in entry.suggestion


def test_unknown_dependencies_are_ignored() -> None:
    assert not DeadlockDetector().detect([t("1", ["missing"])])
