"""One owner per registry, with real processes: two started at once never both own it, a refused
one names the holder, a standby takes over when the holder dies (even by kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from necrocode.dispatcher.ownership import (
    Holder,
    RegistryLock,
    RegistryOwnedError,
    lock_path_for,
)
from support import wait_until

#: Waits for GO to appear, then tries to own REGISTRY; an owner holds it for a moment. Prints
#: one JSON line: owned or refused (with the holder named in the message), and when.
CONTENDER = textwrap.dedent("""\
    import json, os, sys, time
    from necrocode.dispatcher.ownership import RegistryLock, RegistryOwnedError
    registry, go, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    lock = RegistryLock.for_registry(registry, state_dir=f"/state/{os.getpid()}")
    open(f"{go}.ready-{os.getpid()}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        lock.acquire(wait=(mode == "standby"), poll=0.02)
    except RegistryOwnedError as exc:
        print(json.dumps({"pid": os.getpid(), "owned": False, "message": str(exc)}), flush=True)
        sys.exit(0)
    start = time.time()
    print(json.dumps({"pid": os.getpid(), "owned": True, "start": start}), flush=True)
    time.sleep(float(sys.argv[4]))
    print(json.dumps({"pid": os.getpid(), "end": time.time()}), flush=True)
    lock.release()
""")


def contender(tmp_path: Path, mode: str = "once", hold: float = 0.3) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CONTENDER, str(tmp_path / "registry.db"),
                             str(tmp_path / "go"), mode, str(hold)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


TRIALS = 25


def test_two_dispatchers_started_at_once_never_both_own_the_registry(tmp_path: Path) -> None:
    """Both wait, ready, for one go; owning is exclusive in time (a late one may own after the
    first let go, never while it holds), and a refused one names the holder."""
    double = 0
    for trial in range(TRIALS):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        procs = [contender(root), contender(root)]
        wait_until(lambda root=root: len(list(root.glob("go.ready-*"))) == 2, 60,
                   what="both contenders to be ready")
        (root / "go").touch()
        answers, spans = [], []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            lines = [json.loads(line) for line in out.splitlines()]
            answers.append(lines[0])
            if lines[0]["owned"]:
                spans.append((lines[0]["start"], lines[1]["end"]))
        spans.sort()
        pairs = zip(spans, spans[1:], strict=False)
        double += any(later[0] < earlier[1] for earlier, later in pairs)
        for refused in (a for a in answers if not a["owned"]):
            owner = next(a for a in answers if a["owned"])
            assert f"pid {owner['pid']} on " in refused["message"], answers
            assert f"state dir /state/{owner['pid']}" in refused["message"]
    assert double == 0


def test_a_standby_takes_over_when_the_holder_is_killed(tmp_path: Path) -> None:
    holder = contender(tmp_path, hold=300)
    (tmp_path / "go").touch()
    assert holder.stdout is not None
    first = json.loads(holder.stdout.readline())
    assert first["owned"]
    standby = contender(tmp_path, mode="standby", hold=0.1)
    assert standby.stdout is not None
    lock = RegistryLock.for_registry(tmp_path / "registry.db")
    with pytest.raises(RegistryOwnedError) as refused:  # a third one, without standby
        lock.acquire()
    assert refused.value.holder is not None and refused.value.holder.pid == holder.pid
    assert standby.stderr is not None
    assert "standby" in standby.stderr.readline()  # it says it waits (a loaded machine may
    assert standby.poll() is None                  # take a while to start it): still waiting
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    took = json.loads(standby.stdout.readline())
    assert took["owned"] and took["pid"] == standby.pid
    out, err = standby.communicate(timeout=60)
    assert "standby over" in err  # and that it took over


def test_paths_to_the_same_registry_share_one_lock(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "registry.db").write_bytes(b"")
    os.symlink(tmp_path / "a", tmp_path / "link")
    assert lock_path_for(tmp_path / "link" / "registry.db") == lock_path_for(
        tmp_path / "a" / "registry.db")
    assert lock_path_for(":memory:") is None
    assert lock_path_for(tmp_path / "a") == tmp_path / "a.owner"  # a registry folder
    assert lock_path_for(f"{tmp_path / 'b'}/") == tmp_path / "b.owner"


def test_memory_registries_are_always_granted_and_release_is_clean(tmp_path: Path) -> None:
    mem = RegistryLock.for_registry(":memory:")
    assert isinstance(mem.acquire(), Holder) and mem.held
    mem.release()
    lock = RegistryLock.for_registry(tmp_path / "r.db", state_dir=tmp_path)
    with lock:
        record = lock.holder()
        assert record is not None and record.pid == os.getpid()
        assert record.state_dir == str(tmp_path)
        again = RegistryLock.for_registry(tmp_path / "r.db")
        with pytest.raises(RegistryOwnedError, match="--standby"):
            again.acquire()
        with pytest.raises(RegistryOwnedError):
            again.acquire(wait=True, timeout=0.2)
    assert not lock.held
    after = RegistryLock.for_registry(tmp_path / "r.db")
    wait_until(after.acquire, 5, what="the lock to be free again")
    after.release()
