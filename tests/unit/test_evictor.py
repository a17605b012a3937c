"""Evictor, with real processes: a slot is emptied of what started since it was last emptied,
and of every process after the pids wrapped around."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from necrocode.dispatcher.launchers import proctree
from necrocode.dispatcher.launchers.proctree import Evictor


def test_an_evictor_looks_at_what_started_since_the_folder_was_last_emptied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "slot"
    folder.mkdir()
    evictor = Evictor()
    before = subprocess.Popen(["sleep", "300"], cwd=folder, env={}, start_new_session=True)
    try:
        assert evictor.evict(str(folder), "slot") == [before.pid]  # the first scan: all
        before.wait(timeout=10)
        after = subprocess.Popen(["sleep", "300"], cwd=folder, env={}, start_new_session=True)
        assert evictor.evict(str(folder), "slot") == [after.pid]  # started since
        after.wait(timeout=10)
    finally:
        for p in (before,):
            if p.poll() is None:
                p.kill()


def test_after_a_pid_wrap_an_evictor_looks_at_every_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "slot"
    folder.mkdir()
    evictor = Evictor()
    monkeypatch.setattr(proctree, "last_pid", lambda: 10**9)  # the newest pid, so far
    assert evictor.evict(str(folder), "slot") == []
    stray = subprocess.Popen(["sleep", "300"], cwd=folder, env={}, start_new_session=True)
    try:
        assert evictor.evict(str(folder), "slot") == []  # not above the mark: not looked at
        monkeypatch.setattr(proctree, "last_pid", lambda: 1)  # pids wrapped around
        assert evictor.evict(str(folder), "slot") == [stray.pid]
        stray.wait(timeout=10)
    finally:
        if stray.poll() is None:
            stray.kill()
