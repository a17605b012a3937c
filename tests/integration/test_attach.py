"""`necroui attach`: a RemoteEngine on a real headless dispatcher (`necroui --no-tui`).

Snapshots arrive as diffs, every verb round-trips through the HTTP API, and after the
dispatcher restarts the console says the connection was lost and picks up the new one.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from necrocode.dispatcher.models import TaskState
from support import wait_until
from test_engine_demo import child_env, necroui_cmd

from necroui.app import NecroApp
from necroui.attach import RemoteEngine, read_token
from necroui.widgets import DashboardHeader


def _start(base: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*base, "--no-tui"], cwd=tmp_path, env=child_env(tmp_path, 1.0),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _url(state: Path, old: str | None = None) -> str:
    def fresh() -> str | None:
        try:
            url = json.loads((state / "dispatcher.json").read_text())["url"]
        except (OSError, ValueError, KeyError):
            return None
        return str(url) if url != old or old is None else None

    return str(wait_until(fresh, 60, "dispatcher.json written"))


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    config = tmp_path / "dispatcher.yaml"
    with socket.socket() as s:  # a fixed port: the restarted dispatcher answers on the same URL
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config.write_text(f"dispatcher:\n  max_global_concurrency: 1\n  api_port: {port}\n"
                      "  graceful_shutdown_timeout: 0.5\n  runner_stop_grace: 0.5\n")
    taskset = tmp_path / "ts.yaml"
    taskset.write_text("taskset: far\ntasks:\n" + "".join(
        f'  - id: "t{i}"\n    title: t{i}\n'
        f'    command: ["{sys.executable}", "-m", "necroui.demo.fake_agent", "--seconds", "60"]\n'
        for i in range(4)))
    base = [*necroui_cmd(), "--config", str(config)]
    sub = subprocess.run([*base, "submit", str(taskset)], cwd=tmp_path,
                         env=child_env(tmp_path, 1.0), capture_output=True, text=True,
                         timeout=60)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    yield base, tmp_path


async def test_attach_follows_diffs_verbs_round_trip_and_it_reconnects(
        dispatcher: tuple[list[str], Path]) -> None:
    base, tmp_path = dispatcher
    state = tmp_path / ".necrocode"
    proc = _start(base, tmp_path)
    engine: RemoteEngine | None = None
    try:
        url = _url(state)
        engine = RemoteEngine(url, read_token(state / "admin.token"), wait=1.0)
        engine.start()
        snap = wait_until(lambda: (s := engine.snapshot()) is not None and len(s.running) == 1
                          and len(s.queued) == 3 and s, 60, "one running, three queued")
        queued = snap.queued[-1].key
        engine.pause()
        wait_until(lambda: engine.snapshot().state == "paused", 30, "paused remotely")
        engine.set_priority(queued, 7)
        wait_until(lambda: any(v.key == queued and v.priority == 7
                               for v in engine.snapshot().queued), 30, "priority 7")
        engine.cancel(queued)
        wait_until(lambda: any(v.key == queued and v.state is TaskState.CANCELLED
                               for v in engine.snapshot().finished), 30, "cancelled")
        engine.resume()
        wait_until(lambda: engine.snapshot().state == "running", 30, "resumed")
        assert engine.full_fetches == 1  # every later refresh was a diff
        assert engine.requests > 3

        app = NecroApp(engine, clock=lambda: 0.0, refresh_interval=0.1, owns_engine=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            _stop(proc)  # the dispatcher goes away
            header = app.main.query_one(DashboardHeader)
            for _ in range(300):
                if header.connection and "connection lost" in header.connection:
                    break
                await pilot.pause(0.1)
            assert header.connection and "connection lost" in header.connection
            proc = _start(base, tmp_path)  # and comes back (a new instance, new versions)
            _url(state, old=None)
            for _ in range(600):
                snap = engine.snapshot()
                if engine.connection.ok and header.connection is None and snap is not None \
                        and snap.state == "running" and len(snap.running) == 1:
                    break
                await pilot.pause(0.1)
            assert engine.connection.ok and header.connection is None
            assert engine.full_fetches == 2  # one whole snapshot from the new instance
            await pilot.press("q")  # attached: quitting asks nothing, the dispatcher goes on
            await pilot.pause()
        assert proc.poll() is None
    finally:
        if engine is not None:
            engine.stop()
        _stop(proc)
