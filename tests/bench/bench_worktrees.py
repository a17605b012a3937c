"""Benchmark of workspace slots that start from dependencies' work (a script: prints tables).

    python tests/bench/bench_worktrees.py [--files 10000] [--deps 1,5,20] [--reps 5]

A repository of ``--files`` files (100 per folder) is cloned by a RepoPoolManager. For each N,
N sibling tasks each change their own file and are recorded DONE; then a dependent of all N
gets a slot again and again (released in between): the time per slot is the start commit
(N merges in the bare clone with merge-tree, no worktree) plus the worktree checkout of the
merged tree. N = 0 is a task without dependencies, for comparison. Then the console's diff of
one task (stat and patch) on the same repository.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from necrocode.dispatcher.config import WorkConfig
from necrocode.dispatcher.models import Slot, Task, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.repo_pool import RepoPoolManager, finish_work, plan_start
from necrocode.dispatcher.repo_pool.start import resolve_start
from necrocode.dispatcher.work_diff import task_diff

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
       "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True)


def make_repo(path: Path, files: int) -> None:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for i in range(files):
        folder = path / f"pkg{i // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i % 100:02d}.py").write_text(f"VALUE = {i}\n" + "x = 1\n" * 20)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "first", cwd=path)


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, " \
           f"{git_version.strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--deps", default="1,5,20")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    counts = [0, *(int(n) for n in args.deps.split(","))]
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-worktrees-") as tmp:
        root = Path(tmp)
        origin = root / "origin"
        t0 = time.perf_counter()
        make_repo(origin, args.files)
        print(f"repository of {args.files} files made in {time.perf_counter() - t0:.1f} s")
        registry = MemoryRegistry()
        pool = RepoPoolManager(root / "state", slots_per_repo=2)
        work = WorkConfig()
        t0 = time.perf_counter()
        first = pool.allocate_slot(Task(id="clone", taskset="b", repo=str(origin)))
        assert isinstance(first, Slot)
        pool.release_slot(first.slot_id)
        print(f"clone and first worktree: {time.perf_counter() - t0:.1f} s\n")
        rows = []
        for n in counts:
            deps = [Task(id=f"n{n}-d{i}", taskset="b", title="dep", repo=str(origin))
                    for i in range(n)]
            dependent = Task(id=f"n{n}-z", taskset="b", title="dependent", repo=str(origin),
                             dependencies=[d.id for d in deps])
            registry.submit_taskset(Taskset(name="b", tasks=[*deps, dependent]))
            for i, dep in enumerate(deps):
                slot = pool.allocate_slot(dep)
                assert isinstance(slot, Slot)
                target = Path(slot.slot_path) / f"pkg{i:03d}" / "mod00.py"
                target.write_text(target.read_text() + f"# changed by {dep.id}\n")
                result = finish_work(slot, dep, "", work)
                assert result is not None
                registry.transition(dep.key, TaskState.RUNNING)
                registry.transition(dep.key, TaskState.DONE, **result.task_updates())
                pool.release_slot(slot.slot_id)
            task = registry.get_task(dependent.key)
            plan = plan_start(task, registry.get_tasks, work)
            mirror = pool.mirror_of(str(origin))
            merge_times, slot_times = [], []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                start = resolve_start(mirror, task.key, plan)
                merge_times.append(time.perf_counter() - t0)
                assert not hasattr(start, "conflicts"), start
                t0 = time.perf_counter()
                slot = pool.allocate_slot(task, plan)
                slot_times.append(time.perf_counter() - t0)
                assert isinstance(slot, Slot)
                pool.release_slot(slot.slot_id)
            rows.append((n, statistics.median(merge_times), statistics.median(slot_times)))
        print(f"slot of a task with N DONE dependencies ({args.files} files, median of "
              f"{args.reps}):\n")
        print("| N dependencies | start commit (merges) | whole slot (merges + checkout) |")
        print("|---|---|---|")
        for n, merge, slot_time in rows:
            print(f"| {n} | {merge * 1000:.0f} ms | {slot_time * 1000:.0f} ms |")
        last = registry.get_task(f"b/n{counts[-1]}-d0")
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            diff = task_diff(last, root / "state")
            times.append(time.perf_counter() - t0)
        print(f"\ndiff of one task (stat, patch, commits; {len(diff.files)} file, "
              f"{len(diff.patch)} characters): {statistics.median(times) * 1000:.0f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
