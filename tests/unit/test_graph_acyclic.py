"""graph.is_acyclic, the quick answer the deadlock watch and the taskset check ask before they
build a graph, agrees with find_cycles; the deadlock detector's quick path reports nothing."""

from __future__ import annotations

import random

from necrocode.dispatcher.deadlock import DeadlockDetector
from necrocode.dispatcher.graph import build_graph, find_cycles, is_acyclic
from necrocode.dispatcher.models import Task, TaskState


def t(i: str, *deps: str, taskset: str = "s") -> Task:
    return Task(id=i, taskset=taskset, dependencies=list(deps))


def test_cases() -> None:
    assert is_acyclic([t("a"), t("b", "a"), t("c", "a", "b", "b")])
    assert is_acyclic([t("a", "missing", "other/x")])  # outside dependencies are ignored
    assert not is_acyclic([t("a", "a")])
    assert not is_acyclic([t("a", "c"), t("b", "a"), t("c", "b"), t("d")])
    assert not is_acyclic([t("a", "o/b"), t("b", "s/a", taskset="o")])  # across tasksets


def test_agrees_with_find_cycles_on_random_graphs() -> None:
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 12)
        tasks = [t(str(i), *(str(rng.randrange(n)) for _ in range(rng.randint(0, 2))))
                 for i in range(n)]
        assert is_acyclic(tasks) == (not find_cycles(build_graph(tasks)))


def test_detector_quick_path_finds_nothing_to_report() -> None:
    tasks = [t(str(i), str(i - 1)) if i else t("0") for i in range(1000)]
    report = DeadlockDetector().detect(tasks)
    assert not report.cycles and not report.blocked_by_failure
    tasks[0].state = TaskState.FAILED  # a failed root: the full check runs
    report = DeadlockDetector().detect(tasks)
    assert report.blocked_by_failure and len(report.blocked_by_failure[0].tasks) == 999
