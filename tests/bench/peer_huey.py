"""Huey (SqliteHuey) as a peer for bench_peers.py: a consumer and a producer, both children.

    python tests/bench/peer_huey.py consume --db FILE [--workers 16] [--delay 0.001]
                                            [--max-delay 0.01]
    python tests/bench/peer_huey.py produce --db FILE --consumer PID [--tasks 1000]

The consumer runs process workers (``-k process``) on a SQLite file in WAL mode with
``synchronous=NORMAL`` (what the Dispatcher's registry uses), no periodic tasks; an idle worker
polls the queue every ``--delay`` seconds, backing off up to ``--max-delay`` (Huey's defaults,
0.1 and 10 s, would leave a burst waiting for sleeping workers). The task runs ``true`` with
``subprocess.run`` and returns its exit status (kept as a result).

The producer waits until the consumer ran a first task (its start is not measured), then times
the *dispatch phase*: from the first enqueue of ``--tasks`` tasks until every result is stored
(polled every 2 ms), and prints one JSON line with the consumer tree's CPU over that phase
(the consumer and its workers; the workers' reaped children: the commands). Needs
``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from typing import Any

from benchlib import own_cpu, tree_cpu

TRUE = "/bin/true"
TIMEOUT = 600.0


def make_huey(db: str) -> tuple[Any, Any]:
    """The Huey instance on ``db`` and its one task (a ``true`` process)."""
    from huey import Huey
    from huey.storage import SqliteStorage

    class NormalSyncStorage(SqliteStorage):  # type: ignore[misc]
        """SqliteStorage with ``synchronous=NORMAL`` (Huey offers OFF or FULL)."""

        def _create_connection(self) -> sqlite3.Connection:
            conn = super()._create_connection()
            conn.execute("pragma synchronous=1")
            return conn

    huey = Huey("bench", storage_class=NormalSyncStorage, filename=db)

    def run_true() -> int:
        return subprocess.run([TRUE], stdin=subprocess.DEVNULL).returncode

    return huey, huey.task(name="run_true")(run_true)


def consume(args: argparse.Namespace) -> int:
    huey, _ = make_huey(args.db)
    consumer = huey.create_consumer(
        workers=args.workers, worker_type="process", periodic=False,
        initial_delay=args.delay, max_delay=args.max_delay, backoff=1.15,
        check_worker_health=False)
    consumer.run()
    return 0


def wait_results(huey: Any, n: int, deadline: float) -> bool:
    while huey.result_count() < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def produce(args: argparse.Namespace) -> int:
    huey, run_true = make_huey(args.db)
    warm = run_true()  # the consumer and its workers are up once this ran
    if warm.get(blocking=True, timeout=120) != 0:
        raise SystemExit("huey: the warm-up task did not run")
    n = args.tasks
    cons0 = tree_cpu(args.consumer)
    me0 = own_cpu()
    t0 = time.perf_counter()
    for _ in range(n):
        run_true()
    submitted = time.perf_counter() - t0
    ok = wait_results(huey, n, time.monotonic() + TIMEOUT)
    wall = time.perf_counter() - t0
    cons1 = tree_cpu(args.consumer)
    me1 = own_cpu()
    print(json.dumps({
        "wall": wall if ok else float("nan"), "submit": submitted,
        "cpu_self": cons1[0] - cons0[0], "cpu_children": cons1[1] - cons0[1],
        "cpu_producer": me1 - me0, "done": huey.result_count(), "tasks": n,
    }), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--db", required=True)
    c.add_argument("--workers", type=int, default=16)
    c.add_argument("--delay", type=float, default=0.001)
    c.add_argument("--max-delay", type=float, default=0.01)
    p = sub.add_parser("produce")
    p.add_argument("--db", required=True)
    p.add_argument("--consumer", type=int, required=True, help="the consumer's pid")
    p.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    return consume(args) if args.mode == "consume" else produce(args)


if __name__ == "__main__":
    sys.exit(main())
