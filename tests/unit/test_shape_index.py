"""The Scheduler's int-keyed index (ShapeIndex), int sort keys and the round's partition pickers."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import AgentPool, Task
from necrocode.dispatcher.policies import (
    FairSharePolicy,
    FifoPolicy,
    PartitionPicker,
    PriorityPolicy,
    SkillBasedPolicy,
    float_code,
)
from necrocode.dispatcher.shape_index import ShapeIndex
from necrocode.dispatcher.task_queue import TaskQueue

finite = st.floats(allow_nan=False, allow_infinity=True, width=64)


@given(finite, finite)
def test_float_code_orders_like_the_floats(a: float, b: float) -> None:
    assert (float_code(a) < float_code(b)) == (a < b)
    assert (float_code(a) == float_code(b)) == (a == b)
    assert 0 <= float_code(a) < 2**64


task_st = st.builds(
    lambda i, p, r: Task(id=str(i), priority=p, ready_at=r),
    st.integers(0, 10**6), st.integers(-10**9, 10**9),
    st.floats(-1e12, 1e12, allow_nan=False),
)


@settings(max_examples=200)
@given(task_st, task_st, st.sampled_from([0.0, 30.0, 1e-3]))
def test_int_sort_keys_order_like_sort_key(a: Task, b: Task, aging: float) -> None:
    for policy in (FifoPolicy(), PriorityPolicy(DispatcherConfig(priority_aging_seconds=aging))):
        code = policy.int_sort_key()
        assert code is not None
        ka, kb = policy.sort_key(a, 0.0), policy.sort_key(b, 0.0)
        assert (code(a) < code(b)) == (ka < kb)
        assert (code(a) == code(b)) == (ka == kb)


def test_a_subclass_with_its_own_order_gets_no_int_key() -> None:
    class Shortest(PriorityPolicy):
        def sort_key(self, task: Task, now: float) -> Any:
            return (task.estimated_duration or 0.0,)

    assert Shortest().int_sort_key() is None
    assert SkillBasedPolicy().int_sort_key() is not None  # same order as priority


def by_skill(task: Task) -> str:
    return task.required_skill


def index_of(q: TaskQueue, ints: bool) -> ShapeIndex:
    policy = PriorityPolicy()
    code = policy.int_sort_key()
    assert code is not None

    def make(items: Iterable[tuple[str, Task, int, int]]) -> ShapeIndex:
        key = code if ints else (lambda t: policy.sort_key(t, 0.0))
        return ShapeIndex.build(q, by_skill, key, items, int_keys=ints)

    return q.attach_index(f"test-{ints}", make)


def drain(idx: ShapeIndex, group: str) -> list[str]:
    out = []
    while idx.head(group) is not None:
        task, key, nxt = idx.take_head(group)
        assert task.key == key
        assert nxt is None or nxt == idx.head(group)
        out.append(task.id)
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**16), st.booleans())
def test_index_follows_the_queue_like_a_sort(seed: int, ints: bool) -> None:
    """Random enqueues, replacements (new priorities), removals and retry times: each group
    hands out its tasks in (priority, ready time, arrival) order, skipping stale entries."""
    rng = random.Random(seed)
    q = TaskQueue()
    for i in range(rng.randint(0, 30)):  # some before the index exists, some after
        q.enqueue(Task(id=str(i), required_skill=rng.choice("ab"), priority=rng.randint(0, 3),
                       ready_at=float(rng.randint(0, 5))))
    idx = index_of(q, ints)
    arrival = {t.key: n for n, t in enumerate(q.tasks())}
    for i in range(30, 30 + rng.randint(0, 200)):
        op = rng.random()
        keys = sorted(t.key for t in q.tasks())
        if op < 0.4 or not keys:
            task = Task(id=str(i), required_skill=rng.choice("ab"), priority=rng.randint(0, 3),
                        ready_at=float(rng.randint(0, 5)),
                        next_attempt_at=rng.choice([None, None, 10.0, 20.0]))
            q.enqueue(task)
            arrival.setdefault(task.key, len(arrival))
        elif op < 0.7:
            q.update_priority(rng.choice(keys), rng.randint(0, 3))
        else:
            q.remove(rng.choice(keys))
    waiting = sorted(t.key for t in q.tasks() if t.next_attempt_at is not None)
    assert sorted(idx.delayed_keys()) == waiting
    idx.promote(15.0)
    assert sorted(idx.delayed_keys()) == sorted(
        t.key for t in q.tasks() if (t.next_attempt_at or 0.0) > 15.0)
    due = [t for t in q.tasks() if (t.next_attempt_at or 0.0) <= 15.0]
    sizes = idx.group_sizes()
    for skill in "ab":
        mine = [t for t in due if t.required_skill == skill]
        assert sizes.get(skill, 0) == len(mine)
        assert sorted(t.key for t in idx.live_tasks(skill)) == sorted(t.key for t in mine)
        expect = sorted(mine, key=lambda t: (-t.priority, t.ready_at, arrival[t.key]))
        assert drain(idx, skill) == [t.id for t in expect]
    assert idx.next_delayed_at() == (20.0 if any(t.next_attempt_at == 20.0 for t in q.tasks())
                                     else None)


def test_many_removals_compact_the_heap_and_clear_resets() -> None:
    q = TaskQueue()
    for i in range(500):
        q.enqueue(Task(id=str(i), ready_at=float(i)))
    idx = index_of(q, True)
    for i in range(0, 450):
        q.remove(f"default/{i}")
    assert len(idx.groups[""]) < 200  # compacted, not 500 entries
    assert drain(idx, "")[:3] == ["450", "451", "452"]
    q.enqueue(Task(id="x"))
    q.clear()
    assert index_of(q, True).group_sizes() == {}


def test_round_robin_picker_matches_pick_partition() -> None:
    rng = random.Random(3)
    fast, slow = SkillBasedPolicy(), SkillBasedPolicy()
    for _ in range(20):  # rounds
        picker = fast.picker(0.0)
        assert type(picker) is not PartitionPicker
        reference = PartitionPicker(slow, 0.0)
        cands = set(rng.sample(["a", "b", "c", "d", ""], rng.randint(1, 5)))
        while cands:
            got = picker.pick(cands)
            assert got == reference.pick(cands)
            task = Task(id="t", required_skill=str(got))
            picker.assigned(task, AgentPool("p"))
            reference.assigned(task, AgentPool("p"))
            if rng.random() < 0.3:
                cands.discard(rng.choice(sorted(cands)))


def test_fair_share_picker_matches_pick_partition() -> None:
    config = DispatcherConfig(fair_share_weights={"t0": 1, "t1": 3, "t2": 2})
    rng = random.Random(5)
    fast, slow = FairSharePolicy(config), FairSharePolicy(config)
    now = 1000.0
    n = 0
    for _ in range(15):  # rounds: usage recorded and runners released between them
        now += rng.choice([0.0, 10.0, 100.0])
        for policy in (fast, slow):
            policy.record_usage("t1", 30.0, now)
        picker = fast.picker(now)
        assert type(picker) is not PartitionPicker
        cands = set(rng.sample(["t0", "t1", "t2", "t3"], rng.randint(1, 4)))
        while cands:
            got = picker.pick(cands)
            assert got == slow.pick_partition(sorted(cands), now)
            task = Task(id=str(n), taskset="x", tenant=str(got))
            n += 1
            picker.assigned(task, AgentPool("p"))
            slow.on_assigned(task, AgentPool("p"), now)
            if rng.random() < 0.2:
                cands.discard(rng.choice(sorted(cands)))
        picker.close()  # the round's runners reach the policy's books here
        for i in rng.sample(range(n), min(n, 3)):
            for policy in (fast, slow):
                policy.on_released(f"x/{i}")
    for tenant in ("t0", "t1", "t2", "t3"):
        assert fast.usage(tenant, now) == slow.usage(tenant, now)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.booleans())
def test_a_late_index_keeps_arrival_and_the_unkeyed_group_is_never_keyed(
        seed: int, ints: bool) -> None:
    """Built after replacements (arrival kept, a new generation): ordered_keys gives what
    draining the groups in order gives; tasks of the unkeyed group never reach key_fn and
    keep their arrival order."""
    rng = random.Random(seed)
    q = TaskQueue()
    for i in range(rng.randint(1, 40)):
        q.enqueue(Task(id=str(i), required_skill=rng.choice(["a", "b", "bad"]),
                       priority=rng.randint(0, 3), ready_at=float(rng.randint(0, 5))))
    arrival = {t.key: n for n, t in enumerate(q.tasks())}
    for key in rng.sample(sorted(arrival), k=len(arrival) // 3):
        q.update_priority(key, rng.randint(0, 3))  # before the index exists
    policy = PriorityPolicy()
    code = policy.int_sort_key()
    assert code is not None

    def key_fn(task: Task) -> Any:
        assert task.required_skill != "bad", "key_fn asked about an unkeyed task"
        return code(task) if ints else policy.sort_key(task, 0.0)

    idx = q.attach_index("late", lambda items: ShapeIndex.build(
        q, by_skill, key_fn, items, int_keys=ints, unkeyed="bad"))
    q.enqueue(Task(id="late", required_skill="bad", priority=9))  # after: through add
    arrival["default/late"] = len(arrival)
    for skill in ("a", "b"):
        mine = [t for t in q.tasks() if t.required_skill == skill]
        expect = [t.id for t in sorted(mine, key=lambda t: (-t.priority, t.ready_at,
                                                            arrival[t.key]))]
        assert [k.split("/")[1] for k in idx.ordered_keys([skill])] == expect
        assert drain(idx, skill) == expect
    bad = sorted((t for t in q.tasks() if t.required_skill == "bad"), key=lambda t: arrival[t.key])
    assert idx.ordered_keys(["bad"]) == [t.key for t in bad]
