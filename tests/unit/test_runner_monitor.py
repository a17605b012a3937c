"""RunnerMonitor: heartbeat ages, timeouts, never-heartbeated runners, task timeouts."""

from __future__ import annotations

import pytest
from necrocode.dispatcher.models import Runner, RunnerState, Task
from necrocode.dispatcher.runner_monitor import RunnerMonitor


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_runner(rid: str, clock: FakeClock, key: str = "set/1") -> Runner:
    return Runner(runner_id=rid, task_key=key, pool_name="local", started_at=clock(),
                  state=RunnerState.RUNNING, handle="123")


def test_never_heartbeated_runner_is_judged_from_start(clock: FakeClock) -> None:
    mon = RunnerMonitor(heartbeat_timeout=60, clock=clock)
    mon.add_runner(make_runner("r1", clock))
    clock.t += 59
    assert mon.check_heartbeats() == []
    clock.t += 2
    assert mon.check_heartbeats() == ["r1"]


def test_heartbeat_resets_age_and_records_progress(clock: FakeClock) -> None:
    mon = RunnerMonitor(heartbeat_timeout=10, clock=clock)
    mon.add_runner(make_runner("r1", clock))
    clock.t += 8
    assert mon.update_heartbeat("r1", progress="50%") is True
    clock.t += 8
    assert mon.check_heartbeats() == []
    info = mon.get_runner_status("r1")
    assert info is not None
    assert info.heartbeat_age == pytest.approx(8)
    assert info.runtime == pytest.approx(16)
    assert info.progress == "50%"
    assert info.last_heartbeat == pytest.approx(1008)
    clock.t += 3
    assert mon.check_heartbeats() == ["r1"]


def test_touch_counts_as_sign_of_life(clock: FakeClock) -> None:
    mon = RunnerMonitor(heartbeat_timeout=10, clock=clock)
    mon.add_runner(make_runner("r1", clock))
    clock.t += 9
    assert mon.touch("r1")
    clock.t += 9
    assert mon.check_heartbeats() == []
    # an older sign of life never moves the clock back
    mon.touch("r1", at=clock.t - 100)
    assert mon.get_runner_status("r1").heartbeat_age == pytest.approx(9)  # type: ignore[union-attr]


def test_unknown_runner_and_remove(clock: FakeClock) -> None:
    mon = RunnerMonitor(heartbeat_timeout=5, clock=clock)
    assert mon.update_heartbeat("nope") is False
    assert mon.touch("nope") is False
    assert mon.get_runner_status("nope") is None
    mon.add_runner(make_runner("r1", clock))
    assert "r1" in mon and len(mon) == 1
    info = mon.remove_runner("r1")
    assert info is not None and info.runner_id == "r1"
    assert mon.remove_runner("r1") is None
    clock.t += 100
    assert mon.check_heartbeats() == []
    assert mon.all() == []


def test_finished_runners_are_not_reported(clock: FakeClock) -> None:
    mon = RunnerMonitor(heartbeat_timeout=5, clock=clock)
    mon.add_runner(make_runner("r1", clock))
    mon.add_runner(make_runner("r2", clock))
    mon.set_state("r1", RunnerState.COMPLETED)
    clock.t += 10
    assert mon.check_heartbeats() == ["r2"]
    assert {i.runner_id: i.state for i in mon.all()} == {
        "r1": RunnerState.COMPLETED, "r2": RunnerState.RUNNING}


def test_adopted_runner_judged_from_adoption(clock: FakeClock) -> None:
    mon = RunnerMonitor(heartbeat_timeout=10, clock=clock)
    old = make_runner("r1", clock)
    clock.t += 1000  # dispatcher was down for a while
    mon.add_runner(old, last_seen=clock())
    assert mon.check_heartbeats() == []
    assert mon.next_deadline() == pytest.approx(clock.t + 10)


def test_task_timeouts(clock: FakeClock) -> None:
    mon = RunnerMonitor(heartbeat_timeout=1000, clock=clock)
    mon.add_runner(make_runner("r1", clock, key="s/1"))
    mon.add_runner(make_runner("r2", clock, key="s/2"))
    tasks = [Task(id="1", taskset="s", timeout=30), Task(id="2", taskset="s")]
    clock.t += 31
    assert mon.check_timeouts(tasks) == ["r1"]
    assert mon.check_timeouts({t.key: t for t in tasks}) == ["r1"]


def test_rejects_bad_timeout() -> None:
    with pytest.raises(ValueError):
        RunnerMonitor(heartbeat_timeout=0)
