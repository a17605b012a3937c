"""A fake coding agent for the demo taskset (``python3 -m necroui.demo.fake_agent``).

It reads the runner contract from its environment (``NECROCODE_TASK_CONTEXT``,
``NECROCODE_ATTEMPT``), prints progress lines for ``--seconds`` seconds, writes
``<task id>.txt`` into its workspace slot (its working directory), and exits 0 — except on the
attempts listed in ``--fail-attempts`` (``1`` or ``1,2``), where it exits ``--exit-code``
(default 1) half-way. Failing on given attempts keeps the demo deterministic: a task that fails on
attempt 1 succeeds on its retry.

Environment knobs (for tests and impatient people):

- ``NECROUI_DEMO_SPEED``: multiplies every sleep (``0.1`` runs ten times faster);
- ``NECROUI_DEMO_TRACE``: a file to which ``start``/``end`` lines with timestamps are appended
  (one line each, written with O_APPEND so parallel agents never interleave).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def _context() -> dict[str, object]:
    raw = os.environ.get("NECROCODE_TASK_CONTEXT") or os.environ.get("TASK_CONTEXT") or "{}"
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _trace(kind: str, key: str, attempt: int, extra: str = "") -> None:
    path = os.environ.get("NECROUI_DEMO_TRACE")
    if not path:
        return
    line = f"{kind} {key} {attempt} {time.time():.6f} {os.getpid()} {extra}".rstrip() + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _attempts(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if part:
            out.add(int(part))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fake_agent", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to work")
    parser.add_argument("--fail-attempts", default="", help="attempts that fail, e.g. 1 or 1,2")
    parser.add_argument("--exit-code", type=int, default=1, help="exit code of a failing attempt")
    parser.add_argument("--steps", type=int, default=5, help="progress lines to print")
    args = parser.parse_args(argv)

    ctx = _context()
    key = str(ctx.get("task") or os.environ.get("NECROCODE_TASK_KEY") or "task")
    task_id = str(ctx.get("task_id") or key.rpartition("/")[2])
    attempt = int(str(os.environ.get("NECROCODE_ATTEMPT") or ctx.get("attempt") or 1))
    try:
        speed = float(os.environ.get("NECROUI_DEMO_SPEED") or 1.0)
    except ValueError:
        speed = 1.0
    fail = attempt in _attempts(args.fail_attempts)
    steps = max(1, args.steps)
    pause = max(0.0, args.seconds * speed) / steps

    def on_term(signum: int, frame: object) -> None:  # stopped (fenced, shutdown): say so
        _trace("end", key, attempt, "killed")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    _trace("start", key, attempt)
    print(f"[{key}] attempt {attempt}: {ctx.get('title') or 'working'}", flush=True)
    for step in range(1, steps + 1):
        time.sleep(pause)
        print(f"[{key}] progress {step * 100 // steps}%", flush=True)
        if fail and step * 2 >= steps:
            print(f"[{key}] simulated failure on attempt {attempt} "
                  f"(exit {args.exit_code}); a retry will succeed", file=sys.stderr, flush=True)
            _trace("end", key, attempt, f"exit={args.exit_code}")
            return args.exit_code
    out = f"{task_id}.txt"
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(f"{key} done by a fake agent on attempt {attempt}\n")
    print(f"[{key}] wrote {os.path.join(os.getcwd(), out)}", flush=True)
    _trace("end", key, attempt, "exit=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
