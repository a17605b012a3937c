"""Bad numbers in every door: tasksets, config files, the command line, the HTTP API.

Each is refused where it is written (file:line, task, key and the range), nothing is written, and
a bad task already stored by another tool fails alone: the others are still scheduled.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from necrocode.dispatcher import limits
from necrocode.dispatcher.api.server import ApiServer
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import AgentPool, Resources, Task, Taskset, TaskState
from necrocode.dispatcher.pool_manager import AgentPoolManager
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.scheduler import Scheduler
from necrocode.dispatcher.snapshot import PendingReason
from necrocode.dispatcher.task_queue import TaskQueue

from necroui.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    return {"NECROCODE_REGISTRY": str(tmp_path / "reg.db")}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


TASK_CASES = [
    ("resources: {cpu: .nan}", "tasks[a].resources.cpu", "must be a finite number, got nan"),
    ("resources: {cpu: .inf}", "tasks[a].resources.cpu", "must be a finite number, got infin"),
    ("resources: {cpu: 1.0e+308}", "tasks[a].resources.cpu", "must be <= 1024"),
    ("resources: {memory_mb: 100000000000000000000}", "tasks[a].resources.memory_mb",
     "must be <= 16777216"),
    ("priority: 100000000000000000000000000", "tasks[a].priority",
     "must be <= 1000000000, got an integer of about 27 digits"),
    ("priority: .nan", "tasks[a].priority", "expected an integer"),
    ("timeout: .inf", "tasks[a].timeout", "must be a finite number"),
    ("timeout: 1.0e+400", "tasks[a].timeout", "must be a finite number"),
    ("max_attempts: 100000000000000000000", "tasks[a].max_attempts", "must be <= 1000"),
    ("estimate: 1" + "0" * 400, "tasks[a].estimate", "expected seconds"),
    ("estimate: 99999999999d", "tasks[a].estimate", "must be at most a year"),
]


@pytest.mark.parametrize(("line", "key", "message"), TASK_CASES)
def test_submit_refuses_bad_numbers_naming_file_line_task_and_key(
    env: dict[str, str], tmp_path: Path, line: str, key: str, message: str
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"taskset: s\ntasks:\n  - id: a\n    title: a\n    {line}\n")
    result = run(env, "submit", str(path))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"t.yaml:5: {key}: {message}" in result.output, result.output
    assert "nothing written" in result.output
    assert not (tmp_path / "reg.db").exists() or _count(tmp_path / "reg.db") == 0


def _count(db: Path) -> int:
    registry = open_registry(str(db))
    try:
        return sum(registry.count_tasks().values())
    finally:
        registry.close()


CONFIG_CASES = [
    ("dispatcher:\n  runner_stop_grace: .inf\n", "2: dispatcher.runner_stop_grace",
     "must be a finite number, got infinity"),
    ("dispatcher:\n  poll_interval: .nan\n", "2: dispatcher.poll_interval",
     "must be a finite number"),
    ("dispatcher:\n  max_global_concurrency: 100000000000000000000000\n",
     "2: dispatcher.max_global_concurrency", "must be <= 100000"),
    ("dispatcher:\n  fair_share_weights: {a: .inf}\n", "2: dispatcher.fair_share_weights.a",
     "finite"),
    ("dispatcher:\n  non_retryable_exit_codes: [1, 100000000000]\n",
     "2: dispatcher.non_retryable_exit_codes[1]", "must be <= 255"),
    ("agent_pools:\n  local:\n    max_concurrency: 2\n    cpu_quota: .nan\n",
     "4: agent_pools.local.cpu_quota", "must be a finite number"),
    ("agent_pools:\n  local:\n    max_concurrency: 2\n    memory_quota: 1e400\n",
     "4: agent_pools.local.memory_quota", "expected an integer"),
    ("ui:\n  refresh_interval: .inf\n", "2: ui.refresh_interval", "finite"),
]


@pytest.mark.parametrize(("text", "where", "message"), CONFIG_CASES)
def test_config_check_refuses_bad_numbers(env: dict[str, str], tmp_path: Path, text: str,
                                          where: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = run(env, "config", "check", str(path))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    line = next(x for x in result.output.splitlines() if f"c.yaml:{where}" in x)
    assert message in line, result.output


def test_config_check_names_an_unresolvable_host_and_a_file_as_state_dir(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "c.yaml"
    path.write_text(f"dispatcher:\n  api_host: no-such-host.invalid\n"
                    f"  state_dir: {tmp_path / 'afile'}\n")
    result = run(env, "config", "check", str(path))
    assert result.exit_code == 1
    assert "c.yaml:2: dispatcher.api_host: 'no-such-host.invalid' does not resolve" in result.output
    assert "c.yaml:3: dispatcher.state_dir:" in result.output and "is a file" in result.output


def test_a_short_heartbeat_timeout_alone_is_accepted(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dispatcher:\n  heartbeat_timeout: 5\n")
    result = run(env, "config", "check", str(path))
    assert result.exit_code == 0, result.output
    assert DispatcherConfig(heartbeat_timeout=5).heartbeat_interval == pytest.approx(5 / 3)
    assert DispatcherConfig().heartbeat_interval == 10.0
    # Both written and in conflict: the error points at the user's own keys.
    path.write_text("dispatcher:\n  heartbeat_timeout: 5\n  heartbeat_interval: 6\n")
    result = run(env, "config", "check", str(path))
    assert result.exit_code == 1
    assert "c.yaml:3: dispatcher.heartbeat_interval" in result.output


def test_cli_priority_refuses_a_huge_number(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("taskset: s\ntasks:\n  - {id: a, title: a}\n")
    assert run(env, "submit", str(path)).exit_code == 0
    result = run(env, "priority", "s/a", str(10**26))
    assert result.exit_code == 2
    assert "not in the range" in result.output and "Traceback" not in result.output
    assert run(env, "priority", "s/a", "7").exit_code == 0


class _Handler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    def status(self, **limits: int | None) -> dict[str, Any]:
        return {}

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((verb, payload))
        return {"ok": True}

    def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"


def _post(url: str, body: bytes, token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("raw", ["1e400", "-1e400", "1e20", "100000000000000000000000000",
                                 "NaN", "Infinity", '"99999999999999999999"', "5.5", "true"])
def test_api_priority_refuses_bad_numbers_with_400(raw: str) -> None:
    handler = _Handler()
    with ApiServer("127.0.0.1", 0, handler, b"s" * 32, "admin") as api:
        body = ('{"task": "s/a", "priority": ' + raw + "}").encode()
        status, answer = _post(f"{api.url}/v1/control/priority", body, "admin")
    assert status == 400, answer
    assert "priority" in answer["error"] and "Traceback" not in answer["error"]
    assert handler.calls == []


def test_api_runner_report_refuses_infinite_numbers() -> None:
    from necrocode.dispatcher.api.tokens import runner_token

    with ApiServer("127.0.0.1", 0, _Handler(), b"s" * 32, "admin") as api:
        token = runner_token(b"s" * 32, "r-1")
        status, answer = _post(f"{api.url}/v1/runners/r-1/complete",
                               b'{"exit_code": 1e400, "duration": 1}', token)
        assert status == 400 and "exit_code" in answer["error"]
        status, answer = _post(f"{api.url}/v1/runners/r-1/complete",
                               b'{"exit_code": 0, "duration": NaN}', token)
        assert status == 400 and "duration" in answer["error"]


def test_bounds_say_the_range_and_describe_huge_values() -> None:
    assert limits.CPU.problem(1.5) is None
    assert limits.CPU.problem(float("nan")) == "must be a finite number, got nan (not a number)"
    assert limits.PRIORITY.problem(True) is not None  # a boolean is not a number
    assert limits.describe(10**5000).startswith("an integer of about 500")
    assert limits.describe(-math.inf) == "-infinity"


# --- a bad task already in a registry fails alone -------------------------------------------


def _stored_bad(**resources: Any) -> Task:
    return Task("bad", "bad", taskset="x", resources=Resources(**resources))


@pytest.mark.parametrize("bad", [
    _stored_bad(cpu=float("nan")), _stored_bad(cpu=float("inf")), _stored_bad(cpu=1e308),
    Task("bad", "b", taskset="x", priority=10**26), Task("bad", "b", taskset="x", timeout=math.inf),
    Task("bad", "b", taskset="x", priority="high"),  # type: ignore[arg-type]
])
@pytest.mark.parametrize("policy", ["priority", "fifo", "skill-based", "fair-share"])
def test_one_bad_stored_task_never_stops_the_others(bad: Task, policy: str) -> None:
    config = DispatcherConfig(agent_pools=[AgentPool("local", max_concurrency=10, cpu_quota=8)],
                              scheduling_policy=policy)
    scheduler, pools, queue = Scheduler(policy, config), AgentPoolManager(config), TaskQueue()
    queue.enqueue(bad)
    for i in range(3):
        queue.enqueue(Task(f"good{i}", "g", taskset="x"))
    assert [t.key for t in scheduler.order(queue, pools)][-1] == "x/bad"
    placed = [t.key for t, _ in scheduler.schedule(queue, pools)]
    assert sorted(placed) == ["x/good0", "x/good1", "x/good2"]
    why = scheduler.explain(bad, pools)
    assert why.reason is PendingReason.INVALID_TASK and "cannot be scheduled" in why.message
    assert scheduler.next_wakeup(queue) is None
    taken = scheduler.take_invalid(queue)
    assert [t.key for t, _ in taken] == ["x/bad"] and len(queue) == 0
    assert not pools.can_accept_task("local", bad) and not pools.fits_quota("local", bad)


def test_headless_run_finishes_the_good_tasks_next_to_a_stored_bad_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    registry = open_registry(env["NECROCODE_REGISTRY"])
    try:
        registry.submit_taskset(Taskset("bad", tasks=[
            Task("x", "x", taskset="bad", resources=Resources(cpu=math.nan), command=["true"])]))
        registry.submit_taskset(Taskset("good", tasks=[
            Task(f"g{i}", "g", taskset="good", command=["true"]) for i in range(3)]))
    finally:
        registry.close()
    result = run(env, "--no-tui", "--until-done")
    assert "Traceback" not in result.output
    assert "DONE            3" in result.output, result.output
    assert "bad/x" in result.output and "cannot be scheduled" in result.output
    assert result.exit_code == 1  # one task not DONE
    registry = open_registry(env["NECROCODE_REGISTRY"])
    try:  # it failed alone, with the reason, instead of staying READY for ever
        bad = registry.get_task("bad/x")
        assert bad.state is TaskState.FAILED and "cannot be scheduled" in (bad.last_error or "")
    finally:
        registry.close()


def test_tasksets_built_in_code_are_checked_too() -> None:
    from necrocode.dispatcher.errors import TasksetError
    from necrocode.dispatcher.tasksets import validate_taskset

    bad = Taskset("code", tasks=[Task("a", "a", taskset="code", priority=10**26),
                                 Task("b", "b", taskset="code",
                                      resources=Resources(cpu=math.nan))])
    with pytest.raises(TasksetError) as info:
        validate_taskset(bad)
    text = str(info.value)
    assert "tasks[a]: priority must be <= 1000000000" in text
    assert "tasks[b]: resources.cpu must be a finite number" in text
