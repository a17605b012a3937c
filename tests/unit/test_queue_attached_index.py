"""TaskQueue.attach_index: an index of another kind, kept up to date by the queue; pop."""

from __future__ import annotations

from collections.abc import Iterable

from necrocode.dispatcher.models import Task
from necrocode.dispatcher.task_queue import TaskQueue


class Recorder:
    """A MaintainedIndex that records what the queue tells it."""

    def __init__(self, items: Iterable[tuple[str, Task, int, int]]) -> None:
        self.loaded = []
        for key, task, order, gen in items:
            assert key == task.key
            self.loaded.append((key, order, gen))
        self.calls: list[tuple[str, str]] = []

    def add(self, task: Task, order: int, gen: int) -> None:
        self.calls.append(("add", task.key))

    def discard(self, key: str) -> None:
        self.calls.append(("discard", key))

    def cleared(self) -> Recorder:
        return Recorder([])


def test_attach_loads_the_queue_then_follows_every_change() -> None:
    q = TaskQueue()
    q.enqueue(Task(id="a"))
    q.enqueue(Task(id="b"))
    made: list[Recorder] = []

    def make(items: Iterable[tuple[str, Task, int, int]]) -> Recorder:
        made.append(Recorder(items))
        return made[-1]

    idx = q.attach_index("rec", make)
    assert [k for k, _, _ in idx.loaded] == ["default/a", "default/b"]
    assert idx.loaded[0][1] < idx.loaded[1][1]  # arrival order
    assert q.attach_index("rec", make) is idx and len(made) == 1  # built once
    q.enqueue(Task(id="c"))
    q.enqueue(Task(id="a", priority=3))  # replaced: discarded, then added again
    assert q.remove("default/b")
    popped = q.pop("default/c")
    assert popped is not None and popped.id == "c" and "default/c" not in q
    assert q.pop("default/c") is None
    assert idx.calls == [("add", "default/c"), ("discard", "default/a"), ("add", "default/a"),
                         ("discard", "default/b"), ("discard", "default/c")]
    q.clear()
    fresh = q.attach_index("rec", make)
    assert fresh is not idx and fresh.loaded == [] and len(made) == 1


def test_take_for_tells_the_other_indexes_only() -> None:
    q = TaskQueue()
    for tid in ("a", "b"):
        q.enqueue(Task(id=tid))
    one = q.attach_index("one", Recorder)
    two = q.attach_index("two", Recorder)
    with q.lock:
        taken = q.take_for("default/a", one)
        assert q.take_for("default/a", one) is None  # no longer queued
    assert taken is not None and taken.id == "a" and "default/a" not in q and len(q) == 1
    assert one.calls == [] and two.calls == [("discard", "default/a")]
    q.enqueue(Task(id="a"))  # queued again: a new arrival, told to both
    assert one.calls == [("add", "default/a")] == two.calls[1:]
