"""The Dispatcher beside its peers: the same commands at the same concurrency, in the same run.

    python tests/bench/bench_peers.py [--tasks 1000] [--concurrency 16] [--rounds 5]
                                      [--dir /var/tmp] [--fresh-ext4 MB] [--wrapper]
                                      [--skip huey,parallel]

Each round runs every peer once, in the same order (ABCD ABCD ...), so that load from other
work on the machine falls on all of them alike; the table gives each peer's median over the
rounds with the spread (min–max), and its ratio to ``xargs -P`` (the median of the per-round
ratios, so a slow round slows its own baseline too). Peers:

- ``xargs -P<concurrency> -n1 true`` — the baseline;
- GNU parallel ``-j<concurrency>`` (Debian package ``parallel``; skipped, with a note, when
  absent);
- Huey with SqliteHuey (WAL, ``synchronous=NORMAL``), process workers (``peer_huey.py``;
  ``pip install -e '.[bench]'``; skipped when Huey is not installed);
- this project: ``DispatcherCore`` through its public API, a local-process pool and a SQLite
  registry (``peer_dispatcher.py``); with ``--wrapper`` also each task through the runner
  wrapper (``python -m necrocode.dispatcher.agent_runner``), about 35 s a round.

For Huey and the Dispatcher the figure is the *dispatch phase*: from the submit of the first task
to the last one done, with the consumer or engine already started (interpreter start and imports
are not counted); xargs and parallel are timed whole (their start is a few milliseconds for
xargs, ~0.2 s of Perl for parallel). CPU seconds: the scheduling process itself (the Dispatcher's
one process; Huey's consumer and its workers) and the processes it reaped (the commands, and the
Dispatcher's ``sh`` trampolines); for xargs and parallel, all together. "Others' load" is the
CPU the rest of the machine used during each round (busy time in /proc/stat less this
benchmark's own), in cores: with 2 cores, anything above ~0.2 makes the figures noisy.
Registry, state dir and Huey's database live in ``--dir`` (default ``/var/tmp``): the table
names its filesystem (ext4 and tmpfs differ several times over for the Dispatcher, which creates
files and folders per attempt; so do a newly made ext4 and one aged by many files created and
deleted: ``--fresh-ext4 MB`` measures on a new one, on a loop device, as root).
Prints a Markdown table; nothing is asserted. Every child runs in its own session with a
timeout and is ended with its whole group; the temporary folders are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    LoadWatch,
    Spread,
    child,
    filesystem,
    fresh_ext4,
    machine,
    stop_group,
    table,
)

HERE = Path(__file__).resolve().parent
TRUE = "/bin/true"


@dataclass
class Sample:
    """One round of one peer."""

    wall: float
    cpu_self: float | None  # the scheduling process (None: not told apart)
    cpu_children: float
    extra: dict[str, float] = field(default_factory=dict)
    others: float = 0.0  # cores busy with other people's work during this round


@dataclass
class Peer:
    name: str
    run: Callable[[Path], Sample]
    note: str = ""
    samples: list[Sample] = field(default_factory=list)


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_tool(argv: list[str], n: int, timeout: float) -> Sample:
    """A one-shot tool fed ``n`` lines on stdin, timed whole."""
    data = "x\n" * n
    kids0 = _children_cpu()
    t0 = time.perf_counter()
    with child(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as proc:
        proc.communicate(data, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}")
    return Sample(wall, None, _children_cpu() - kids0)


def run_json_child(argv: list[str], timeout: float) -> dict[str, float]:
    """A child that prints one JSON line: its figures."""
    with child(argv, stdout=subprocess.PIPE, cwd=HERE) as proc:
        out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {proc.returncode}")
    data: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if data.get("done") != data.get("tasks"):
        print(f"  warning: {argv[1]}: {data.get('done')} of {data.get('tasks')} tasks done",
              file=sys.stderr)
    return data


def run_dispatcher(folder: Path, n: int, c: int, timeout: float, wrapper: bool) -> Sample:
    argv = [sys.executable, str(HERE / "peer_dispatcher.py"), "--dir", str(folder),
            "--tasks", str(n), "--concurrency", str(c)] + (["--wrapper"] if wrapper else [])
    d = run_json_child(argv, timeout)
    return Sample(d["wall"], d["cpu_self"], d["cpu_children"],
                  {"seen": d["seen"], "submit": d["submit"], "sys": d["cpu_sys"]})


def run_huey(folder: Path, n: int, c: int, timeout: float, delay: float,
             max_delay: float) -> Sample:
    db = str(folder / "huey.db")
    script = str(HERE / "peer_huey.py")
    consumer = [sys.executable, script, "consume", "--db", db, "--workers", str(c),
                "--delay", str(delay), "--max-delay", str(max_delay)]
    with child(consumer, cwd=HERE, stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL) as proc:
        d = run_json_child([sys.executable, script, "produce", "--db", db, "--consumer",
                            str(proc.pid), "--tasks", str(n)], timeout)
        stop_group(proc)
    return Sample(d["wall"], d["cpu_self"], d["cpu_children"],
                  {"submit": d["submit"], "producer": d["cpu_producer"]})


def huey_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("huey")
    except PackageNotFoundError:
        return None


def parallel_version() -> str | None:
    exe = shutil.which("parallel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--will-cite", "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.splitlines()[0] if out else ""
    if "GNU parallel" not in first:
        return None  # another `parallel` (moreutils'): not the peer measured here
    return first.replace("GNU parallel", "").strip() or "?"


def build_peers(args: argparse.Namespace, notes: list[str]) -> list[Peer]:
    n, c, to = args.tasks, args.concurrency, args.timeout
    skip = set(filter(None, args.skip.split(",")))
    peers = [Peer(f"`xargs -P{c}`", lambda _d: run_tool(
        ["xargs", f"-P{c}", "-n1", TRUE], n, to), "baseline")]
    pv = parallel_version()
    if "parallel" in skip:
        notes.append("GNU parallel: skipped (--skip)")
    elif pv is None:
        notes.append("GNU parallel: not installed (Debian package `parallel`), no row")
    else:
        peers.append(Peer(f"GNU parallel -j{c}", lambda _d: run_tool(
            ["parallel", "--will-cite", f"-j{c}", TRUE], n, to), f"GNU parallel {pv}"))
    hv = huey_version()
    if "huey" in skip:
        notes.append("Huey: skipped (--skip)")
    elif hv is None:
        notes.append("Huey: not installed (`pip install -e '.[bench]'`), no row")
    else:
        peers.append(Peer("Huey, SqliteHuey", lambda d: run_huey(
            d, n, c, to, args.huey_delay, args.huey_max_delay),
            f"huey {hv}, {c} process workers, WAL + synchronous=NORMAL, idle poll "
            f"{args.huey_delay * 1000:g}–{args.huey_max_delay * 1000:g} ms"))
    if "dispatcher" not in skip:
        peers.append(Peer("Dispatcher, direct supervision", lambda d: run_dispatcher(
            d, n, c, to, False), "DispatcherCore, SQLite registry, local pool"))
    if args.wrapper:
        peers.append(Peer("Dispatcher, runner wrapper", lambda d: run_dispatcher(
            d, n, c, to, True), "each task through `python -m ...agent_runner`"))
    return peers


def ratio_spread(peer: Peer, base: Peer) -> Spread:
    return Spread.of([s.wall / b.wall for s, b in zip(peer.samples, base.samples, strict=False)
                      if s.wall == s.wall and b.wall > 0])


def cpu_cell(p: Peer) -> str:
    kids = statistics.median(s.cpu_children for s in p.samples)
    selfs = [s.cpu_self for s in p.samples if s.cpu_self is not None]
    if not selfs:
        return f"{kids:.2f} s (all)"
    sys_part = ""
    if p.samples and "sys" in p.samples[0].extra:
        sys_part = f" ({statistics.median(s.extra['sys'] for s in p.samples):.2f} in the kernel)"
    return f"{statistics.median(selfs):.2f} s{sys_part} / {kids:.2f} s"


def notes_cell(p: Peer) -> str:
    extra = [f"{k} {statistics.median(s.extra[k] for s in p.samples):.2f} s"
             for k in ("submit", "seen") if p.samples and k in p.samples[0].extra]
    return "; ".join(filter(None, [p.note, *extra]))


def run_rounds(peers: list[Peer], rounds: int, folder: str) -> LoadWatch:
    """Every peer once per round, in order; each in a folder of its own, removed after it."""
    watch = LoadWatch()
    with tempfile.TemporaryDirectory(prefix="necrocode-peers-", dir=folder) as tmp:
        for r in range(rounds):
            for i, peer in enumerate(peers):
                here = Path(tmp) / f"r{r}-p{i}"
                here.mkdir()
                round_watch = LoadWatch()
                try:
                    s = peer.run(here)
                finally:
                    shutil.rmtree(here, ignore_errors=True)
                s.others = round_watch.stop().other_cores
                peer.samples.append(s)
                print(f"round {r + 1}/{rounds}: {peer.name:<32} {s.wall:7.3f} s, "
                      f"other work {s.others:.2f} cores", file=sys.stderr, flush=True)
    return watch.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default="/var/tmp",
                        help="where registry, state dirs and Huey's database go (default "
                             "/var/tmp: a disk filesystem, not tmpfs)")
    parser.add_argument("--wrapper", action="store_true",
                        help="add the runner-wrapper row (about 35 s per round)")
    parser.add_argument("--skip", default="", help="peers left out: parallel,huey,dispatcher")
    parser.add_argument("--fresh-ext4", type=int, default=0, metavar="MB",
                        help="put the state on a newly made ext4 of MB megabytes (an image in "
                             "--dir on a loop device; needs root), removed afterwards")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    parser.add_argument("--huey-delay", type=float, default=0.001)
    parser.add_argument("--huey-max-delay", type=float, default=0.01)
    args = parser.parse_args()
    notes: list[str] = []
    peers = build_peers(args, notes)
    with ExitStack() as stack:
        where = args.dir
        if args.fresh_ext4:
            where = stack.enter_context(fresh_ext4(args.dir, args.fresh_ext4))
        fs = filesystem(where) + (", newly made" if args.fresh_ext4 else "")
        watch = run_rounds(peers, args.rounds, where)
    base = peers[0]
    rows = [[p.name, Spread.of([s.wall for s in p.samples]).fmt(".2f", " s"),
             ratio_spread(p, base).fmt(".2f", "x"), cpu_cell(p),
             Spread.of([s.others for s in p.samples]).fmt(".2f"), notes_cell(p)]
            for p in peers]
    print(f"\nmachine: {machine()}")
    print(f"{args.tasks} tasks of `true`, concurrency {args.concurrency}, {args.rounds} "
          f"alternating rounds; state on {fs} ({where})")
    print(watch.line())
    for note in notes:
        print(f"note: {note}")
    print()
    print(table(["peer", "dispatch phase, median (min–max)",
                 f"vs `xargs -P{args.concurrency}`, median (min–max)",
                 "CPU: scheduling process / what it reaped", "others' load (cores)", "notes"],
                rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
