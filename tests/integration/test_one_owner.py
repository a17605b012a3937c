"""One Dispatcher owns a registry: a second one is refused with the holder named, or waits as a
standby (--standby) and takes over when the first ends — through DispatcherCore and through
necroui processes started at the same moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import AgentPool, PoolType
from necrocode.dispatcher.ownership import RegistryOwnedError
from support import wait_until


def config(tmp_path: Path, name: str) -> DispatcherConfig:
    return DispatcherConfig(
        registry_path=str(tmp_path / "registry.db"), state_dir=str(tmp_path / name),
        poll_interval=0.2, api_enabled=False,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)],
        skill_mapping={"default": ["local"]})


def test_a_second_dispatcher_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    first = DispatcherCore(config(tmp_path, "a"))
    first.start()
    second = DispatcherCore(config(tmp_path, "b"))  # another state dir: still refused
    try:
        with pytest.raises(RegistryOwnedError) as err:
            second.start()
        assert f"pid {os.getpid()}" in str(err.value)
        assert "--standby" in str(err.value) and not second.is_running
    finally:
        first.stop(timeout=1)
    second.start()  # the owner is gone: it may start now
    second.stop(timeout=1)


def test_a_standby_takes_over_when_the_owner_stops(tmp_path: Path) -> None:
    first = DispatcherCore(config(tmp_path, "a"))
    first.start()
    second = DispatcherCore(config(tmp_path, "b"))
    told: list[object] = []
    started = threading.Event()

    def standby() -> None:
        second.start(standby=True, on_wait=told.append)
        started.set()

    thread = threading.Thread(target=standby, daemon=True)
    thread.start()
    try:
        wait_until(lambda: told, 10, "the standby is told who owns the registry")
        assert not started.is_set()
        first.stop(timeout=1)
        assert started.wait(10) and second.is_running
    finally:
        first.stop(timeout=1)
        thread.join(10)
        if second.is_running:
            second.stop(timeout=1)


def _necroui(tmp_path: Path, *args: str) -> list[str]:
    cfg = tmp_path / "dispatcher.yaml"
    if not cfg.exists():
        cfg.write_text(yaml.safe_dump({
            "dispatcher": {"registry_path": str(tmp_path / "registry.db"),
                           "poll_interval": 0.2, "api_enabled": False},
            "agent_pools": {"local": {"type": "local-process", "max_concurrency": 2}},
            "skill_mapping": {"default": ["local"]}}))
    return [sys.executable, "-m", "necroui", "--config", str(cfg), *args]


def test_two_headless_dispatchers_started_at_once_give_one_owner(tmp_path: Path) -> None:
    procs = [subprocess.Popen(_necroui(tmp_path, "--no-tui"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        refused = wait_until(lambda: [p for p in procs if p.poll() is not None], 60,
                             "one of the two refused")
        assert len(refused) == 1
        out = refused[0].communicate(timeout=10)[0]
        assert refused[0].returncode == 2
        assert "is owned by another dispatcher: pid" in out and "Traceback" not in out
        (running,) = [p for p in procs if p is not refused[0]]
        time.sleep(0.5)
        assert running.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=30)


def test_standby_process_takes_over_after_kill_9_of_the_owner(tmp_path: Path) -> None:
    owner = subprocess.Popen(_necroui(tmp_path, "--no-tui"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    standby = None
    try:
        wait_until(lambda: (tmp_path / "registry.db.owner").exists()
                   and (tmp_path / "registry.db.owner").read_text(), 30, "the owner's lock")
        standby = subprocess.Popen(_necroui(tmp_path, "--no-tui", "--standby"),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert standby.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(standby.stdout or []),
                                  daemon=True)
        reader.start()
        wait_until(lambda: any("waiting to take over" in line for line in lines), 30,
                   "the standby waits")
        owner.kill()
        owner.wait(10)
        wait_until(lambda: any("dispatcher started" in line for line in lines), 30,
                   "the standby took over")
        assert standby.poll() is None
    finally:
        for p in (owner, standby):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
