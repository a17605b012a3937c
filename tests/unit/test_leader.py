"""LeaderElector on an in-memory Lease with a hand-driven clock (the real Lease: tests/k8s)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from necrocode.dispatcher.leader import (
    LeaderElector,
    LeaseConflict,
    LeaseRecord,
    LeaseRefused,
)


class FakeLeaseStore:
    """The LeaseStore interface in memory, with resourceVersion checks like the apiserver's."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.refuse = ""
        self.unreachable = False

    def _check(self) -> None:
        if self.unreachable:
            raise ConnectionError("connection refused")
        if self.refuse:
            raise LeaseRefused(self.refuse)

    def get(self) -> LeaseRecord | None:
        self._check()
        return self.record

    def create(self, record: LeaseRecord) -> LeaseRecord:
        self._check()
        if self.record is not None:
            raise LeaseConflict("exists")
        return self._write(record)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        self._check()
        if self.record is None or record.version != self.record.version:
            raise LeaseConflict("resourceVersion moved")
        return self._write(record)

    def _write(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.record = replace(record, version=str(self.version))
        return self.record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(store: FakeLeaseStore, clock: Clock, identity: str,
            lost: list[str] | None = None) -> LeaderElector:
    return LeaderElector(store, identity, duration=15, renew_deadline=10, retry_period=2,
                         clock=clock, wall=clock,
                         on_lost=(lost.append if lost is not None else None))


def test_first_comer_takes_a_free_lease_the_other_waits_for_its_expiry() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew() and a.is_leader
    assert not b.try_acquire_or_renew() and not b.is_leader and b.holder == "a"
    clock.now += 14.9  # a stopped renewing; b's own clock has not seen 15 s pass
    assert not b.try_acquire_or_renew()
    clock.now += 0.2
    assert b.try_acquire_or_renew() and b.is_leader
    assert store.record is not None and store.record.holder == "b"
    assert store.record.transitions == 1
    assert not a.is_leader  # its renew deadline passed long ago


def test_renewals_keep_the_lease_and_a_standby_measures_from_what_it_saw() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    for _ in range(20):
        clock.now += 2
        assert a.try_acquire_or_renew() and a.is_leader
        assert not b.try_acquire_or_renew()


def test_is_leader_ends_at_the_renew_deadline_without_any_call() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a = elector(store, clock, "a")
    a.try_acquire_or_renew()
    clock.now += 9.9
    assert a.is_leader
    clock.now += 0.2  # the renewing thread may hang on a dead server: is_leader does not wait
    assert not a.is_leader


def test_a_conflicting_write_loses_the_race() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees the record now
    clock.now += 20
    stale = store.record
    assert b.try_acquire_or_renew()
    assert stale is not None
    with pytest.raises(LeaseConflict):  # a write based on the old version is refused
        store.update(replace(stale, holder="a"))


def test_release_lets_a_standby_take_over_at_once() -> None:
    store, clock = FakeLeaseStore(), Clock()
    lost: list[str] = []
    a, b = elector(store, clock, "a", lost), elector(store, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release() and not a.is_leader and lost == ["released"]
    assert b.try_acquire_or_renew() and b.is_leader


def test_a_standby_that_just_arrived_waits_a_full_duration() -> None:
    """Clocks of replicas need not agree: expiry is measured from when *this* replica saw the
    record change, never from the renewTime written by another machine."""
    store, clock = FakeLeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    a.try_acquire_or_renew()
    clock.now += 100  # a is long dead, but b has never looked
    assert not b.try_acquire_or_renew()
    clock.now += 15.1
    assert b.try_acquire_or_renew()


def test_construction_rejects_unsafe_timing() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < duration"):
        LeaderElector(FakeLeaseStore(), "a", duration=10, renew_deadline=10, retry_period=2)
