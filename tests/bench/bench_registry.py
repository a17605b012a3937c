"""Benchmark of the SQLite Task Registry (a script: prints tables, asserts nothing).

    python tests/bench/bench_registry.py [--sizes 1000,10000,100000] [--reps 20] [--repeat 3]
                                         [--dir /var/tmp]

For each size: submit of a taskset of that many tasks (one transaction) beside its floor, a bare
``executemany`` per table of the very rows that submit wrote into an empty database with the
same schema, indexes and pragmas (``--repeat`` alternating pairs, medians), resubmit of the same
file (all unchanged), poll of the change feed after 10 tasks changed (``changes_since`` from the
previous sequence number, median over repetitions), ``list_tasks(state=READY,
order_by="priority", limit=100)``, ``count_tasks()``, and the size of the registry on disk. Then
the thread model: a connection per thread (what SQLiteRegistry does) against one shared
connection behind a lock, under one writer thread and three reader threads, and the longest
read while another thread submits a 20,000-task taskset.

The CPU columns (the process's CPU time during each submit and during its bare insert, and
the median of their ratios) tell the Python work over the floor apart from waits for a disk
that other work keeps busy, which the wall-time ratio also holds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import filesystem
from necrocode.dispatcher.models import Task, Taskset, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry

SKILLS = ["python", "frontend", "database", "docs"]


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"CPU: {cpu}; cores: {os.cpu_count()}; Python {platform.python_version()}; "
        f"SQLite {sqlite3.sqlite_version}; {platform.system()} {platform.release()}"
    )


def make_taskset(n: int) -> Taskset:
    """n tasks in chains of 10 (each depends on the previous), varied skill and priority."""
    tasks = [
        Task(
            id=f"{i // 10}.{i % 10}",
            title=f"task number {i}",
            description="implement the thing described in the spec",
            dependencies=[f"{i // 10}.{i % 10 - 1}"] if i % 10 else [],
            required_skill=SKILLS[i % len(SKILLS)],
            priority=i % 7,
            metadata={"component": f"c{i % 13}"},
        )
        for i in range(n)
    ]
    return Taskset(name=f"bench-{n}", tasks=tasks, repo="/tmp/repo")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bare_insert(source: Path, target: Path) -> tuple[float, float]:
    """Seconds (wall, then CPU) to write ``source``'s rows into an empty database with the
    same schema and indexes (and the registry's pragmas) with one bare ``executemany`` per
    table, in one transaction: the floor for a submit of the same tasks."""
    src = sqlite3.connect(source)
    schema = [sql for (sql,) in src.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid")]
    tables = [name for (name,) in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid")]
    rows = {t: src.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
    src.close()
    dst = sqlite3.connect(target, isolation_level=None)
    dst.execute("PRAGMA journal_mode = WAL")
    dst.execute("PRAGMA synchronous = NORMAL")
    dst.execute("PRAGMA temp_store = MEMORY")
    for sql in schema:
        dst.execute(sql)
    t0, cpu0 = time.perf_counter(), time.process_time()
    dst.execute("BEGIN IMMEDIATE")
    for t in tables:
        if rows[t]:
            marks = ",".join("?" * len(rows[t][0]))
            dst.executemany(f'INSERT INTO "{t}" VALUES ({marks})', rows[t])
    dst.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    dst.close()
    return elapsed, cpu


def bench_size(folder: Path, n: int, reps: int, repeat: int = 1) -> dict[str, Any]:
    taskset = make_taskset(n)
    submits: list[float] = []
    cpus: list[float] = []
    bares: list[float] = []
    bare_cpus: list[float] = []
    for r in range(max(1, repeat)):  # alternating: a submit, then the bare insert of its rows
        path = folder / f"registry-{n}-{r}.db"
        reg = SQLiteRegistry(path)
        cpu0 = time.process_time()
        submit_s, result = timed(lambda reg=reg: reg.submit_taskset(taskset))  # type: ignore[misc]
        cpus.append(time.process_time() - cpu0)
        submits.append(submit_s)
        assert len(result.created) == n
        bare_s, bare_cpu = bare_insert(path, folder / f"bare-{n}-{r}.db")
        bares.append(bare_s)
        bare_cpus.append(bare_cpu)
        if r < max(1, repeat) - 1:
            reg.close()
    submit_s, submit_cpu = statistics.median(submits), statistics.median(cpus)
    bare_s = statistics.median(bares)
    resubmit_s, result = timed(lambda: reg.submit_taskset(taskset))
    assert len(result.unchanged) == n

    lists = [
        timed(lambda: reg.list_tasks(state=TaskState.READY, order_by="priority", limit=100))[0]
        for _ in range(reps)
    ]
    ready = [t.key for t in reg.list_tasks(state=TaskState.READY, limit=reps * 5)]
    blocked = [t.key for t in reg.list_tasks(state=TaskState.BLOCKED, limit=reps * 5)]
    seq = reg.current_seq()
    polls: list[float] = []
    for r in range(reps):  # 10 tasks change (5 claimed, 5 re-prioritised), then one poll
        for key in ready[r * 5 : r * 5 + 5]:
            reg.transition(key, TaskState.RUNNING, expected=TaskState.READY)
        for key in blocked[r * 5 : r * 5 + 5]:
            reg.set_priority(key, 100 + r)
        dt, batch = timed(lambda seq=seq: reg.changes_since(seq))  # type: ignore[misc]
        assert len(batch.tasks) == 10, len(batch.tasks)
        seq = batch.seq
        polls.append(dt)
    counts = [timed(reg.count_tasks)[0] for _ in range(reps)]
    reg._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = reg.size_on_disk()
    assert reg.integrity_check() == "ok"
    reg.close()
    return {
        "tasks": n,
        "submit_s": submit_s,
        "submit_cpu": submit_cpu,
        "bare_s": bare_s,
        "vs_bare": submit_s / bare_s,
        "bare_cpu": statistics.median(bare_cpus),
        "cpu_vs_bare": statistics.median(a / b for a, b in zip(cpus, bare_cpus, strict=True)),
        "vs_bare_range": f"{min(a / b for a, b in zip(submits, bares, strict=True)):.1f}"
                         f"–{max(a / b for a, b in zip(submits, bares, strict=True)):.1f}x",
        "tasks_per_s": n / submit_s,
        "resubmit_s": resubmit_s,
        "poll_ms": median_ms(polls),
        "list_ms": median_ms(lists),
        "count_ms": median_ms(counts),
        "size_mb": size / 1e6,
    }


class _SharedConnectionRegistry(SQLiteRegistry):
    """The alternative thread model: one connection for every thread, behind one lock."""

    def __init__(self, path: Path) -> None:
        self._shared_lock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        super().__init__(path)

    def _conn(self) -> sqlite3.Connection:
        if self._shared is None:
            self._shared = super()._conn()
        return self._shared


def _locked(name: str) -> Callable[..., Any]:
    method = getattr(SQLiteRegistry, name)

    def wrapper(self: _SharedConnectionRegistry, *args: Any, **kwargs: Any) -> Any:
        with self._shared_lock:
            return method(self, *args, **kwargs)

    return wrapper


for _name in ("submit_taskset", "get_task", "list_tasks", "count_tasks", "transition",
              "set_priority", "changes_since", "current_seq", "get_events", "record_event"):
    setattr(_SharedConnectionRegistry, _name, _locked(_name))


def _run_threads(reg: SQLiteRegistry, seconds: float) -> dict[str, float]:
    """One writer thread (claims or re-prioritises tasks) and three readers (list + poll)."""
    reg.submit_taskset(make_taskset(10_000))
    keys = [t.key for t in reg.list_tasks(state=TaskState.READY)]
    stop = time.monotonic() + seconds
    write_lat: list[float] = []
    read_lat: list[list[float]] = [[], [], []]

    def writer() -> None:  # claims a task, then requeues it: the READY set stays full
        i = 0
        while time.monotonic() < stop:
            key = keys[(i // 2) % len(keys)]
            t0 = time.perf_counter()
            if i % 2:
                reg.transition(key, TaskState.READY, expected=TaskState.RUNNING)
            else:
                reg.transition(key, TaskState.RUNNING, expected=TaskState.READY)
            write_lat.append(time.perf_counter() - t0)
            i += 1

    def reader(slot: int) -> None:
        seq = reg.current_seq()
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            reg.list_tasks(state=TaskState.READY, order_by="priority", limit=100)
            seq = reg.changes_since(seq).seq
            read_lat[slot].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reads = [x for lat in read_lat for x in lat]

    # how long can a reader stall while another thread submits a big taskset?
    big = make_taskset(20_000)
    big.name = "stall"
    submitter = threading.Thread(target=reg.submit_taskset, args=(big,))
    stalls: list[float] = []
    submitter.start()
    while submitter.is_alive():
        t0 = time.perf_counter()
        reg.get_task(keys[0])
        stalls.append(time.perf_counter() - t0)
    submitter.join()
    return {
        "stall_ms": max(stalls, default=0.0) * 1000,
        "writes_per_s": len(write_lat) / seconds,
        "write_p50_ms": median_ms(write_lat),
        "reads_per_s": len(reads) / seconds,
        "read_p50_ms": median_ms(reads),
    }


def bench_threads(folder: Path, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for label, cls in (("connection per thread", SQLiteRegistry),
                       ("one connection + lock", _SharedConnectionRegistry)):
        reg = cls(folder / f"threads-{cls.__name__}.db")
        rows.append({"model": label, **_run_threads(reg, seconds)})
        reg.close()
    return rows


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """A Markdown table; ``columns`` are (row key, title, format spec)."""
    cells = [[format(row[key], fmt).strip() for key, _, fmt in columns] for row in rows]
    widths = [
        max([len(title)] + [len(r[i]) for r in cells]) for i, (_, title, _) in enumerate(columns)
    ]
    titles = [t.ljust(w) for (_, t, _), w in zip(columns, widths, strict=True)]
    print("| " + " | ".join(titles) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--thread-seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=1,
                        help="submits (each beside a bare executemany of its rows); medians")
    parser.add_argument("--dir", default=None,
                        help="folder for the databases (default: the system temp folder)")
    args = parser.parse_args(argv)
    print(machine())
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-registry-", dir=args.dir) as tmp:
        print(f"databases on {filesystem(tmp)} ({tmp}); submits: median of {args.repeat}\n")
        rows = [bench_size(Path(tmp), int(n), args.reps, args.repeat)
                for n in args.sizes.split(",")]
        print_table(rows, [
            ("tasks", "tasks", ",d"),
            ("submit_s", "submit (s)", ".2f"),
            ("submit_cpu", "submit CPU (s)", ".2f"),
            ("bare_s", "bare executemany, same rows and indexes (s)", ".2f"),
            ("vs_bare", "submit vs bare", ".1f"),
            ("vs_bare_range", "(min–max)", ""),
            ("bare_cpu", "bare CPU (s)", ".2f"),
            ("cpu_vs_bare", "submit CPU vs bare CPU", ".2f"),
            ("tasks_per_s", "tasks/s", ",.0f"),
            ("resubmit_s", "resubmit unchanged (s)", ".2f"),
            ("poll_ms", "poll after 10 changes (ms)", ".2f"),
            ("list_ms", "list READY by priority, 100 (ms)", ".2f"),
            ("count_ms", "count_tasks (ms)", ".2f"),
            ("size_mb", "size on disk (MB)", ".1f"),
        ])
        print()
        print(f"Thread model, 10,000 tasks, 1 writer + 3 readers for {args.thread_seconds} s:")
        print_table(bench_threads(Path(tmp), args.thread_seconds), [
            ("model", "thread model", "<22"),
            ("writes_per_s", "writes/s", ",.0f"),
            ("write_p50_ms", "write p50 (ms)", ".2f"),
            ("reads_per_s", "reads/s", ",.0f"),
            ("read_p50_ms", "read p50 (ms)", ".2f"),
            ("stall_ms", "longest read during a 20k submit (ms)", ",.1f"),
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
