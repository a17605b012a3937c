"""One round of the Dispatcher for bench_peers.py (a child process; prints one JSON line).

    python tests/bench/peer_dispatcher.py --dir DIR [--tasks 1000] [--concurrency 16] [--wrapper]

Builds a ``DispatcherCore`` with a SQLite registry and a local-process pool in ``DIR``, starts it
and waits for its first running snapshot (interpreter start, imports and engine start are not
measured), then times the *dispatch phase*: from ``submit()`` of a taskset of ``--tasks`` tasks
running ``true`` until every one of them is DONE in the registry (the newest ``finished_at``),
and until a snapshot showed them all. CPU seconds over the same phase: this process (engine,
launch workers, API, SQLite) and its reaped children (the launcher's spawn server and the
commands, counted once the server ended after the stop).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset, TaskState

TRUE = "/bin/true"
WRAPPER = [sys.executable, "-m", "necrocode.dispatcher.agent_runner", "--"]
TIMEOUT = 600.0  # seconds one round may take before it gives up


def make_core(root: Path, concurrency: int) -> DispatcherCore:
    config = DispatcherConfig(
        registry_path=str(root / "registry.db"), state_dir=str(root / "state"),
        max_global_concurrency=concurrency,
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS,
                               max_concurrency=concurrency)],
        skill_mapping={"default": ["local"]},
    )
    return DispatcherCore(config)


def cpu() -> tuple[float, float, float]:
    """CPU seconds: this process, its reaped children, and this process's system (kernel) part."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, me.ru_stime


def wait_children_gone(timeout: float) -> None:
    """Until this process has no child left (the spawn server exits after the stop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/self/task/{tid}/children").read_text().split()
                   for tid in os.listdir("/proc/self/task")):
            return
        time.sleep(0.02)


def one_round(root: Path, n: int, concurrency: int, command: list[str]) -> dict[str, object]:
    core = make_core(root, concurrency)
    core.start()
    try:
        snap = core.snapshot()
        deadline = time.monotonic() + 60
        while snap.state != "running" and time.monotonic() < deadline:
            snap = core.wait_for_snapshot(snap.version, timeout=1.0)
        tasks = [Task(id=f"t{i}", title=f"t{i}", taskset="bench", command=list(command))
                 for i in range(n)]
        taskset = Taskset(name="bench", tasks=tasks)
        self0, kids0, sys0 = cpu()
        wall0, t0 = time.time(), time.perf_counter()
        core.submit(taskset)
        submitted = time.perf_counter() - t0
        deadline = time.monotonic() + TIMEOUT
        version = 0
        while time.monotonic() < deadline:
            snap = core.wait_for_snapshot(version, timeout=1.0)
            version = snap.version
            c = snap.counters
            if c.done + c.failed + c.cancelled >= n:
                break
        seen = time.perf_counter() - t0
        self1, _, sys1 = cpu()
        done = core.registry.list_tasks(taskset="bench")
    finally:
        core.stop(timeout=10)
    # the commands ran under the launcher's spawn server: its CPU and theirs count once it
    # has been reaped, after the stop
    wait_children_gone(10.0)
    kids1 = cpu()[1]
    finished = [t.finished_at for t in done if t.finished_at is not None]
    return {
        "wall": (max(finished) - wall0) if len(finished) == n else float("nan"),
        "seen": seen, "submit": submitted,
        "cpu_self": self1 - self0, "cpu_children": kids1 - kids0, "cpu_sys": sys1 - sys0,
        "done": sum(t.state is TaskState.DONE for t in done), "tasks": n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--wrapper", action="store_true",
                        help="run each task through the runner wrapper")
    args = parser.parse_args()
    command = [*WRAPPER, TRUE] if args.wrapper else [TRUE]
    print(json.dumps(one_round(args.dir, args.tasks, args.concurrency, command)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
