"""The agent runner wrapper against a real API server: heartbeats, completion, self-fencing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.agent_runner import WrapperConfig
from necrocode.dispatcher.api.server import ApiServer
from necrocode.dispatcher.api.tokens import runner_token
from necrocode.dispatcher.launchers import procfs
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher, read_exit_status
from necrocode.dispatcher.models import AgentPool, Slot, Task

PY = sys.executable
SECRET = b"k" * 32
WRAPPER = [PY, "-m", "necrocode.dispatcher.agent_runner", "--"]


def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class CountingHandler:
    """Counts heartbeats and keeps completions; can tell runners to stop."""

    def __init__(self) -> None:
        self.heartbeats: dict[str, int] = {}
        self.completions: list[tuple[str, dict[str, Any]]] = []
        self.answer: dict[str, Any] = {"ok": True}
        self.lock = threading.Lock()

    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.heartbeats[runner_id] = self.heartbeats.get(runner_id, 0) + 1
        return self.answer

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.completions.append((runner_id, payload))
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {}

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"


@pytest.fixture
def server() -> Iterator[tuple[ApiServer, CountingHandler]]:
    handler = CountingHandler()
    srv = ApiServer("127.0.0.1", 0, handler, SECRET, "admin")
    srv.start()
    yield srv, handler
    srv.stop()


def wrapper_env(url: str, rid: str, attempt_dir: Path, slot: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NECROCODE_")}
    env.update({
        "NECROCODE_API_URL": url, "NECROCODE_RUNNER_ID": rid,
        "NECROCODE_RUNNER_TOKEN": runner_token(SECRET, rid),
        "NECROCODE_HEARTBEAT_INTERVAL": "0.1", "NECROCODE_HEARTBEAT_TIMEOUT": "0.6",
        "NECROCODE_ATTEMPT_DIR": str(attempt_dir), "NECROCODE_SLOT_PATH": str(slot),
        "NECROCODE_STOP_GRACE": "0.5",
    })
    env.update(extra)
    return env


def agent(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    slot = tmp_path / "slot"
    slot.mkdir()
    return tmp_path / "attempt", slot


def test_heartbeats_completion_and_exit_code(
    server: tuple[ApiServer, CountingHandler], dirs: tuple[Path, Path]
) -> None:
    srv, handler = server
    adir, slot = dirs
    proc = subprocess.run(
        [*WRAPPER, *agent("import os, time; time.sleep(0.8); print(os.getcwd()); raise "
                          "SystemExit(5)")],
        env=wrapper_env(srv.url or "", "r-1", adir, slot), capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 5  # the agent's exit code is propagated
    assert proc.stdout.strip() == str(slot)  # runs in the slot
    assert handler.heartbeats["r-1"] >= 3  # one at start, then every 0.1 s
    [(rid, payload)] = handler.completions
    assert rid == "r-1" and payload["exit_code"] == 5 and payload["reason"] == "exited"
    assert payload["duration"] >= 0.8
    assert payload["artifacts"] == [str(adir / "output.log")]
    status = json.loads((adir / "exit_status.json").read_text())
    assert status["exit_code"] == 5 and status["source"] == "wrapper"


def test_self_fences_when_dispatcher_goes_away(
    server: tuple[ApiServer, CountingHandler], dirs: tuple[Path, Path]
) -> None:
    srv, handler = server
    adir, slot = dirs
    wrapper = subprocess.Popen(
        [*WRAPPER, *agent("""
            import os, signal, subprocess, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)   # only KILL will do
            kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            open("pids", "w").write(f"{os.getpid()} {kid.pid}")
            time.sleep(600)
        """)],
        env=wrapper_env(srv.url or "", "r-2", adir, slot, NECROCODE_COMPLETE_ATTEMPTS="2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: (slot / "pids").exists() and handler.heartbeats.get("r-2", 0) >= 2,
                 what="agent up and heartbeating")
        pids = [int(p) for p in (slot / "pids").read_text().split()]
        srv.stop()  # the dispatcher goes away
        rc = wrapper.wait(timeout=30)
        assert rc == 128 + signal.SIGKILL
        assert not any(procfs.same_process(p, None) for p in pids)  # child and grandchild
        status = json.loads((adir / "exit_status.json").read_text())
        assert status["reason"].startswith("self-fenced: dispatcher unreachable")
        assert "self-fenced" in (wrapper.stderr.read() if wrapper.stderr else "")
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()


def test_stop_answer_from_dispatcher_stops_agent(
    server: tuple[ApiServer, CountingHandler], dirs: tuple[Path, Path]
) -> None:
    srv, handler = server
    adir, slot = dirs
    handler.answer = {"action": "stop", "reason": "cancelled"}
    proc = subprocess.run([*WRAPPER, *agent("import time; time.sleep(600)")],
                          env=wrapper_env(srv.url or "", "r-3", adir, slot),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    [(_, payload)] = handler.completions
    assert payload["reason"] == "stopped by the dispatcher: cancelled"


def test_sigterm_is_forwarded_to_the_agent(
    server: tuple[ApiServer, CountingHandler], dirs: tuple[Path, Path]
) -> None:
    srv, handler = server
    adir, slot = dirs
    wrapper = subprocess.Popen(
        [*WRAPPER, *agent("""
            import signal, sys, time
            def bye(*_):
                open("got-term", "w").write("yes")
                sys.exit(3)
            signal.signal(signal.SIGTERM, bye)
            open("ready", "w").write("1")
            time.sleep(600)
        """)],
        env=wrapper_env(srv.url or "", "r-4", adir, slot), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for((slot / "ready").exists, what="agent ready")
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 3
    assert (slot / "got-term").read_text() == "yes"
    assert handler.completions[0][1]["reason"] == "terminated by SIGTERM"


def test_argv_from_env_and_missing_command(dirs: tuple[Path, Path]) -> None:
    adir, slot = dirs
    env = {k: v for k, v in os.environ.items() if not k.startswith("NECROCODE_")}
    env.update(NECROCODE_AGENT_ARGV=json.dumps([PY, "-c", "print('$(echo no)')"]),
               NECROCODE_ATTEMPT_DIR=str(adir))
    proc = subprocess.run([PY, "-m", "necrocode.dispatcher.agent_runner"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "$(echo no)"
    proc = subprocess.run([*WRAPPER, "no-such-agent-xyz"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 127
    assert json.loads((adir / "exit_status.json").read_text())["exit_code"] == 127
    proc = subprocess.run([PY, "-m", "necrocode.dispatcher.agent_runner"],
                          env={k: v for k, v in env.items() if k != "NECROCODE_AGENT_ARGV"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_config_from_env() -> None:
    cfg = WrapperConfig.from_env(
        ["--", "agent", "--flag"],
        {"NECROCODE_RUNNER_ID": "r", "NECROCODE_HEARTBEAT_INTERVAL": "2",
         "NECROCODE_HEARTBEAT_TIMEOUT": "bogus", "NECROCODE_ATTEMPT_DIR": "/a"},
    )
    assert cfg.argv == ["agent", "--flag"] and cfg.runner_id == "r"
    assert cfg.heartbeat_interval == 2 and cfg.heartbeat_timeout == 60
    assert cfg.log_path == "/a/output.log" and cfg.api_url is None
    with pytest.raises(ValueError):
        WrapperConfig.from_env([], {})


def test_wrapper_under_local_launcher_keeps_its_richer_status(
    server: tuple[ApiServer, CountingHandler], tmp_path: Path
) -> None:
    srv, handler = server
    env = LaunchEnvironment(api_url=srv.url, token_for=lambda rid: runner_token(SECRET, rid),
                            runs_dir=tmp_path / "runs", heartbeat_interval=0.1,
                            heartbeat_timeout=5)
    launcher = LocalProcessLauncher(env)
    slot_dir = tmp_path / "slot"
    slot_dir.mkdir()
    pool = AgentPool(name="wrapped", agent_command=[*WRAPPER, PY, "-c",
                                                    "import time; time.sleep(0.4)"])
    runner = launcher.launch(Task(id="1", taskset="s"), Slot("scratch/0", str(slot_dir)), pool)
    try:
        wait_for(lambda: launcher.poll(runner) is not None, what="wrapped runner to end")
        result = launcher.poll(runner)
        assert result is not None and result.exit_code == 0
        recorded = read_exit_status(runner.attempt_dir or "")
        assert recorded is not None and recorded.exit_code == 0
        status = json.loads(Path(runner.attempt_dir or "", "exit_status.json").read_text())
        assert status["source"] == "wrapper"  # the trampoline did not overwrite it
        assert handler.heartbeats.get(runner.runner_id, 0) >= 1
        assert [rid for rid, _ in handler.completions] == [runner.runner_id]
    finally:
        launcher.stop(runner, grace=0.5)
        launcher.close()


RECORDED = Path(__file__).parent / "agent_output"


def test_wrapper_runs_a_preset_files_key_reference_stream_and_judgement(
    server: tuple[ApiServer, CountingHandler], dirs: tuple[Path, Path]
) -> None:
    srv, handler = server
    adir, slot = dirs
    home = adir / "claude-config"
    log = RECORDED / "claude-code-ok.log"
    code = (f"import os, sys, time\n"
            f"open('key.txt', 'w').write(os.environ['ANTHROPIC_API_KEY'])\n"
            f"assert open({str(home / 'x.json')!r}).read() == 'cfg'\n"
            f"for line in open({str(log)!r}):\n"
            f"    sys.stdout.write(line); sys.stdout.flush(); time.sleep(0.05)\n")
    env = wrapper_env(srv.url or "", "r-a", adir, slot, NECROCODE_AGENT="claude-code",
                      NECROCODE_AGENT_FILES=json.dumps({str(home / "x.json"): "cfg"}),
                      NECROCODE_AGENT_SECRET_REFS=json.dumps({"ANTHROPIC_API_KEY": "POD_KEY"}),
                      POD_KEY="from-the-pod")
    proc = subprocess.run([*WRAPPER, PY, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == log.read_text()  # teed to the container log
    assert (slot / "key.txt").read_text() == "from-the-pod"
    [(_, payload)] = handler.completions
    agent_report = payload["agent"]
    assert agent_report["judgement"] == {"verdict": "succeeded", "reason": "Created hello.txt"}
    assert agent_report["usage"]["input_tokens"] == 330 and agent_report["budget"] is None
    usage = json.loads((adir / "usage.json").read_text())
    assert usage["output_tokens"] == 60 and usage["agent"] == "claude-code"
    status = json.loads((adir / "exit_status.json").read_text())
    assert status["agent"]["judgement"]["verdict"] == "succeeded"


def test_wrapper_fences_a_preset_over_its_budget(
    server: tuple[ApiServer, CountingHandler], dirs: tuple[Path, Path]
) -> None:
    srv, handler = server
    adir, slot = dirs
    log = RECORDED / "claude-code-ok.log"
    code = (f"import sys, time\n"
            f"for line in open({str(log)!r}):\n"
            f"    sys.stdout.write(line); sys.stdout.flush(); time.sleep(0.05)\n"
            f"time.sleep(60)\n")
    env = wrapper_env(srv.url or "", "r-b", adir, slot, NECROCODE_AGENT="claude-code",
                      NECROCODE_AGENT_BUDGET=json.dumps({"max_turns": 1}))
    proc = subprocess.run([*WRAPPER, PY, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    [(_, payload)] = handler.completions
    assert payload["reason"] == "budget exceeded: 2/1 turns"
    assert payload["agent"]["budget"] == "budget exceeded: 2/1 turns"
    assert payload["agent"]["judgement"]["verdict"] == "failed"
