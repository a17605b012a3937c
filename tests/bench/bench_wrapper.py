"""Cost per task of the runner paths: `true` run directly, through the local launcher (sh
trampoline, direct supervision) and through the agent runner wrapper (with and without an API
to heartbeat to and report completion).

    python tests/bench/bench_wrapper.py [--runs 1000] [--concurrency 16]

Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from necrocode.dispatcher.api.server import ApiServer
from necrocode.dispatcher.api.tokens import runner_token
from necrocode.dispatcher.launchers.base import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher
from necrocode.dispatcher.launchers.local_files import TRAMPOLINE
from necrocode.dispatcher.models import AgentPool, Slot, Task

TRUE = "/bin/true"
WRAPPER = [sys.executable, "-m", "necrocode.dispatcher.agent_runner", "--"]
SECRET = b"b" * 32


class Handler:
    """The smallest ApiHandler: counts calls."""

    def __init__(self) -> None:
        self.heartbeats = 0
        self.completions = 0
        self.lock = threading.Lock()

    def on_heartbeat(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.heartbeats += 1
        return {"ok": True}

    def on_complete(self, runner_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.completions += 1
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {}

    def control(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"


def run_pool(runs: int, conc: int, one: Callable[[int], None]) -> tuple[float, list[float]]:
    """Run ``one(i)`` ``runs`` times, ``conc`` at a time; wall time and per-run latencies."""
    lat: list[float] = []

    def timed(i: int) -> None:
        t = time.perf_counter()
        one(i)
        lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as ex:
        list(ex.map(timed, range(runs)))
    return time.perf_counter() - t0, lat


def direct(_: int) -> None:
    subprocess.run([TRUE], check=True, stdin=subprocess.DEVNULL)


def trampoline(tmp: Path) -> Callable[[int], None]:
    def one(i: int) -> None:
        env = dict(os.environ, NECROCODE_EXIT_FILE=str(tmp / f"exit-{i}.json"))
        subprocess.run(["/bin/sh", "-c", TRAMPOLINE, "necrocode-runner", TRUE], check=True,
                       env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    return one


def wrapper(env: dict[str, str], tmp: Path, api: bool) -> Callable[[int], None]:
    def one(i: int) -> None:
        e = dict(env, NECROCODE_ATTEMPT_DIR=str(tmp / f"w{int(api)}-{i}"))
        if api:
            rid = f"r-{i}"
            e.update(NECROCODE_RUNNER_ID=rid, NECROCODE_RUNNER_TOKEN=runner_token(SECRET, rid))
        subprocess.run([*WRAPPER, TRUE], check=True, env=e, stdin=subprocess.DEVNULL)
    return one


def launcher_threads(runs: int, conc: int, tmp: Path, threads: int) -> tuple[float, list[float]]:
    """Launches overlapped from ``threads`` threads (launch() is thread-safe); one reaper."""
    woke: queue.Queue[str] = queue.Queue()
    env = LaunchEnvironment(api_url=None, token_for=lambda r: "", runs_dir=tmp / "runs-t",
                            on_exit=woke.put)
    launcher = LocalProcessLauncher(env)
    slot_dir = tmp / "slot-t"
    slot_dir.mkdir(exist_ok=True)
    slot = Slot("scratch/0", str(slot_dir))
    pool = AgentPool(name="local", max_concurrency=conc)
    room = threading.Semaphore(conc)
    live: dict[str, tuple[Any, float]] = {}
    lat: list[float] = []

    def start(i: int) -> None:
        room.acquire()
        t = time.perf_counter()
        r = launcher.launch(Task(id=str(i), taskset="bench-t", command=[TRUE]), slot, pool)
        live[r.runner_id] = (r, t)
        woke.put(r.runner_id)  # the exit may have fired before it was in `live`

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        futures = [ex.submit(start, i) for i in range(runs)]
        while len(lat) < runs:
            entry = live.get(woke.get())
            if entry and launcher.poll(entry[0]) is not None and live.pop(
                    entry[0].runner_id, None):
                launcher.release(entry[0])
                lat.append(time.perf_counter() - entry[1])
                room.release()
        for f in futures:
            f.result()
    wall = time.perf_counter() - t0
    launcher.close()
    return wall, lat


def launcher_loop(runs: int, conc: int, tmp: Path) -> tuple[float, list[float]]:
    """The engine's pattern: one thread launches, on_exit wakes it, it polls and refills."""
    woke: queue.Queue[str] = queue.Queue()
    env = LaunchEnvironment(api_url=None, token_for=lambda r: "", runs_dir=tmp / "runs",
                            on_exit=woke.put)
    launcher = LocalProcessLauncher(env)
    slot_dir = tmp / "slot"
    slot_dir.mkdir(exist_ok=True)
    slot = Slot("scratch/0", str(slot_dir))
    pool = AgentPool(name="local", max_concurrency=conc)
    live: dict[str, tuple[Any, float]] = {}
    lat: list[float] = []
    launched = 0
    t0 = time.perf_counter()
    while launched < runs or live:
        while launched < runs and len(live) < conc:
            t = time.perf_counter()
            r = launcher.launch(Task(id=str(launched), taskset="bench", command=[TRUE]),
                                slot, pool)
            live[r.runner_id] = (r, t)
            launched += 1
        rid = woke.get()
        entry = live.get(rid)
        if entry and launcher.poll(entry[0]) is not None:
            launcher.release(entry[0])
            lat.append(time.perf_counter() - entry[1])
            del live[rid]
    wall = time.perf_counter() - t0
    launcher.close()
    return wall, lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    runs, conc = args.runs, args.concurrency
    handler = Handler()
    server = ApiServer("127.0.0.1", 0, handler, SECRET, "admin")
    url = server.start()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NECROCODE_")}
    base_env.update(NECROCODE_HEARTBEAT_INTERVAL="10", NECROCODE_HEARTBEAT_TIMEOUT="60")
    api_env = dict(base_env, NECROCODE_API_URL=url)
    rows: list[tuple[str, float, list[float]]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows.append(("direct: subprocess `true`", *run_pool(runs, conc, direct)))
        rows.append(("sh trampoline (local launcher's exit recorder)",
                     *run_pool(runs, conc, trampoline(tmp))))
        rows.append(("LocalProcessLauncher launch/on_exit/poll loop",
                     *launcher_loop(runs, conc, tmp)))
        rows.append(("LocalProcessLauncher, launches from 4 threads",
                     *launcher_threads(runs, conc, tmp, 4)))
        rows.append(("agent_runner wrapper, no API", *run_pool(runs, conc,
                                                               wrapper(base_env, tmp, False))))
        rows.append(("agent_runner wrapper + heartbeat + complete",
                     *run_pool(runs, conc, wrapper(api_env, tmp, True))))
    server.stop()
    base = rows[0][1]
    print(f"\n{runs} runs of `true`, concurrency {conc}, {os.cpu_count()} CPUs, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{platform.system()} {platform.release()}")
    print(f"API calls seen: {handler.heartbeats} heartbeats, {handler.completions} completions\n")
    head = f"{'path':<48} {'wall s':>8} {'tasks/s':>8} {'ms/task':>8} {'x direct':>9} " \
           f"{'extra ms/task':>13} {'p50 ms':>8} {'p99 ms':>8}"
    print(head)
    print("-" * len(head))
    for name, wall, lat in rows:
        lat_ms = sorted(x * 1000 for x in lat)
        p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
        print(f"{name:<48} {wall:>8.2f} {runs / wall:>8.0f} {wall / runs * 1000:>8.2f} "
              f"{wall / base:>9.2f} {(wall - base) / runs * 1000:>13.2f} "
              f"{statistics.median(lat_ms):>8.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
