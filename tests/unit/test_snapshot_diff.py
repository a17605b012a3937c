"""Snapshot diffs round-trip: apply(old, diff(old, new)) is new, and the diff is small."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from necrocode.dispatcher.models import (
    EventType,
    PoolStatus,
    PoolType,
    RunnerState,
    TaskEvent,
    TaskState,
)
from necrocode.dispatcher.snapshot import (
    Counters,
    FinishedTaskView,
    Pending,
    PendingReason,
    QueuedTaskView,
    RunningTaskView,
    Snapshot,
)
from necrocode.dispatcher.snapshot_diff import SnapshotHistory, apply, diff, snapshot_from_dict

T0 = 1_700_000_000.0


def q(i: int, rev: int = 1, prio: int = 0) -> QueuedTaskView:
    return QueuedTaskView(f"ts/{i}", "ts", str(i), f"task {i}", TaskState.READY, "s", "t", prio,
                          T0, T0, 0, Pending(PendingReason.POOL_FULL, "pool full"),
                          rev=rev)


def r(i: int) -> RunningTaskView:
    return RunningTaskView(f"ts/r{i}", "ts", f"r{i}", "run", "s", "t", 0, f"runner-{i}", "local",
                           None, 1, T0, T0 + i, RunnerState.RUNNING, progress="working")


def f(i: int) -> FinishedTaskView:
    return FinishedTaskView(f"ts/f{i}", "ts", f"f{i}", "fin", TaskState.FAILED, 2, T0, T0 + 9,
                            "exit 1", "local")


def snap(version: int, queued: list[QueuedTaskView], **kw: object) -> Snapshot:
    defaults: dict[str, object] = dict(
        pools=(PoolStatus("local", PoolType.LOCAL_PROCESS, 1, 4, 0.25, 1.0, None, 10, None),),
        running=(r(1),), finished=(f(1),),
        events=tuple(TaskEvent(EventType.TASK_CREATED, f"ts/{i}", T0 + i, "x", seq=i)
                     for i in range(5)),
        counters=Counters(total=10, ready=len(queued)), throughput=(1, 2))
    defaults.update(kw)
    return Snapshot(version=version, taken_at=T0 + version, state="running", policy="fifo",
                    max_global_concurrency=8, registry_path="r.db", api_url=None,
                    queued=tuple(queued), **defaults)  # type: ignore[arg-type]


def same(a: Snapshot, b: Snapshot) -> None:
    assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)


def test_full_then_changes_round_trip() -> None:
    rng = random.Random(7)
    queue = [q(i) for i in range(300)]
    old = snap(1, queue)
    client = apply(None, json.loads(json.dumps(diff(None, old))))
    same(client, old)
    for version in range(2, 12):
        queue = [v for v in queue if rng.random() > 0.02]
        for i in rng.sample(range(len(queue)), 3):
            queue[i] = dataclasses.replace(queue[i], priority=queue[i].priority + 1, rev=version)
        queue.append(q(1000 + version, rev=version))
        if version % 3 == 0:
            queue.sort(key=lambda v: -v.priority)  # a re-order: the order is sent
        events = tuple(TaskEvent(EventType.TASK_READY, "ts/1", T0 + s, "y", seq=s)
                       for s in range(10 * version, 10 * version + 5))
        new = snap(version, queue, events=events,
                   running=(r(1), r(version)), finished=(f(version), f(1)),
                   counters=Counters(total=10, ready=len(queue), retried=version))
        wire = json.loads(json.dumps(diff(old, new)))
        client = apply(client, wire)
        same(client, new)
        old = new


def test_an_unchanged_queue_sends_no_rows() -> None:
    queue = [q(i) for i in range(1000)]
    old = snap(1, queue)
    new = snap(2, [dataclasses.replace(v) for v in queue])
    data = diff(old, new)
    assert data["queued"] == {"upsert": [], "remove": []}
    assert len(json.dumps(data)) < len(json.dumps(diff(None, new))) / 20


def test_a_diff_from_another_base_is_refused() -> None:
    a, b, c = snap(1, [q(1)]), snap(2, [q(2)]), snap(3, [q(3)])
    with pytest.raises(ValueError, match="does not apply"):
        apply(a, diff(b, c))


def test_history_keeps_the_newest() -> None:
    history = SnapshotHistory(size=2)
    for v in (1, 2, 3):
        history.add(snap(v, []))
    assert history.get(1) is None and history.get(3) is not None


def test_snapshot_from_dict_ignores_fields_it_does_not_know() -> None:
    data = snap(1, [q(1)]).to_dict()
    data["queued"][0]["usage"] = {"cost_usd": 1.5}  # a newer server's extra field
    assert snapshot_from_dict(data).queued[0].key == "ts/1"


def test_usage_and_capacity_come_back_as_they_were() -> None:
    from necrocode.dispatcher.models import Usage

    spent = Usage(1200, 300, 100, 0.42, 3)
    running = dataclasses.replace(r(1), agent="codex", usage=spent)
    finished = dataclasses.replace(f(1), usage=Usage(50, 5))
    old = snap(1, [q(1)], capacity=3)
    new = snap(2, [q(1)], capacity=5, running=(running,), finished=(finished,),
               counters=Counters(total=10, usage=spent))
    for client in (apply(apply(None, diff(None, old)), json.loads(json.dumps(diff(old, new)))),
                   apply(None, json.loads(json.dumps(diff(None, new))))):
        same(client, new)
        assert client.capacity == 5
        assert client.running[0].usage == spent and client.finished[0].usage == Usage(50, 5)
        assert isinstance(client.counters.usage, Usage)
        assert client.counters.usage.total_tokens == 1500
        hash(client.running[0].usage)  # the console's row signatures hash it
