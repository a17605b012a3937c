"""Look-alike ids never share a runs folder or a branch, unsafe ids are refused at submit, and an
exit status is only ever used by the runner that wrote it. Output logs are capped, tail kept.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from necrocode.dispatcher.agent_runner.logcap import cap_log, tail_of
from necrocode.dispatcher.launchers.base import attempt_dir, read_exit_record
from necrocode.dispatcher.models import Task
from necrocode.dispatcher.names import branch_component, path_component
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.repo_pool.git import branch_name

from necroui.cli import main

PY = sys.executable
LOOK_ALIKE = ["a b", "a_b", "a:b", "a;b", "a%20b", "a-b", "x..y", "x.y", "ü", "u"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    return {"NECROCODE_REGISTRY": str(tmp_path / "state" / "reg.db")}


def cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result.output


def test_look_alike_ids_run_in_their_own_folders(env: dict[str, str], tmp_path: Path) -> None:
    tasks = [{"id": tid, "title": tid, "command": [PY, "-c", f"print('I am', {tid!r})"]}
             for tid in LOOK_ALIKE]
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"taskset": "ids", "tasks": tasks}))
    assert "10 created" in cli(env, "submit", str(path))
    output = cli(env, "--no-tui", "--until-done")
    assert re.search(r"DONE\s+10\n", output), output
    runs = tmp_path / "state" / "runs" / "ids"
    registry = open_registry(env["NECROCODE_REGISTRY"])
    try:
        for tid in LOOK_ALIKE:
            adir = attempt_dir(tmp_path / "state" / "runs", Task(tid, taskset="ids"), 1)
            assert adir.parent.parent == runs
            assert (adir / "output.log").read_text().strip() == f"I am {tid}"
            status = json.loads((adir / "exit_status.json").read_text())
            started = [e for e in registry.get_events(task_key=f"ids/{tid}")
                       if e.event_type.value == "RunnerStarted"]
            assert status["runner_id"] == started[0].runner_id  # the run that wrote it
    finally:
        registry.close()
    assert len({p.name for p in runs.iterdir()}) == len(LOOK_ALIKE)


@pytest.mark.parametrize(("taskset", "tid", "what"), [
    ("..", "1", "taskset name '..'"),
    (".", "1", "taskset name '.'"),
    ("ok", "..", "task id '..'"),
    ("ok", ".", "task id '.'"),
    ("ok", "a\tb", "control character"),
    ("ok", "a\\b", "contains '\\'"),
    ("ok", "x" * 201, "longer than 200"),
    ("ok", " padded", "begins or ends with a space"),
])
def test_unsafe_names_are_refused_at_submit(env: dict[str, str], tmp_path: Path, taskset: str,
                                            tid: str, what: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"taskset": taskset, "tasks": [{"id": tid, "title": "t"}]}))
    output = cli(env, "submit", str(path))
    assert "nothing written" in output and what in output, output
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("runs"))


def test_encodings_never_collide_and_keep_plain_names() -> None:
    names = [*LOOK_ALIKE, ".", "..", "%2E", "~", "a~b", "-x", "x.lock", "x" * 300, "x" * 299]
    assert len({path_component(n) for n in names}) == len(names)
    assert len({branch_component(n) for n in names}) == len(names)
    assert len({branch_name("s", n) for n in names}) == len(names)
    assert branch_name("chat-app", "1.1") != branch_name("chat", "app-1.1")
    for plain in ("1.1", "chat-app", "task_7"):  # attempt folders of earlier versions
        assert path_component(plain) == plain
    assert all(len(path_component(n)) <= 120 for n in names)


def test_an_exit_status_of_another_run_is_never_used(tmp_path: Path) -> None:
    (tmp_path / "exit_status.json").write_text('{"exit_code": 0, "runner_id": "r-other"}')
    assert read_exit_record(tmp_path, "r-mine") is None
    assert read_exit_record(tmp_path, "r-other") == {"exit_code": 0, "runner_id": "r-other"}
    # a status of an earlier version (no runner id): only through runner.json's owner
    (tmp_path / "exit_status.json").write_text('{"exit_code": 0}')
    assert read_exit_record(tmp_path, "r-mine") is None
    (tmp_path / "runner.json").write_text('{"runner_id": "r-mine"}')
    assert read_exit_record(tmp_path, "r-mine") == {"exit_code": 0}


def test_output_log_is_capped_with_its_tail_through_the_cli(env: dict[str, str],
                                                            tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("agent_pools:\n  local:\n    max_concurrency: 1\n"
                      "    config: {output_log_max_bytes: 100000}\n")
    noisy = "import sys\nfor i in range(200000): print('line', i)\nprint('THE END')\n"
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"taskset": "logs", "tasks": [
        {"id": "noisy", "title": "3 MB of output", "command": [PY, "-c", noisy]}]}))
    assert "1 created" in cli(env, "--config", str(config), "submit", str(path))
    output = cli(env, "--config", str(config), "--no-tui", "--until-done")
    assert "DONE            1" in output, output
    log = next((tmp_path / "state" / "runs").rglob("output.log"))
    text = log.read_text()
    assert log.stat().st_size <= 100000
    assert text.startswith("[necrocode: ") and "bytes of earlier output dropped" in text
    assert text.rstrip().endswith("THE END")


def test_the_wrapper_caps_the_log_it_writes_to(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    noisy = ("import sys, time\nfor i in range(30):\n    print('x' * 10000, i, flush=True)\n"
             "    time.sleep(0.1)\nprint('THE END')\n")
    env = {**os.environ, "NECROCODE_LOG_PATH": str(log), "NECROCODE_LOG_MAX_BYTES": "50000",
           "NECROCODE_ATTEMPT_DIR": str(tmp_path)}
    with open(log, "ab") as out:
        rc = subprocess.run([PY, "-m", "necrocode.dispatcher.agent_runner", "--", PY, "-c",
                             noisy], stdout=out, stderr=subprocess.STDOUT, env=env,
                            timeout=120).returncode
    assert rc == 0
    text = log.read_text()
    assert "bytes of earlier output dropped" in text and text.rstrip().endswith("THE END")
    assert log.stat().st_size < 300_000  # 30 x 10 kB written, capped on the way


def test_cap_helpers_keep_whole_lines() -> None:
    data = b"".join(b"line %d\n" % i for i in range(1000))
    capped = tail_of(data, 1000)
    assert capped.startswith(b"[necrocode: ") and capped.endswith(b"line 999\n")
    assert capped.split(b"\n")[1].startswith(b"line ")
    assert tail_of(b"short", 1000) == b"short" and cap_log("/nonexistent/x", 10) == 0
