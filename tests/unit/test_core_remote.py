"""necroui.headless (run_headless, its until-done rule) and necroui.remote against a real API."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.errors import DispatcherError
from necrocode.dispatcher.models import AgentPool, EventType, Task, TaskEvent, Taskset, TaskState
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.snapshot import (
    Counters,
    Pending,
    PendingReason,
    QueuedTaskView,
    Snapshot,
)
from support import wait_until

from necroui import remote
from necroui.headless import format_event, is_settled, run_headless


def config_for(tmp_path: Path, **overrides: Any) -> DispatcherConfig:
    base: dict[str, Any] = dict(
        registry_path=str(tmp_path / "reg.db"), state_dir=str(tmp_path / "state"),
        poll_interval=0.5, retry_backoff_base=0.05, retry_jitter=0.0, runner_stop_grace=0.2,
        graceful_shutdown_timeout=2.0,
        agent_pools=[AgentPool(name="local", max_concurrency=2)],
        skill_mapping={"default": ["local"]})
    base.update(overrides)
    return DispatcherConfig(**base)


def submit(config: DispatcherConfig, *tasks: Task) -> None:
    registry = open_registry(config.resolved_registry_path())
    try:
        for t in tasks:
            t.taskset = "h"
            t.tenant = "h"
        registry.submit_taskset(Taskset(name="h", tasks=list(tasks)))
    finally:
        registry.close()


def view(key: str, state: TaskState, reason: PendingReason) -> QueuedTaskView:
    return QueuedTaskView(key=key, taskset="h", task_id=key, title="", state=state, skill="",
                          tenant="h", priority=0, ready_at=None, created_at=0.0, attempts=0,
                          pending=Pending(reason, reason.value))


def snap(*queued: QueuedTaskView, running: int = 0) -> Snapshot:
    ready = sum(1 for q in queued if q.state is TaskState.READY)
    blocked = len(queued) - ready
    return Snapshot(version=1, taken_at=0.0, state="running", policy="priority",
                    max_global_concurrency=1, registry_path="", api_url=None, queued=queued,
                    counters=Counters(total=len(queued), ready=ready, blocked=blocked,
                                      running=running))


@pytest.mark.parametrize(("queued", "running", "settled"), [
    ((), 0, True),  # nothing left
    ((), 1, False),  # a runner is still running
    ((view("a", TaskState.READY, PendingReason.QUEUED),), 0, False),  # can still run
    ((view("a", TaskState.READY, PendingReason.RETRY_BACKOFF),), 0, False),  # will retry
    ((view("a", TaskState.READY, PendingReason.NO_POOL_FOR_SKILL),), 0, True),  # never
    ((view("a", TaskState.READY, PendingReason.POOL_DISABLED),), 0, True),  # no operator here
    ((view("a", TaskState.READY, PendingReason.POOL_UNHEALTHY),), 0, False),  # may come back
    ((view("b", TaskState.BLOCKED, PendingReason.WAITING_DEPENDENCIES),), 0, False),
    ((view("b", TaskState.BLOCKED, PendingReason.BLOCKED_BY_FAILURE),), 0, True),  # for good
])
def test_is_settled(queued: tuple[QueuedTaskView, ...], running: int, settled: bool) -> None:
    assert is_settled(snap(*queued, running=running)) is settled


def test_format_event_is_one_line() -> None:
    line = format_event(TaskEvent(EventType.RUNNER_STARTED, "h/a", message="runner r1 started",
                                  pool="local"))
    assert "RunnerStarted" in line and "h/a" in line and "pool=local" in line
    assert "\n" not in line


def test_headless_until_done_all_done_exits_0(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    submit(config, Task(id="a", title="a", command=["true"]),
           Task(id="b", title="b", command=["true"], dependencies=["a"]))
    out = io.StringIO()
    code = run_headless(config, until_done=True, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "RunnerCompleted" in text and "all tasks DONE" in text
    lines = text.splitlines()
    done_a = next(i for i, x in enumerate(lines) if "RunnerCompleted" in x and "h/a" in x)
    start_b = next(i for i, x in enumerate(lines) if "TaskAssigned" in x and "h/b" in x)
    assert done_a < start_b


def test_headless_failure_blocks_dependents_exits_1_json(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    submit(config, Task(id="bad", title="bad", command=["false"], max_attempts=2),
           Task(id="after", title="after", command=["true"], dependencies=["bad"]))
    out = io.StringIO()
    code = run_headless(config, until_done=True, json_lines=True, out=out)
    assert code == 1
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [r.get("event_type") for r in rows if r.get("type") == "event"]
    assert kinds.count("RunnerFailed") == 2 and "TaskFailed" in kinds
    summary = rows[-1]
    assert summary["type"] == "summary" and summary["exit_code"] == 1
    assert {t["key"]: t["state"] for t in summary["not_done"]} == {
        "h/bad": "failed", "h/after": "blocked"}


@pytest.fixture
def running_core(tmp_path: Path) -> Iterator[DispatcherCore]:
    config = config_for(tmp_path)
    submit(config, Task(id="s", title="sleeper", command=["sleep", "30"]),
           Task(id="q", title="queued", command=["true"], dependencies=["s"]))
    core = DispatcherCore(config)
    core.start()
    yield core
    core.stop(timeout=0.5)


def test_remote_status_metrics_and_control_through_the_api(
        running_core: DispatcherCore) -> None:
    config = running_core.config
    found = remote.find_dispatcher(config)
    assert found is not None and found[0] == running_core.api_url
    status = remote.fetch_status(config)
    assert status["state"] in ("running", "paused")
    assert status["api_url"] == running_core.api_url
    assert "necrocode_dispatcher_" in remote.fetch_metrics(config)
    assert remote.control(config, "priority", {"task": "h/q", "priority": 4}) == \
        "priority of h/q: 0 -> 4"
    assert remote.control(config, "pause", {}) == "paused dispatching"
    assert running_core.paused
    with pytest.raises(DispatcherError, match="not found"):
        remote.control(config, "retry", {"task": "h/nope"})
    with pytest.raises(DispatcherError):
        remote.control(config, "pool", {"pool": "nope", "enabled": False})


def test_remote_without_a_dispatcher_uses_the_registry(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    submit(config, Task(id="x", title="x", command=["true"]))
    assert remote.find_dispatcher(config) is None
    status = remote.fetch_status(config)
    assert status["state"] == "not running" and status["counters"]["ready"] == 1
    assert remote.control(config, "cancel", {"task": "h/x"}).startswith("cancelled h/x")
    with pytest.raises(remote.NoDispatcherError):
        remote.control(config, "pause", {})
    assert "necrocode_dispatcher_" in remote.fetch_metrics(config)


def test_restart_after_leave_running_reuses_the_api_port(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    first = DispatcherCore(config)
    first.start()
    url = first.api_url
    first.stop(timeout=0, leave_running=True)
    second = DispatcherCore(config)
    second.start()
    try:
        assert second.api_url == url  # wrapped runners left running still reach the dispatcher
    finally:
        second.stop(timeout=0)
    assert remote.find_dispatcher(config) is None


def test_headless_prints_each_event_once(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    submit(config, Task(id="one", title="one", command=["true"]))
    out = io.StringIO()
    assert run_headless(config, until_done=True, json_lines=True, out=out) == 0
    seqs = [r["seq"] for r in map(json.loads, out.getvalue().splitlines())
            if r.get("type") == "event"]
    assert len(seqs) == len(set(seqs))
    assert any(r.get("event_type") == "DispatcherStopped"
               for r in map(json.loads, out.getvalue().splitlines()))


def test_headless_summary_says_why_tasks_wait(tmp_path: Path) -> None:
    """The summary's last column shows the pending reason of tasks not DONE (unmapped skill,
    blocked by a failed dependency), not an empty cell."""
    config = config_for(tmp_path, skill_mapping={"build": ["local"]})
    submit(config, Task(id="bad", title="bad", command=["false"], max_attempts=1,
                        required_skill="build"),
           Task(id="after", title="after", command=["true"], dependencies=["bad"],
                required_skill="build"),
           Task(id="gpu", title="gpu", command=["true"], required_skill="gpu"))
    out = io.StringIO()
    assert run_headless(config, until_done=True, out=out) == 1
    rows = {line.split()[0]: line for line in out.getvalue().splitlines()
            if line.startswith("  h/")}
    assert "gpu" in rows["h/gpu"] and "ready" in rows["h/gpu"]
    assert "bad" in rows["h/after"].split("blocked", 1)[1]
    assert "exit code 1" in rows["h/bad"]
    out = io.StringIO()
    run_headless(config, until_done=True, json_lines=True, out=out)
    summary = json.loads(out.getvalue().splitlines()[-1])
    pending = {t["key"]: t["pending"] for t in summary["not_done"]}
    assert "gpu" in pending["h/gpu"] and "bad" in pending["h/after"]


def test_headless_until_done_on_an_empty_registry_says_how_to_submit(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    out = io.StringIO()
    assert run_headless(config, until_done=True, out=out) == 0
    text = out.getvalue()
    assert "all tasks DONE" not in text
    assert "necroui submit FILE" in text and "--demo" in text


def test_status_limits_through_the_api(running_core: DispatcherCore) -> None:
    """GET /v1/status?queued=N&finished=M&events=K keeps a big status small; no parameters:
    everything (compatible)."""
    from necrocode.dispatcher.api.client import ApiError, request

    config = running_core.config
    wait_until(lambda: running_core.snapshot().running, 20, "a running task")
    full = remote.fetch_status(config, timeout=10.0)
    assert "totals" not in full and len(full["queued"]) == 1 and full["events"]
    small = remote.fetch_status(config, timeout=10.0, queued=0, finished=0, events=1)
    assert small["queued"] == [] and len(small["events"]) == 1
    assert small["totals"]["queued"] == 1
    assert small["events"][0]["seq"] == full["events"][-1]["seq"]  # the newest
    assert small["running"] and small["counters"] == full["counters"]
    found = remote.find_dispatcher(config)
    assert found is not None
    with pytest.raises(ApiError) as bad:
        request(found[0], "GET", "/v1/status?queued=-1", token=found[1], timeout=10.0)
    assert bad.value.status == 400
    with pytest.raises(ApiError) as unknown:
        request(found[0], "GET", "/v1/status?rows=3", token=found[1], timeout=10.0)
    assert unknown.value.status == 400 and "queued" in unknown.value.message
    assert "necrocode" in remote.fetch_metrics(config, timeout=10.0)


