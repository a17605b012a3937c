"""Benchmark (cross-check of bench_keys.py): key -> visible change through a real terminal.

``necroui`` runs in a tmux pane of 160x50 on a registry of TASKS tasks running ``true`` (4
runners: it dispatches all the while); keys go in with ``tmux send-keys`` and the pane is read
with ``tmux capture-pane -p`` every few milliseconds until it shows the key's effect (the help,
the filter line and what is typed in it, the queue's title with its sort or filter, the queue's
rows after G / Home). Coarser than bench_keys.py (a capture takes a few ms; plain text only,
so the cursor and the focus are not seen), but end to end: terminal, parsing, drawing.

    python tests/bench/bench_keys_tmux.py [10000] [--rounds 10] [--extra 7000]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SOCKET = f"necroui-bench-{os.getpid()}"
PANE = "bench"
Check = Callable[[list[str]], bool]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], check=True, capture_output=True,
                          text=True).stdout


def capture() -> list[str]:
    return tmux("capture-pane", "-p", "-t", PANE).splitlines()


def prepare(root: Path, n: int) -> Path:
    """A config and a registry of ``n`` tasks running ``true``; the config's path."""
    from necrocode.dispatcher.config_loader import load_config_file
    from necrocode.dispatcher.core import DispatcherCore
    from necrocode.dispatcher.models import Task, Taskset

    config_path = root / "necroui.yaml"
    config_path.write_text(f"""\
dispatcher:
  registry_path: {root / 'registry.db'}
  state_dir: {root / 'state'}
  max_global_concurrency: 4
  poll_interval: 5.0
  heartbeat_timeout: 60.0
agent_pools:
  local:
    type: local-process
    max_concurrency: 4
skill_mapping:
  default: [local]
""")
    core = DispatcherCore(load_config_file(config_path))
    tasks = [Task(id=f"t{i:05d}", title=f"task {i}", taskset="bench", command=["true"],
                  priority=i % 10) for i in range(n)]
    core.registry.submit_taskset(Taskset(name="bench", tasks=tasks))
    return config_path


def queue_title(lines: list[str]) -> str:
    for line in lines:
        m = re.search(r"Queue [\d,/]+[^─┐╮]*", line)
        if m:
            return m.group(0).strip()
    return ""


def task_ids(lines: list[str]) -> set[str]:
    return set(re.findall(r"bench/t\d{5}", "\n".join(lines)))


def wait_for(check: Check, timeout: float = 10.0) -> tuple[float, bool]:
    """Seconds until a capture passes ``check`` (and whether one did)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if check(capture()):
            return time.perf_counter() - started, True
        time.sleep(0.004)
    return timeout, False


def run(n: int, rounds: int, extra: int, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    out: dict[str, list[float]] = {}
    misses = 0
    with tempfile.TemporaryDirectory(prefix="bench-keys-tmux-") as tmp:
        config = prepare(Path(tmp), n + extra)
        necroui = shutil.which("necroui") or str(Path(sys.executable).parent / "necroui")
        tmux("new-session", "-d", "-s", PANE, "-x", "160", "-y", "50",
             f"{necroui} --config {config}")  # it draws on stderr: not redirected
        try:
            ok = wait_for(lambda lines: bool(re.search(r"Queue \d{4,}",
                                                       "\n".join(lines))), 120)[1]
            if not ok:
                sys.exit("the dashboard did not show the queue within 120 s:\n"
                         + "\n".join(capture()))
            time.sleep(3.0)
            tmux("send-keys", "-t", PANE, "tab")  # the queue table (running has the focus)
            time.sleep(1.0)

            def press(name: str, keys: list[str], check: Check) -> None:
                nonlocal misses
                time.sleep(rng.uniform(0.05, 0.5))
                tmux("send-keys", "-t", PANE, *keys)
                took, shown = wait_for(check)
                misses += not shown
                out.setdefault(name, []).append(took * 1000)

            filter_row: list[int] = []

            def filter_line(lines: list[str]) -> bool:
                for y, line in enumerate(lines):
                    if "filter: words matched" in line:
                        filter_row[:] = [y]
                        return True
                return False

            for _ in range(rounds):
                press("? (help)", ["?"], lambda ls: "necroui keys" in "\n".join(ls))
                press("esc (close help)", ["Escape"],
                      lambda ls: "necroui keys" not in "\n".join(ls))
                press("/ (filter line)", ["/"], filter_line)
                row = filter_row[0] if filter_row else 0
                press("/t01 in one read", ["/", "t", "0", "1"],  # a second / is typed
                      lambda ls, y=row: "/t01" in ls[y])
                press("enter (apply filter)", ["Enter"],
                      lambda ls: "/" in queue_title(ls).split()[1]
                      if len(queue_title(ls).split()) > 1 else False)
                press("esc (clear filter)", ["Escape"],
                      lambda ls: "/" not in queue_title(ls) and bool(queue_title(ls)))
                press("T (sort)", ["T"], lambda ls: "↕task" in queue_title(ls)
                      and "↑" not in queue_title(ls))
                press("T again (reverse)", ["T"], lambda ls: "↕task↑" in queue_title(ls))
                press("O (dispatch order)", ["O"], lambda ls: "↕" not in queue_title(ls))
                before = task_ids(capture())
                press("G (last row)", ["G"],
                      lambda ls, b=before: len(task_ids(ls) - b) > len(b) // 2)
                before = task_ids(capture())
                press("Home (first row)", ["Home"],
                      lambda ls, b=before: len(task_ids(ls) - b) > len(b) // 2)
        finally:
            tmux("send-keys", "-t", PANE, "q")
            time.sleep(1.0)
            lines = capture()
            if any("Stop" in line or "quit" in line.lower() for line in lines):
                tmux("send-keys", "-t", PANE, "s")  # stop the runners now, if it asks
            time.sleep(2.0)
            subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)
    if misses:
        print(f"{misses} keys never showed within 10 s (counted as 10 s)")
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="?", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--extra", type=int, default=7000,
                        help="tasks beyond TASKS, dispatched meanwhile (~50 a second)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    result = run(args.tasks, args.rounds, args.extra, args.seed)
    print(f"necroui in tmux 160x50, {args.tasks:,}+ tasks dispatching `true`, key -> pane "
          f"shows it (capture-pane every ~5 ms), load average {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'what':<24} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    every: list[float] = []
    for name, values in result.items():
        every += values
        print(f"{name:<24} {len(values):>4} {statistics.median(values):>6.0f}ms "
              f"{pct(values, 0.95):>6.0f}ms {max(values):>6.0f}ms")
    print(f"{'all keys':<24} {len(every):>4} {statistics.median(every):>6.0f}ms "
          f"{pct(every, 0.95):>6.0f}ms {max(every):>6.0f}ms")


if __name__ == "__main__":
    main()
