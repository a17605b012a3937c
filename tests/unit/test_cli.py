"""The necroui command line, through click's CliRunner: every command, its errors, its help."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from necrocode.dispatcher.models import TaskState
from necrocode.dispatcher.registry import open_registry

from necroui.cli import main, registry_control

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
taskset: chat
tasks:
  - {id: "1", title: Schema, priority: 3, skill: database}
  - {id: "2", title: API, depends_on: ["1"]}
  - {id: "3", title: UI, depends_on: ["1", "2"], skill: frontend, tenant: web}
"""

BAD = """\
taskset: chat
tasks:
  - id: "1"
    title: Schema
    priority: high
    command: python agent.py
  - id: "1"
    title: again
  - id: "2"
    title: API
    depends_on: ["9"]
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    return {"NECROCODE_REGISTRY": str(tmp_path / "reg.db")}


@pytest.fixture
def no_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if necroui.remote were not installed: control acts on the registry directly."""
    monkeypatch.setitem(sys.modules, "necroui.remote", None)


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def tasks_in(env: dict[str, str]) -> dict[str, Any]:
    registry = open_registry(env["NECROCODE_REGISTRY"])
    try:
        return {t.key: t for t in registry.list_tasks()}
    finally:
        registry.close()


# --- submit / import-kiro ------------------------------------------------------------------


def test_submit_then_tasks_table(env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    assert result.exit_code == 0, result.output
    assert result.stdout == "chat: 3 created, 0 updated, 0 unchanged; 1 ready to run\n"
    result = run(env, "tasks")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["KEY", "STATE", "PRI", "SKILL", "TENANT", "FAILS", "TITLE"]
    assert lines[1].split() == ["chat/1", "ready", "3", "database", "chat", "0", "Schema"]
    # re-submit: unchanged
    result = run(env, "submit", str(tmp_path / "t.yaml"))
    assert "0 created, 0 updated, 3 unchanged" in result.output


def test_bad_taskset_prints_every_problem_and_writes_nothing(env: dict[str, str],
                                                             tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", BAD)
    result = CliRunner().invoke(main, ["submit", path], env=env)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    err = result.stderr
    assert "error: invalid taskset" in err and "nothing written" in err
    for fragment in (f"{path}:5: tasks[1].priority: expected an integer",
                     f"{path}:6: tasks[1].command:", "never run through a shell",
                     f"{path}:7: tasks[1].id: duplicate id '1'",
                     f"{path}:11: tasks[2].depends_on: unknown dependency '9'"):
        assert fragment in err
    assert tasks_in(env) == {}


def test_submit_dry_run_writes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, "submit", "--dry-run", write(tmp_path / "t.yaml", GOOD))
    assert result.stdout == "chat: 3 task(s) valid; nothing written (--dry-run)\n"
    assert tasks_in(env) == {}


def test_submit_missing_file(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["submit", "nope.yaml"], env=env)
    assert result.exit_code == 1
    assert "nope.yaml: taskset file not found" in result.stderr


def test_submit_quota_warning_goes_to_stderr(env: dict[str, str], tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", """\
        agent_pools:
          small: {type: local-process, max_concurrency: 1, cpu_quota: 1}
        skill_mapping:
          default: [small]
        """)
    taskset = write(tmp_path / "t.yaml", "taskset: s\ntasks:\n"
                    "  - {id: a, title: a, resources: {cpu: 4}}\n")
    result = run(env, "--config", config, "submit", taskset)
    assert result.exit_code == 0
    assert "warning: s/a: resources cpu 4, memory 512 MB exceed the quota" in result.stderr
    assert "1 created" in result.stdout


def test_import_kiro(env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "specs" / "chat-app"
    spec.mkdir(parents=True)
    path = write(spec / "tasks.md", """\
        - [x] 1. Set up
        - [ ] 2. Models
          - [ ] 2.1 User model
          - [ ]* 2.2 Tests
        """)
    result = run(env, "import-kiro", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("chat-app: 4 created")
    tasks = tasks_in(env)
    assert tasks["chat-app/1"].state is TaskState.DONE
    assert tasks["chat-app/2.1"].state is TaskState.READY
    assert tasks["chat-app/2.2"].optional is True
    result = run(env, "import-kiro", path, "--taskset", "other", "--dry-run")
    assert result.stdout == "other: 4 task(s) valid; nothing written (--dry-run)\n"


def test_import_kiro_errors(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "tasks.md", "- [ ] 1. a\n- [ ] 1. b\n")
    result = CliRunner().invoke(main, ["import-kiro", path], env=env)
    assert result.exit_code == 1
    assert f"{path}:2: tasks[1]: number 1 used twice" in result.stderr


# --- tasks / graph -------------------------------------------------------------------------


def test_tasks_filters_and_json(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    data = json.loads(run(env, "tasks", "--json").output)
    assert [t["key"] for t in data] == ["chat/1", "chat/2", "chat/3"]
    for name in ("id", "taskset", "title", "description", "state", "dependencies",
                 "required_skill", "priority", "tenant", "resources", "command", "timeout",
                 "max_attempts", "metadata", "created_at", "ready_at", "updated_at", "attempts",
                 "runner_id", "assigned_slot", "reserved_branch", "artifacts"):
        assert name in data[0]
    assert data[2]["dependencies"] == ["1", "2"]
    only = json.loads(run(env, "tasks", "--json", "--state", "blocked", "--tenant", "web").output)
    assert [t["key"] for t in only] == ["chat/3"]
    assert json.loads(run(env, "tasks", "--json", "--skill", "database").output)[0]["id"] == "1"
    by_priority = json.loads(run(env, "tasks", "--json", "--sort", "priority",
                                 "--limit", "1").output)
    assert [t["key"] for t in by_priority] == ["chat/1"]
    assert run(env, "tasks", "--taskset", "nope").output == "no tasks match\n"


def test_tasks_empty_registry(env: dict[str, str]) -> None:
    assert "no tasks yet" in run(env, "tasks").output


@pytest.mark.parametrize(("fmt", "expected"), [
    ("text", "critical path (3s): chat/1 -> chat/2 -> chat/3"),  # levels + critical path
    ("levels", "1: chat/1\n2: chat/2\n3: chat/3\n"),
    ("dot", '"chat/2" -> "chat/3";'),
    ("mermaid", "flowchart LR"),
])
def test_graph_formats(env: dict[str, str], tmp_path: Path, fmt: str, expected: str) -> None:
    run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    result = run(env, "graph", "chat", "--format", fmt)
    assert result.exit_code == 0
    assert expected in result.output


def test_graph_of_a_file_before_submitting(env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, "graph", write(tmp_path / "t.yaml", GOOD), "--format", "levels")
    assert result.output == "1: chat/1\n2: chat/2\n3: chat/3\n"
    kiro = write(tmp_path / "tasks.md", "- [ ] 1. a\n- [ ] 2. b\n")
    assert run(env, "graph", kiro, "--format", "levels").output == "1: tmp/1\n2: tmp/2\n".replace(
        "tmp", tmp_path.name)
    assert tasks_in(env) == {}


def test_graph_unknown_taskset(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    result = CliRunner().invoke(main, ["graph", "chta"], env=env)
    assert result.exit_code == 1
    assert "no taskset named 'chta'" in result.stderr
    assert "known tasksets: chat" in result.stderr


# --- config --------------------------------------------------------------------------------


def test_config_check_ok(env: dict[str, str]) -> None:
    result = run(env, "config", "check", str(ROOT / "config" / "dispatcher.yaml"))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"OK: {ROOT / 'config' / 'dispatcher.yaml'}"
    assert "  pool docker: docker, 4 at once, cpu 4, memory 8192 MB" in lines
    assert "  skill default -> local" in lines


def test_config_check_prints_every_problem(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", """\
        dispatcher:
          poll_intervall: 5
          max_global_concurrency: 0
        agent_pools:
          k8s: {type: kubernetes, max_concurrency: 1}
        skill_mapping:
          default: [locl]
        """)
    result = CliRunner().invoke(main, ["config", "check", path], env=env)
    assert result.exit_code == 1
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert err[0] == f"error: invalid configuration {path} (4 problem(s)):"
    assert err[1].startswith(f"  {path}:2: dispatcher.poll_intervall: unknown key")
    assert err[2].startswith(f"  {path}:3: dispatcher.max_global_concurrency: must be >= 1")
    assert err[3].startswith(f"  {path}:5: agent_pools.k8s.config.namespace:")
    assert err[4].startswith(f"  {path}:7: skill_mapping.default[0]: names undefined pool")


def test_bad_global_config_stops_any_command(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "dispatcher:\n  poll_interval: -1\n")
    result = CliRunner().invoke(main, ["--config", path, "tasks"], env=env)
    assert result.exit_code == 1
    assert f"{path}:2: dispatcher.poll_interval: must be > 0" in result.stderr
    env2 = {**env, "NECROCODE_CONFIG": path}
    assert CliRunner().invoke(main, ["tasks"], env=env2).exit_code == 1


def test_config_show_defaults_and_file(env: dict[str, str], tmp_path: Path) -> None:
    import yaml

    result = run(env, "config", "show")
    assert result.output.startswith("# effective configuration (built-in defaults)\n")
    data = yaml.safe_load(result.output)
    assert data["agent_pools"] == {"local": {"type": "local-process", "max_concurrency": 4,
                                             "enabled": True}}
    assert data["skill_mapping"] == {"default": ["local"]}
    assert data["dispatcher"]["registry_path"] == env["NECROCODE_REGISTRY"]
    seed = str(ROOT / "config" / "dispatcher.yaml")
    data = yaml.safe_load(run(env, "--config", seed, "--registry", "x.db", "config", "show")
                          .output)
    assert list(data["agent_pools"]) == ["local", "docker", "k8s"]
    assert data["dispatcher"]["registry_path"] == "x.db"


# --- control -------------------------------------------------------------------------------


def test_priority_cancel_retry_on_the_registry(env: dict[str, str], tmp_path: Path,
                                               no_remote: None) -> None:
    run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    assert run(env, "priority", "chat/2", "7").output == "priority of chat/2: 0 -> 7\n"
    assert run(env, "cancel", "chat/1").output == "cancelled chat/1 (was ready)\n"
    assert tasks_in(env)["chat/1"].state is TaskState.CANCELLED
    assert run(env, "retry", "chat/1").output == "retrying chat/1: ready\n"
    assert run(env, "cancel", "chat/3").exit_code == 0
    assert run(env, "retry", "chat/3").output == "retrying chat/3: blocked (waits for 1, 2)\n"
    tasks = tasks_in(env)
    assert tasks["chat/2"].priority == 7
    assert tasks["chat/3"].state is TaskState.BLOCKED


@pytest.mark.parametrize(("args", "message"), [
    (["retry", "chat/1"], "task 'chat/1' is ready; only failed or cancelled tasks can be retried"),
    (["cancel", "chat/nope"], "task 'chat/nope' not found"),
    (["priority", "nope", "1"], "task 'nope' not found"),
])
def test_control_mistakes(env: dict[str, str], tmp_path: Path, no_remote: None,
                          args: list[str], message: str) -> None:
    run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_cancel_finished_task_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    registry = open_registry(env["NECROCODE_REGISTRY"])
    try:
        registry.transition("chat/1", TaskState.RUNNING)
        registry.transition("chat/1", TaskState.DONE)
        with pytest.raises(Exception, match="already done"):
            registry_control(registry, "cancel", {"task": "chat/1"})
    finally:
        registry.close()


@pytest.fixture
def fake_remote(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    remote = types.ModuleType("necroui.remote")

    def fetch_status(config: Any, **kwargs: Any) -> dict[str, Any]:
        return {"state": "running", "api_url": "http://127.0.0.1:1", "policy": "priority",
                "counters": {"total": 3, "ready": 1, "running": 1, "done": 1},
                "pools": [{"pool_name": "local", "pool_type": "local-process", "running": 1,
                           "max_concurrency": 4, "enabled": True, "healthy": True}],
                "running": [{"key": "chat/1", "pool": "local", "runner_id": "r-1",
                             "attempt": 1, "started_at": None}],
                "queued": [{"position": 1, "key": "chat/2", "priority": 0,
                            "pending": {"reason": "pool_full", "message": "pool full"}}]}

    def control(config: Any, verb: str, payload: dict[str, Any]) -> str:
        calls.append((verb, payload))
        return f"{verb} ok"

    remote.fetch_status = fetch_status  # type: ignore[attr-defined]
    remote.fetch_metrics = lambda config, **kw: "necrocode_queue_size 0\n"  # type: ignore[attr-defined]
    remote.control = control  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "necroui.remote", remote)
    return calls


def test_status_metrics_and_control_through_remote(
    env: dict[str, str], fake_remote: list[tuple[str, dict[str, Any]]]
) -> None:
    out = run(env, "status").output
    assert out.startswith("dispatcher running at http://127.0.0.1:1, policy priority\n")
    assert "tasks: total 3, ready 1, running 1, done 1" in out
    assert "pool full" in out and "r-1" in out
    assert json.loads(run(env, "status", "--json").output)["state"] == "running"
    assert run(env, "metrics").output == "necrocode_queue_size 0\n"
    assert run(env, "priority", "chat/1", "5").output == "priority ok\n"
    assert run(env, "retry", "chat/1").output == "retry ok\n"
    assert run(env, "cancel", "chat/1").output == "cancel ok\n"
    assert fake_remote == [("priority", {"task": "chat/1", "priority": 5}),
                           ("retry", {"task": "chat/1"}), ("cancel", {"task": "chat/1"})]


def test_status_without_remote(env: dict[str, str], no_remote: None) -> None:
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 1
    assert "necroui.remote" in result.stderr


# --- bare necroui, flags, help -------------------------------------------------------------


def test_bare_command_passes_the_options(env: dict[str, str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    headless = types.ModuleType("necroui.headless")

    def run_headless(config: Any, **kw: Any) -> int:
        seen.update(kw, config=config)
        return 3

    headless.run_headless = run_headless  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "necroui.headless", headless)
    result = CliRunner().invoke(main, ["--no-tui", "--demo", "--json", "--until-done",
                                       "--api-port", "8123", "--registry", "r.db"], env=env)
    assert result.exit_code == 3
    assert seen["demo"] and seen["json_lines"] and seen["until_done"]
    assert seen["log_format"] == "text"
    assert seen["config"].api_port == 8123
    assert seen["config"].registry_path == "r.db"
    assert [p.name for p in seen["config"].agent_pools] == ["local"]


def test_bare_command_dashboard(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    app = types.ModuleType("necroui.app")
    app.run_dashboard = lambda config, **kw: seen.update(kw) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "necroui.app", app)
    result = CliRunner().invoke(main, ["--read-only"], env=env)
    assert result.exit_code == 0
    assert seen == {"demo": False, "read_only": True, "agents": False}
    assert CliRunner().invoke(main, ["--demo", "--agents"], env=env).exit_code == 0
    assert seen == {"demo": True, "read_only": False, "agents": True}
    alone = CliRunner().invoke(main, ["--agents"], env=env)
    assert alone.exit_code == 2 and "--agents is a variant of the demo: add --demo" in alone.output


def test_missing_runner_module_is_a_clear_message(env: dict[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "necroui.headless", None)
    result = CliRunner().invoke(main, ["--no-tui"], env=env)
    assert result.exit_code == 1
    assert "the headless mode is not available" in result.stderr


@pytest.mark.parametrize("args", [
    ["--bogus"],  # unknown option
    ["tasks", "--state", "sleeping"],  # bad choice
    ["priority", "chat/1", "high"],  # not an int
    ["--api-port", "70000"],  # out of range
    ["graph"],  # missing argument
    ["nosuchcommand"],
])
def test_wrong_flags_exit_2(env: dict[str, str], args: list[str]) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


COMMANDS = [[], ["submit"], ["import-kiro"], ["tasks"], ["graph"], ["config"], ["config", "keys"],
            ["config", "check"], ["config", "show"], ["status"], ["metrics"], ["priority"],
            ["retry"], ["cancel"], ["plan"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "necroui")
def test_every_command_has_help(env: dict[str, str], command: list[str]) -> None:
    result = run(env, *command, "--help")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: main {' '.join(command)}".rstrip() + " ")
    first_line = result.output.split("\n\n")[1].strip()
    assert first_line[0].isupper() or first_line.startswith("necroui")
    assert first_line.rstrip().endswith(".") or "\n" in first_line


def test_version(env: dict[str, str]) -> None:
    assert "necroui, version" in run(env, "--version").output


def test_config_check_defaults_to_global_config(env: dict[str, str]) -> None:
    seed = str(ROOT / "config" / "dispatcher.yaml")
    assert run(env, "--config", seed, "config", "check").output.startswith(f"OK: {seed}\n")
    result = CliRunner().invoke(main, ["config", "check"], env=env)
    assert result.exit_code == 1
    assert "no config file to check" in result.stderr


def test_negative_priority_after_double_dash(env: dict[str, str], tmp_path: Path,
                                             no_remote: None) -> None:
    run(env, "submit", write(tmp_path / "t.yaml", GOOD))
    assert run(env, "priority", "chat/2", "--", "-5").output == "priority of chat/2: 0 -> -5\n"


def test_config_keys(env: dict[str, str]) -> None:
    out = run(env, "config", "keys").output
    assert "dispatcher.poll_interval" in out and "ui.keymap" in out
    md = run(env, "config", "keys", "--markdown").output
    assert md.startswith("| key | type | default | meaning |\n")
    assert "| `dispatcher.heartbeat_timeout` | `float` | `60` |" in md


def test_tasks_sorted_by_key_naturally(env: dict[str, str], tmp_path: Path) -> None:
    items = "".join(f"  - {{id: '{i}', title: t{i}}}\n" for i in (10, 2, 1))
    run(env, "submit", write(tmp_path / "t.yaml", "taskset: n\ntasks:\n" + items))
    data = json.loads(run(env, "tasks", "--json", "--limit", "2").output)
    assert [t["id"] for t in data] == ["1", "2"]


def test_plan(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", """\
        taskset: p
        tasks:
          - {id: a, title: a, estimate: 60}
          - {id: b, title: b, estimate: 2m, depends_on: [a]}
          - {id: c, title: c, estimate: 30}
        """)
    result = run(env, "plan", path, "--timeline")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: 3 task(s), policy priority, at most 10 at once"
    assert lines[1] == "predicted makespan: 3m00s (180s), at most 2 running at once"
    assert lines[2] == "critical path: 3m00s (p/a -> p/b)"
    assert lines[3].split() == ["POOL", "RUNNERS", "BUSY", "UTILISATION"]
    assert lines[4].split() == ["local", "4", "3m30s", "29%"]
    assert tasks_in(env) == {}  # a dry run writes nothing
    data = json.loads(run(env, "plan", path, "--json").output)
    assert data["makespan"] == 180


def test_plan_reports_tasks_that_never_run(env: dict[str, str], tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", """\
        agent_pools:
          one: {type: local-process, max_concurrency: 1}
        skill_mapping:
          db: [one]
        """)
    path = write(tmp_path / "p.yaml", "taskset: p\ntasks:\n  - {id: a, title: a, skill: ui}\n")
    result = run(env, "--config", config, "plan", path)
    assert "1 task(s) would never run:" in result.output
    assert "  p/a: " in result.output


def test_unusable_registry_path_is_a_message(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["--registry", str(blocker / "sub" / "r.db"), "tasks"],
                                env=env)
    assert result.exit_code == 1
    assert "error: cannot open the registry" in result.stderr
    assert "Traceback" not in result.output


def test_cli_import_does_not_load_the_dashboard() -> None:
    import subprocess

    code = "import necroui.cli, sys; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"  # subcommands start fast, without Textual


@pytest.mark.parametrize(("args", "message"), [
    (["--until-done"], "--until-done applies to headless runs: add --no-tui"),
    (["--json", "--until-done"], "--json and --until-done apply to headless runs"),
    (["--no-tui", "--read-only"], "--read-only applies to the dashboard"),
])
def test_mode_flags_that_do_not_fit(env: dict[str, str], args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2
    assert message in result.stderr


def test_submit_of_a_kiro_file_points_to_import_kiro(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "tasks.md", "- [ ] 1. a\n")
    result = CliRunner().invoke(main, ["submit", path], env=env)
    assert result.exit_code == 1
    assert f"necroui import-kiro {path}" in result.stderr
