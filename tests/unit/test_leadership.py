"""Two replicas of one Dispatcher with ha: (a Lease in memory, one registry): only the leader
dispatches; a standby takes over when the leader's Lease expires and adopts its runners; a leader
that loses the Lease stands down at once and leaves its runners alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.errors import DispatcherStateError
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.leader import LeaderElector, LeaseRecord, MemoryLeaseStore
from necrocode.dispatcher.models import (
    EventType,
    PoolType,
    Runner,
    RunnerState,
    Task,
    Taskset,
    TaskState,
)
from necrocode.dispatcher.registry import MemoryRegistry
from support import wait_until
from test_core import make_config

DURATION, RENEW, RETRY = 1.0, 0.6, 0.1


class Replica:
    def __init__(self, tmp_path: Path, name: str, registry: MemoryRegistry,
                 store: MemoryLeaseStore) -> None:
        self.launcher = FakeLauncher()
        self.elector = LeaderElector(store, name, duration=DURATION, renew_deadline=RENEW,
                                     retry_period=RETRY)
        self.core = DispatcherCore(make_config(tmp_path / name), registry=registry,
                                   launchers={PoolType.LOCAL_PROCESS: self.launcher},
                                   elector=self.elector)

    def state(self) -> str:
        return self.core.snapshot().state


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Replica, Replica, MemoryRegistry, MemoryLeaseStore]]:
    registry, store = MemoryRegistry(), MemoryLeaseStore()
    a = Replica(tmp_path, "replica-a", registry, store)
    a.core.start()
    wait_until(lambda: a.state() == "running", 10, "a leads")
    b = Replica(tmp_path, "replica-b", registry, store)
    b.core.start()
    yield a, b, registry, store
    for r in (a, b):
        if r.core.is_running:
            r.core.stop(timeout=0.5, leave_running=True)


def submit(core: DispatcherCore, *ids: str) -> None:
    core.submit(Taskset(name="ha", tasks=[Task(id=i, title=i, taskset="ha") for i in ids]))


def test_only_the_leader_dispatches_and_the_standby_says_who_leads(pair) -> None:  # noqa: ANN001
    a, b, registry, _ = pair
    submit(a.core, "t1", "t2")
    a.launcher.wait_for_launches(2)
    time.sleep(0.3)
    assert b.launcher.launches == []
    snap = wait_until(lambda: (s := b.core.snapshot()).state == "standby" and s, 5, "standby")
    assert snap.leader == "replica-a" and snap.replica == "replica-b"
    with pytest.raises(DispatcherStateError, match="standby .*leader is replica-a"):
        b.core.cancel("ha/t1")
    assert registry.get_task("ha/t1").state is TaskState.RUNNING


def test_the_standby_takes_over_and_adopts_the_runners_of_a_leader_that_died(pair) -> None:  # noqa: ANN001
    a, b, registry, _ = pair
    submit(a.core, "t1")
    rid = a.launcher.wait_for_launches(1)[0].runner.runner_id
    # the leader dies: it renews no more (its Lease is not released) and its engine is gone,
    # its runner still runs on the platform, where the standby can find it
    a.elector.stop(release=False)
    a.core.stop(timeout=0, leave_running=True)
    b.launcher.add_adoptable(Runner(runner_id=rid, task_key="ha/t1", pool_name="local",
                                    state=RunnerState.RUNNING))
    died = time.monotonic()
    wait_until(lambda: b.state() == "running", 10, "b leads")
    assert time.monotonic() - died >= DURATION * 0.9  # it waited for the Lease to expire
    wait_until(lambda: EventType.RUNNER_ADOPTED in
               [e.event_type for e in registry.get_events(task_key="ha/t1")], 10, "adopted")
    assert b.launcher.launches == []  # never started twice
    b.launcher.finish(rid, 0)
    wait_until(lambda: registry.get_task("ha/t1").state is TaskState.DONE, 10, "t1 done")
    submit(b.core, "t2")
    b.launcher.wait_for_launches(1)


def test_a_leader_that_loses_the_lease_stands_down_at_once(pair) -> None:  # noqa: ANN001
    a, b, registry, store = pair
    submit(a.core, "t1")
    rid = a.launcher.wait_for_launches(1)[0].runner.runner_id
    b.core.stop(timeout=0)  # no standby to take the Lease back
    current = store.get()
    assert current is not None
    store.update(LeaseRecord("someone-else", 60.0, time.time(), time.time(),
                             current.transitions + 1, current.version))
    wait_until(lambda: a.state() == "standby", 10, "a stands down")
    submit(a.core, "t2")
    time.sleep(0.5)
    assert len(a.launcher.launches) == 1  # nothing more is started
    assert a.launcher.stops == [] and rid in a.launcher.running()  # left running
    assert registry.get_task("ha/t1").state is TaskState.RUNNING  # nothing settled
    assert a.core.snapshot().leader == "someone-else"
