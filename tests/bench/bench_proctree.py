"""Cost per task of finding whole process trees: the local launcher's launch/on_exit/poll/release
loop running `true`, with the runner's process group only (what earlier versions did), with a
cgroup v2 per runner, and with the NECROCODE_RUNNER_ID environment scan; and the cost of the
slot check (processes still working in a slot) per slot handed out.

    python tests/bench/bench_proctree.py [--runs 500] [--concurrency 8]

Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from necrocode.dispatcher.launchers import procfs
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher
from necrocode.dispatcher.launchers.proctree import ProcessTrees, Tree, processes_using
from necrocode.dispatcher.models import AgentPool, Slot, Task

TRUE = "/bin/true"


class GroupOnly(ProcessTrees):
    """Earlier versions: the process group and nothing else."""

    def __init__(self) -> None:
        super().__init__("scan")
        self.kind = "group"

    def members(self, tree: Tree) -> list[int]:
        return procfs.group_members(tree.pgid) if tree.pgid > 1 else []

    def _send(self, tree: Tree, sig: int) -> None:
        procfs.signal_group(tree.pgid, sig)


def loop(runs: int, conc: int, tmp: Path, mode: str) -> tuple[float, list[float]]:
    woke: queue.Queue[str] = queue.Queue()
    env = LaunchEnvironment(api_url=None, token_for=lambda r: "", runs_dir=tmp / f"runs-{mode}",
                            on_exit=woke.put)
    launcher = LocalProcessLauncher(env, process_tree="scan" if mode == "group" else mode)
    if mode == "group":
        launcher.trees = GroupOnly()
    slot_dir = tmp / "slot"
    slot_dir.mkdir(exist_ok=True)
    slot, pool = Slot("scratch/0", str(slot_dir)), AgentPool(name="local", max_concurrency=conc)
    live: dict[str, tuple[Any, float]] = {}
    lat: list[float] = []
    launched = 0
    t0 = time.perf_counter()
    while launched < runs or live:
        while launched < runs and len(live) < conc:
            t = time.perf_counter()
            r = launcher.launch(Task(id=str(launched), taskset="bench", command=[TRUE]), slot,
                                pool)
            live[r.runner_id] = (r, t)
            launched += 1
        entry = live.get(woke.get())
        if entry and launcher.poll(entry[0]) is not None:
            launcher.release(entry[0])
            lat.append(time.perf_counter() - entry[1])
            del live[entry[0].runner_id]
    wall = time.perf_counter() - t0
    launcher.close()
    return wall, lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    procs = sum(1 for e in os.listdir("/proc") if e.isdigit())
    print(f"# {platform.platform()}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"{procs} processes on the host; {args.runs} tasks, {args.concurrency} at a time")
    modes = ["group", "scan"] + (["cgroup"] if ProcessTrees("cgroup").kind == "cgroup" else [])
    print(f"{'process tree found by':<44} {'tasks/s':>8} {'ms/task':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7}")
    base = None
    with tempfile.TemporaryDirectory() as d:
        for mode in modes:
            wall, lat = loop(args.runs, args.concurrency, Path(d), mode)
            per = wall / args.runs * 1000
            base = base or per
            lat.sort()
            label = {"group": "process group only (earlier versions)",
                     "scan": "group + NECROCODE_RUNNER_ID scan",
                     "cgroup": "group + cgroup v2 (the default here)"}[mode]
            print(f"{label:<44} {args.runs / wall:>8.0f} {per:>8.2f} "
                  f"{statistics.median(lat) * 1000:>7.2f} {lat[int(len(lat) * .99)] * 1000:>7.2f}"
                  f"  ({per - base:+.2f} ms)")
        t = time.perf_counter()
        for _ in range(200):
            processes_using(d)
        each = (time.perf_counter() - t) / 200 * 1000
        print(f"slot check before a slot is handed out: {each:.2f} ms ({procs} processes)")


if __name__ == "__main__":
    main()
