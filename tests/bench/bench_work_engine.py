"""Benchmark: from a runner's exit to DONE through the running engine, with the commit of its
work (a script: prints a table).

    python tests/bench/bench_work_engine.py [--files 10000] [--tasks 20]

A DispatcherCore with a FakeLauncher (the script plays the agents: each writes 3 files in its
worktree and exits 0) runs ``--tasks`` independent tasks of a repository of ``--files`` files,
one at a time, and then the same number of tasks without a repository (scratch slots: no
commit step). Per task: the time from the exit to DONE in the registry (WorkStep: git add,
commit, the work recorded; then the DONE write) and to the slot's release.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.repo_pool import RepoPoolManager

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_worktrees import make_repo  # noqa: E402


def run(root: Path, repo: Path | None, tasks: int) -> tuple[list[float], list[float]]:
    registry = MemoryRegistry()
    launcher = FakeLauncher()
    config = DispatcherConfig(
        registry_path=":memory:", state_dir=str(root / "state"), poll_interval=0.05,
        api_enabled=False, heartbeat_timeout=60.0, snapshot_max_rate=1000.0,
        agent_pools=[AgentPool(name="p", type=PoolType.LOCAL_PROCESS, max_concurrency=1,
                               config={"liveness": "log"})],
        skill_mapping={"default": ["p"]})
    core = DispatcherCore(config, registry=registry,
                          launchers={PoolType.LOCAL_PROCESS: launcher})
    pool = RepoPoolManager(core.state_dir, 1, fetch_interval=3600)
    core.repo_pool = pool
    name = "bench" if repo else "scratch"
    core.submit(Taskset(name=name, repo=str(repo) if repo else None, tasks=[
        Task(id=str(i), title=f"t{i}", repo=str(repo) if repo else None)
        for i in range(tasks)]))
    core.start()
    to_done: list[float] = []
    to_free: list[float] = []
    try:
        for i in range(tasks):
            launch = launcher.wait_for_launches(i + 1, timeout=120)[i]
            wt = Path(launch.slot.slot_path)
            for n in range(3):
                (wt / f"new{i}_{n}.txt").write_text(f"{i} {n}\n")
            began = time.perf_counter()
            launcher.finish(launch.runner.runner_id, 0)
            key = launch.task.key
            while registry.get_task(key).state is not TaskState.DONE:
                time.sleep(0.0005)
            to_done.append(time.perf_counter() - began)
            while pool.slot_for_task(key) is not None:
                time.sleep(0.0005)
            to_free.append(time.perf_counter() - began)
    finally:
        core.stop(timeout=5)
    return to_done, to_free


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[int(len(values) * 0.9) - 1] if len(values) >= 10 else values[-1]
    return f"{statistics.median(values) * 1000:7.1f} {p90 * 1000:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_repo(root / "origin", args.files)
        work = run(root / "a", root / "origin", args.tasks)
        scratch = run(root / "b", None, args.tasks)
    print(f"# exit -> DONE through the engine, {args.tasks} tasks one at a time, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}")
    print("| tasks in | repository | exit->DONE median p90 (ms) | exit->slot free median p90 |")
    print("|---|---|---|---|")
    print(f"| a repository slot | {args.files} files | {ms(work[0])} | {ms(work[1])} |")
    print(f"| a scratch slot | - | {ms(scratch[0])} | {ms(scratch[1])} |")


if __name__ == "__main__":
    main()
