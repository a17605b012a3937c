"""CapacityReasons: a change of the pools updates exactly the views whose shape's answer is not
the one they show, and only those (checked against a plain model of every view)."""

from __future__ import annotations

import random

from necrocode.dispatcher.engine.capacity_reasons import CapacityReasons, shape_of
from necrocode.dispatcher.models import Resources, Task
from necrocode.dispatcher.snapshot import Pending, PendingReason


def _task(i: int, skill: str, cpu: float) -> Task:
    return Task(id=str(i), title="t", taskset="c", required_skill=skill,
                resources=Resources(cpu=cpu, memory_mb=512))


ANSWERS = [Pending(PendingReason.POOL_FULL, f"pools full ({n}/4)") for n in range(3)]


def test_refresh_moves_exactly_the_views_whose_answer_changed() -> None:
    rng = random.Random(3)
    reasons = CapacityReasons()
    tasks = {f"c/{i}": _task(i, rng.choice("ab"), rng.choice((1.0, 2.0))) for i in range(200)}
    shown: dict[str, Pending] = {}  # the model: what each view shows
    for step in range(300):
        for _ in range(rng.choice((0, 1, 5, 30))):
            key = rng.choice(sorted(tasks))
            if rng.random() < 0.3:
                reasons.forget(key)
                shown.pop(key, None)
            else:
                answer = rng.choice(ANSWERS)
                reasons.shown(key, tasks[key], answer)
                shown[key] = answer
        if step % 3:
            continue
        current = {shape: rng.choice(ANSWERS)
                   for shape in {shape_of(t) for t in tasks.values()}}
        broken = shape_of(tasks["c/0"]) if step % 9 == 0 else None

        def explain(task: Task, current: dict = current, broken: object = broken) -> Pending:
            if shape_of(task) == broken:
                raise RuntimeError("no answer")
            return current[shape_of(task)]

        failures: list[str] = []

        def failed(exc: Exception, task: Task, failures: list[str] = failures) -> None:
            failures.append(task.key)

        moved = reasons.refresh(explain, failed)
        expected = {key: current[shape_of(tasks[key])] for key, answer in shown.items()
                    if shape_of(tasks[key]) != broken
                    and answer != current[shape_of(tasks[key])]}
        assert dict(moved) == expected and len(moved) == len(expected)
        shown.update(expected)
        assert bool(failures) == (broken is not None and any(
            shape_of(tasks[k]) == broken for k in shown))
        assert len(reasons) == len(shown)
        # asked again with the same answers: nothing moves
        assert reasons.refresh(explain, lambda exc, task: None) == []
