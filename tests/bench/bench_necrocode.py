"""Benchmark of the NecroCode registry directory (a script: prints a table, asserts nothing).

    python tests/bench/bench_necrocode.py [--sizes 1000,10000] [--reps 30]

For each size, one taskset of that many tasks written in the original's format (as its
create_taskset writes it), then through NecroCodeRegistry: opening the directory; a poll of the
change feed when nothing changed (a ``stat`` per file) and after another writer replaced the
file (read, parse, compare); one transition (lock, ``stat``, re-encode one task, assemble and
write the whole file with fsync, rename, append its events) with the cache warm, the first one
after opening (every task encoded once) and one after another writer (read again first);
``transition_many`` of ``reps`` tasks of the taskset (one rewrite for all); the file size; and
for comparison what one ``json.dump(indent=2)`` of the whole taskset costs (what a rewrite costs
without the per-task text cache) and a transition of the SQLite registry.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from necrocode.dispatcher.models import Task, Taskset, TaskState
from necrocode.dispatcher.registry import NecroCodeRegistry, SQLiteRegistry, TransitionRequest

S = TaskState
SKILLS = ["backend", "frontend", "database", None]


def write_original(root: Path, spec: str, n: int) -> Path:
    """A taskset of ``n`` READY tasks as the original's TaskStore writes it."""
    stamp = datetime.now().isoformat()
    tasks: list[dict[str, object]] = [
        {"id": f"{i // 10}.{i % 10}", "title": f"task number {i}",
         "description": "implement the thing described in the spec", "state": "ready",
         "dependencies": [], "required_skill": SKILLS[i % 4], "priority": i % 7,
         "is_optional": False, "assigned_slot": None, "reserved_branch": None,
         "runner_id": None, "artifacts": [], "metadata": {}, "created_at": stamp,
         "updated_at": stamp} for i in range(n)]
    path = root / "tasksets" / spec / "taskset.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"spec_name": spec, "version": 1, "created_at": stamp,
                                "updated_at": stamp, "tasks": tasks, "metadata": {}},
                               indent=2, ensure_ascii=False))
    return path


def touch_as_other_writer(path: Path, i: int) -> None:
    """Another writer's change of one task (whole file read, changed, rewritten, renamed)."""
    data = json.loads(path.read_text())
    data["tasks"][i]["priority"] += 1
    data["version"] += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    tmp.replace(path)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def bench(n: int, reps: int, folder: Path) -> dict[str, str]:
    root = folder / f"necro-{n}"
    path = write_original(root, "big", n)
    keys = [f"big/{i // 10}.{i % 10}" for i in range(n)]
    row: dict[str, str] = {"tasks": f"{n:,}", "file": f"{path.stat().st_size / 1e6:.1f} MB"}
    start = time.perf_counter()
    reg = NecroCodeRegistry(root)
    row["open"] = ms(time.perf_counter() - start)
    seq = reg.changes_since(0).seq
    poll = partial(reg.changes_since, seq)
    row["poll, nothing changed"] = ms(statistics.median(timed(poll) for _ in range(reps * 5)))
    polls = []
    for i in range(min(reps, 10)):
        touch_as_other_writer(path, i)
        polls.append(timed(poll))
    row["poll after another writer"] = ms(statistics.median(polls))
    todo = iter(keys)
    row["first transition"] = ms(timed(partial(reg.transition, next(todo), S.RUNNING)))
    warm = [timed(partial(reg.transition, next(todo), S.RUNNING)) for _ in range(reps)]
    row["transition"] = ms(statistics.median(warm))
    after_other = []
    for _ in range(min(reps, 10)):
        touch_as_other_writer(path, 0)
        after_other.append(timed(partial(reg.transition, next(todo), S.RUNNING)))
    row["transition after another writer"] = ms(statistics.median(after_other))
    batch = [TransitionRequest(next(todo), S.RUNNING, expected=S.READY) for _ in range(reps)]
    row[f"transition_many of {reps}, per task"] = ms(
        timed(partial(reg.transition_many, batch)) / reps)
    data = json.loads(path.read_text())
    row["json.dump indent=2 of the file"] = ms(timed(
        partial(json.dumps, data, indent=2, ensure_ascii=False)))
    sql = SQLiteRegistry(folder / f"sqlite-{n}.db")
    sql.submit_taskset(Taskset("big", tasks=[Task(k.split("/")[1]) for k in keys]))
    row["SQLite transition"] = ms(statistics.median(
        timed(partial(sql.transition, k, S.RUNNING)) for k in keys[:reps]))
    sql.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-necrocode-") as tmp:
        rows = [bench(int(n), args.reps, Path(tmp)) for n in args.sizes.split(",")]
    keys = list(rows[0])
    print(f"Python {sys.version.split()[0]}; {args.reps} repetitions (medians)\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(row[k] for k in keys) + " |")


if __name__ == "__main__":
    main()
