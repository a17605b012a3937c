"""The Dispatcher with a big queue: a headless Dispatcher holding 100k tasks, and the engine's
cost per dispatched task while 10k wait.

    python tests/bench/bench_queue.py [--headless 100000] [--dispatching 1000,10000]
                                      [--repeat 3] [--idle-seconds 10] [--dir /var/tmp]

1. ``--headless N``: a registry with N READY tasks whose only pool is disabled (nothing runs);
   ``necroui --no-tui`` on it as a subprocess, read through /proc and its HTTP API: seconds from
   the process start to its "dispatcher started" line and to the first snapshot showing all N
   tasks queued (the start) with the CPU the process used to that point, peak and final RSS,
   CPU over ``--idle-seconds`` once started (idle CPU), and the seconds SIGINT takes to end
   it. Beside it, the floor: Python importing ``necroui.cli``, the same rows read with a bare
   ``sqlite3`` ``fetchall``, and the registry's ``list_tasks()`` of them (Task objects), each
   a subprocess with its peak RSS.
2. ``--dispatching Q,...``: ``DispatcherCore`` (public API, local pool of 16, SQLite registry)
   with Q tasks of ``true`` submitted at once; once 100 are done, over the next ``--window``
   done tasks: CPU of the engine thread and of the whole process per dispatched task, the
   engine thread's share of one core, and the cost of a snapshot publication: the round trip
   of ``refresh_snapshot()`` (a forced publish on the engine thread) minus that of a no-op
   ``diagnose()``, medians of alternating samples. Equal figures at 1k and 10k queued mean
   the cost follows the changes, not the queue.

Medians of ``--repeat`` runs with their range; prints Markdown tables; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import (
    LoadWatch,
    Spread,
    child,
    filesystem,
    machine,
    measured,
    proc_cpu,
    proc_status,
    table,
    thread_cpu,
)
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset
from necrocode.dispatcher.registry import SQLiteRegistry

TRUE = "/bin/true"
START_TIMEOUT = 300.0


def fill_registry(path: Path, n: int) -> None:
    reg = SQLiteRegistry(path)
    try:
        tasks = [Task(id=f"t{i}", title=f"task {i}", taskset="queued", command=[TRUE],
                      priority=i % 7) for i in range(n)]
        reg.submit_taskset(Taskset(name="queued", tasks=tasks))
    finally:
        reg.close()


def write_config(path: Path, state_dir: Path) -> None:
    path.write_text(
        "dispatcher:\n"
        f"  state_dir: {json.dumps(str(state_dir))}\n"
        "agent_pools:\n"
        "  local: {type: local-process, max_concurrency: 16, enabled: false}\n"
        "skill_mapping:\n"
        "  default: [local]\n")


def api_status(state_dir: Path) -> dict[str, Any] | None:
    """The running Dispatcher's snapshot without its lists, or None while it does not answer."""
    try:
        info = json.loads((state_dir / "dispatcher.json").read_text())
        token = (state_dir / "admin.token").read_text().strip()
        req = urllib.request.Request(info["url"] + "/v1/status?queued=0&finished=0&events=0",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (OSError, ValueError, KeyError):
        return None


def headless_once(root: Path, registry: Path, n: int, idle_s: float) -> dict[str, float]:
    state = root / f"state-{time.monotonic_ns()}"
    cfg = root / "headless.yaml"
    write_config(cfg, state)
    argv = [sys.executable, "-m", "necroui", "--config", str(cfg), "--registry", str(registry),
            "--no-tui"]
    started_line = threading.Event()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    with child(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        def read_lines() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "dispatcher started" in line and not started_line.is_set():
                    out["started_line"] = time.perf_counter() - t0
                    started_line.set()

        reader = threading.Thread(target=read_lines, daemon=True)
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            status = api_status(state) if started_line.is_set() else None
            c = (status or {}).get("counters", {})
            if status and status.get("state") == "running" and c.get("ready") == n \
                    and status.get("totals", {}).get("queued") == n:
                out["start"] = time.perf_counter() - t0
                out["start_cpu"] = proc_cpu(proc.pid)[0]  # its own CPU to that point
                break
            time.sleep(0.05)
        if "start" not in out:
            raise RuntimeError(f"necroui --no-tui did not show {n} queued tasks in "
                               f"{START_TIMEOUT:.0f} s (exit status {proc.poll()})")
        time.sleep(1.0)  # let the first snapshot's follow-up work end
        cpu0 = sum(proc_cpu(proc.pid))
        time.sleep(idle_s)
        out["idle_cpu_pct"] = (sum(proc_cpu(proc.pid)) - cpu0) / idle_s * 100
        out["rss_mb"] = proc_status(proc.pid, "VmRSS")
        out["peak_mb"] = proc_status(proc.pid, "VmHWM")
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
            out["stop"] = time.perf_counter() - t1
        except subprocess.TimeoutExpired:
            out["stop"] = float("nan")
    return out


def floors(registry: Path) -> list[tuple[str, tuple[float, float]]]:
    py = sys.executable
    db = json.dumps(str(registry))
    return [
        ("Python + `import necroui.cli`", measured([py, "-c", "import necroui.cli"])),
        ("bare `sqlite3` fetchall of the task rows", measured([py, "-c", (
            f"import sqlite3; rows = sqlite3.connect({db}).execute("
            "'select * from tasks').fetchall(); print(len(rows))")])),
        ("`SQLiteRegistry.list_tasks()` (Task objects)", measured([py, "-c", (
            "from necrocode.dispatcher.registry import SQLiteRegistry; "
            f"print(len(SQLiteRegistry({db}).list_tasks()))")])),
    ]


def bench_headless(root: Path, n: int, repeat: int, idle_s: float) -> None:
    registry = root / "headless.db"
    t0 = time.perf_counter()
    fill_registry(registry, n)
    print(f"(registry of {n:,} READY tasks written in {time.perf_counter() - t0:.1f} s)",
          file=sys.stderr)
    runs = []
    for r in range(repeat):
        runs.append(headless_once(root, registry, n, idle_s))
        print(f"headless run {r + 1}/{repeat}: {runs[-1]}", file=sys.stderr, flush=True)
    floor = floors(registry)

    def col(key: str, spec: str, unit: str) -> str:
        return Spread.of([x[key] for x in runs]).fmt(spec, unit)

    print(f"\n`necroui --no-tui` with {n:,} READY tasks queued (pool disabled), "
          f"{repeat} run(s), idle CPU over {idle_s:g} s\n")
    print(table(["measure", "median (min–max)"], [
        ["process start -> \"dispatcher started\" line", col("started_line", ".2f", " s")],
        [f"process start -> a snapshot with all {n:,} queued (start)", col("start", ".2f", " s")],
        ["CPU of the process to that point (the start's CPU)", col("start_cpu", ".2f", " s")],
        ["peak RSS (VmHWM)", col("peak_mb", ".0f", " MB")],
        ["RSS once started", col("rss_mb", ".0f", " MB")],
        ["idle CPU once started", col("idle_cpu_pct", ".2f", " %")],
        ["SIGINT -> exit", col("stop", ".2f", " s")],
    ]))
    print(f"\nFloors, on the same {n:,} rows (one run each):\n")
    print(table(["process", "wall", "peak RSS"],
                [[name, f"{w:.2f} s", f"{m:.0f} MB"] for name, (w, m) in floor]))


def thread_groups() -> dict[str, float]:
    """CPU seconds of this process's Python threads, by name less its pool number."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.native_id is not None:
            name = re.sub(r"_\d+$", "", t.name)
            out[name] = out.get(name, 0.0) + thread_cpu(t.native_id)
    return out


def dispatching_once(root: Path, queued: int, window: int, samples: int) -> dict[str, float]:
    folder = root / f"disp-{queued}-{time.monotonic_ns()}"
    core = DispatcherCore(DispatcherConfig(
        registry_path=str(folder / "registry.db"), state_dir=str(folder / "state"),
        max_global_concurrency=16, skill_mapping={"default": ["local"]},
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=16)]))
    core.start()
    try:
        tid: int = core.diagnose(lambda _d: threading.get_native_id())
        tasks = [Task(id=f"t{i}", title=f"t{i}", taskset="q", command=[TRUE])
                 for i in range(queued)]
        core.submit(Taskset(name="q", tasks=tasks))

        def wait_done(target: int) -> tuple[int, float, float, float]:
            version = 0
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                snap = core.wait_for_snapshot(version, timeout=1.0)
                version = snap.version
                if snap.counters.done >= target:
                    break
            else:
                raise RuntimeError(f"{target} tasks not done in {START_TIMEOUT:.0f} s")
            return snap.counters.done, thread_cpu(tid), time.process_time(), time.monotonic()

        d0, e0, p0, w0 = wait_done(100)
        g0 = thread_groups()
        trips: dict[str, list[float]] = {"publish": [], "noop": []}
        gap = 0.05
        for _ in range(samples):  # alternating, spread over the window
            for kind in ("publish", "noop"):
                t = time.perf_counter()
                if kind == "publish":
                    core.refresh_snapshot()
                else:
                    core.diagnose(lambda _d: None)
                trips[kind].append(time.perf_counter() - t)
                time.sleep(gap)
        d1, e1, p1, w1 = wait_done(d0 + window)
        g1 = thread_groups()
        queue_left = len(core.snapshot().queued)
    finally:
        core.stop(timeout=10)
    done = max(1, d1 - d0)
    pub = Spread.of(trips["publish"]).median - Spread.of(trips["noop"]).median
    return {"engine_ms": (e1 - e0) / done * 1000, "process_ms": (p1 - p0) / done * 1000,
            "engine_share": (e1 - e0) / max(1e-9, w1 - w0) * 100, "publish_ms": pub * 1000,
            "publish_trip_ms": Spread.of(trips["publish"]).median * 1000,
            "noop_trip_ms": Spread.of(trips["noop"]).median * 1000,
            "per_s": done / max(1e-9, w1 - w0), "queue_left": queue_left,
            **{f"thread:{k}": (v - g0.get(k, 0.0)) / done * 1000 for k, v in g1.items()}}


def bench_dispatching(root: Path, sizes: list[int], window: int, repeat: int,
                      samples: int) -> None:
    rows = []
    per_thread: dict[str, dict[int, str]] = {}
    for q in sizes:
        runs = []
        for r in range(repeat):
            runs.append(dispatching_once(root, q, min(window, q // 2), samples))
            print(f"dispatching {q} run {r + 1}/{repeat}: {runs[-1]}", file=sys.stderr,
                  flush=True)

        def col(key: str, spec: str, unit: str = "", runs: list[dict[str, float]] = runs) -> str:
            return Spread.of([x[key] for x in runs]).fmt(spec, unit)

        for key in sorted({k for x in runs for k in x if k.startswith("thread:")}):
            per_thread.setdefault(key[7:], {})[q] = Spread.of(
                [x.get(key, 0.0) for x in runs]).fmt(".2f", " ms")
        rows.append([f"{q:,}", col("engine_ms", ".2f", " ms"), col("process_ms", ".2f", " ms"),
                     col("engine_share", ".0f", " %"), col("per_s", ".0f"),
                     col("publish_ms", ".1f", " ms"), col("publish_trip_ms", ".1f", " ms"),
                     col("noop_trip_ms", ".1f", " ms")])
    print(f"\nWhile dispatching `true` (local pool of 16), over {window} done tasks after the "
          f"first 100; {repeat} run(s), medians (min–max)\n")
    print(table(["queued at start", "engine thread CPU per task", "process CPU per task",
                 "engine thread, % of a core", "tasks/s", "snapshot publication",
                 "refresh_snapshot() round trip", "no-op diagnose() round trip"], rows))
    print("\nCPU per dispatched task by thread (the rest of the process CPU: threads that "
          "ended meanwhile, and what is not a Python thread)\n")
    print(table(["thread", *(f"{q:,} queued" for q in sizes)],
                [[name, *(cells.get(q, "—") for q in sizes)]
                 for name, cells in sorted(per_thread.items())]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headless", type=int, default=100_000,
                        help="queued tasks for the headless run (0: skip it)")
    parser.add_argument("--dispatching", default="1000,10000",
                        help="queue sizes for the dispatching runs ('': skip them)")
    parser.add_argument("--window", type=int, default=500, help="done tasks measured")
    parser.add_argument("--samples", type=int, default=15,
                        help="publication round trips per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--dir", default="/var/tmp", help="where registries and state go")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"state on {filesystem(args.dir)} ({args.dir})")
    watch = LoadWatch()
    with tempfile.TemporaryDirectory(prefix="necrocode-queue-", dir=args.dir) as tmp:
        if args.headless:
            bench_headless(Path(tmp), args.headless, args.repeat, args.idle_seconds)
        sizes = [int(x) for x in args.dispatching.split(",") if x.strip()]
        if sizes:
            bench_dispatching(Path(tmp), sizes, args.window, args.repeat, args.samples)
    print()
    print(watch.stop().line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
