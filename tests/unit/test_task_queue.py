"""TaskQueue: the seed API, keyed access, lazy deletion and indexes."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.models import Task
from necrocode.dispatcher.task_queue import TaskQueue, default_sort_key


def make(i: int | str, priority: int = 0, ready: float | None = None, **kw: object) -> Task:
    return Task(id=str(i), priority=priority, ready_at=float(i) if ready is None else ready, **kw)


def test_seed_api_orders_by_priority_then_ready_time() -> None:
    q = TaskQueue()
    q.enqueue(make(1, priority=0))
    q.enqueue(make(2, priority=5))
    q.enqueue(make(3, priority=5, ready=0.5))
    assert q.size() == 3
    assert q.peek().id == "3"  # type: ignore[union-attr]
    assert [q.dequeue().id for _ in range(3)] == ["3", "2", "1"]  # type: ignore[union-attr]
    assert q.dequeue() is None and q.peek() is None and q.size() == 0


def test_equal_keys_keep_arrival_order() -> None:
    q = TaskQueue()
    for i in range(5):
        q.enqueue(make(i, ready=1.0))
    assert [q.dequeue().id for _ in range(5)] == ["0", "1", "2", "3", "4"]  # type: ignore


def test_contains_get_remove_by_key() -> None:
    q = TaskQueue()
    t = make(1)
    q.enqueue(t)
    assert "default/1" in q and t in q and len(q) == 1
    assert q.get("default/1") is t
    assert q.remove("default/1") is True
    assert q.remove("default/1") is False
    assert "default/1" not in q and q.peek() is None


def test_enqueue_same_key_replaces() -> None:
    q = TaskQueue()
    q.enqueue(make(1, priority=0))
    q.enqueue(make(1, priority=9))
    assert len(q) == 1
    assert q.dequeue().priority == 9  # type: ignore[union-attr]
    assert q.dequeue() is None


def test_update_priority_reorders_without_rebuild() -> None:
    q = TaskQueue()
    for i in range(5):
        q.enqueue(make(i))
    q.peek()  # build the main index
    assert q.update_priority("default/3", 10) is True
    assert q.update_priority("default/missing", 1) is False
    assert q.peek().id == "3"  # type: ignore[union-attr]
    assert q.get("default/3").priority == 10  # type: ignore[union-attr]


def test_clear_empties_queue_and_indexes() -> None:
    q = TaskQueue()
    for i in range(10):
        q.enqueue(make(i))
    idx = q.index("x", lambda t: t.required_skill, default_sort_key)
    q.clear()
    assert len(q) == 0 and q.peek() is None
    idx = q.index("x", lambda t: t.required_skill, default_sort_key)
    assert idx.group_sizes() == {}
    q.enqueue(make(1))
    assert q.index("x", lambda t: t.required_skill, default_sort_key).group_sizes() == {"": 1}


def test_index_groups_and_delayed_tasks() -> None:
    q = TaskQueue()
    q.enqueue(make(1, required_skill="a"))
    q.enqueue(make(2, required_skill="b"))
    q.enqueue(make(3, required_skill="a", next_attempt_at=100.0))
    idx = q.index("skills", lambda t: t.required_skill, default_sort_key)
    assert idx.group_sizes() == {"a": 1, "b": 1}
    assert idx.next_delayed_at() == 100.0
    assert idx.promote(50.0) == 0
    assert idx.promote(100.0) == 1
    assert idx.group_sizes() == {"a": 2, "b": 1}
    assert idx.take_head("a").id == "1"
    assert "default/1" not in q and len(q) == 2


def test_stale_entries_are_compacted() -> None:
    q = TaskQueue()
    for i in range(1000):
        q.enqueue(make(i))
    q.peek()
    for i in range(999):
        q.remove(f"default/{i}")
    main = q._indexes[TaskQueue._MAIN]
    assert len(main.groups[None]) < 200  # not 1000: stale entries were dropped
    assert q.dequeue().id == "999"  # type: ignore[union-attr]


def test_thread_safe_enqueue_and_dequeue() -> None:
    q = TaskQueue()
    taken: list[str] = []
    lock = threading.Lock()

    def producer(base: int) -> None:
        for i in range(500):
            q.enqueue(make(f"{base}-{i}", ready=float(i)))

    def consumer() -> None:
        for _ in range(2000):
            t = q.dequeue()
            if t is not None:
                with lock:
                    taken.append(t.key)

    threads = [threading.Thread(target=producer, args=(b,)) for b in range(4)]
    threads += [threading.Thread(target=consumer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while (t2 := q.dequeue()) is not None:
        taken.append(t2.key)
    assert len(taken) == 2000 and len(set(taken)) == 2000


ops = st.lists(
    st.tuples(
        st.sampled_from(["enq", "deq", "rm", "prio"]),
        st.integers(0, 30),
        st.integers(-3, 3),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_queue_matches_a_sorted_model(operations: list[tuple[str, int, int]]) -> None:
    q = TaskQueue()
    model: dict[str, Task] = {}
    arrival: dict[str, int] = {}
    n = 0
    for op, i, p in operations:
        key = f"default/{i}"
        if op == "enq":
            model[key] = make(i, priority=p, ready=float(i % 7))
            arrival.setdefault(key, n)
            n += 1
            q.enqueue(model[key])
        elif op == "rm":
            assert q.remove(key) == (key in model)
            model.pop(key, None)
            arrival.pop(key, None)
        elif op == "prio":
            assert q.update_priority(key, p) == (key in model)
        else:
            got = q.dequeue()
            if not model:
                assert got is None
                continue
            best = min(model, key=lambda k: (*default_sort_key(model[k]), arrival[k]))
            assert got is not None and got.key == best
            del model[best], arrival[best]
        assert len(q) == len(model)
        assert set(t.key for t in q) == set(model)


def test_tasks_of_one_group_share_one_group_object() -> None:
    """An index keeps one object per group (not the equal tuple made for each task), built at
    once or maintained, and a first entry's generation is its arrival number."""
    q = TaskQueue()
    for i in range(3):
        q.enqueue(make(i, required_skill="py"))
    built = q.build_index(lambda t: (t.required_skill, 1), default_sort_key)
    kept = q.index("kept", lambda t: (t.required_skill, 1), default_sort_key)
    q.enqueue(make(9, required_skill="py"))
    for idx in (built, kept):
        groups = {id(idx._member[k]) for k in idx._member}
        assert len(groups) == 1 and list(idx.groups) == [("py", 1)]
    assert q._order == {}  # arrival numbers kept apart only for re-enqueued keys
    q.enqueue(make(0, required_skill="py"))  # replaced: keeps its place in ties
    assert list(q._order) == ["default/0"] and q._gen["default/0"] != q._order["default/0"]
    assert [q.dequeue().id for _ in range(4)] == ["0", "1", "2", "9"]  # type: ignore
    assert q._order == {} and q._gen == {}
