"""A stand-in for Claude Code in ``necroui --demo --agents`` (no model, no network, no key).

The demo's pools run the real ``claude-code`` preset with this program as its executable: it
takes the preset's ``claude -p PROMPT --output-format stream-json --verbose ...`` argv, and
prints what Claude Code prints in that mode — an ``init`` line, one ``assistant`` message per
turn with its token usage and a tool call, and a final ``result`` line with the totals, the cost
and ``is_error`` — so the dispatcher reads tokens, turns and cost exactly as from the real CLI.
Token counts are derived from the task key (the same every run), the cost from a Sonnet-like
price. The fake agent's own options (``--seconds``, ``--turns``, ``--fail-attempts``) come
after the preset's, through ``agent_options.extra_args``; ``NECROUI_DEMO_SPEED`` scales sleeps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import zlib

# USD per million tokens: input, cache reads, output (the shape of Claude Sonnet's prices)
PRICE_INPUT, PRICE_CACHED, PRICE_OUTPUT = 3.0, 0.30, 15.0
_TOOLS = (("Read", "file_path", "src/{id}.py"), ("Grep", "pattern", "def {id}"),
          ("Edit", "file_path", "src/{id}.py"), ("Bash", "command", "pytest -q tests/{id}"))


def _emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def turn_usage(key: str, turn: int) -> dict[str, int]:
    """The usage of one turn: fresh input, cache reads (the context so far), output."""
    seed = zlib.crc32(f"{key}:{turn}".encode())
    return {"input_tokens": 1200 + seed % 800,
            "cache_read_input_tokens": 0 if turn == 1 else 5000 + 2500 * (turn - 1),
            "output_tokens": 300 + (seed >> 8) % 600}


def cost_of(usage: dict[str, int]) -> float:
    return (usage["input_tokens"] * PRICE_INPUT + usage["cache_read_input_tokens"] * PRICE_CACHED
            + usage["output_tokens"] * PRICE_OUTPUT) / 1_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claude (necroui demo)", add_help=False)
    parser.add_argument("-p", dest="prompt", default="")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--turns", type=int, default=0, help="default: one per 0.6 s of work")
    parser.add_argument("--fail-attempts", default="")
    parser.add_argument("--exit-code", type=int, default=1)
    args, _preset_flags = parser.parse_known_args(argv)

    key = os.environ.get("NECROCODE_TASK_KEY") or "task"
    attempt = int(os.environ.get("NECROCODE_ATTEMPT") or 1)
    task_id = key.rpartition("/")[2]
    try:
        speed = float(os.environ.get("NECROUI_DEMO_SPEED") or 1.0)
    except ValueError:
        speed = 1.0
    fail = str(attempt) in {a.strip() for a in args.fail_attempts.split(",")}
    turns = max(1, args.turns or round(args.seconds / 0.6))
    pause = max(0.0, args.seconds * speed) / turns

    def on_term(signum: int, frame: object) -> None:  # stopped (budget, cancel, shutdown)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    _emit({"type": "system", "subtype": "init", "model": "demo",
           "session_id": f"demo-{task_id}-{attempt}"})
    total = {"input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}
    cost = 0.0
    for turn in range(1, turns + 1):
        time.sleep(pause)
        usage = turn_usage(key, turn)
        for name in total:
            total[name] += usage[name]
        cost += cost_of(usage)
        tool, field, value = _TOOLS[(turn - 1) % len(_TOOLS)]
        _emit({"type": "assistant", "message": {
            "id": f"msg-{task_id}-{attempt}-{turn}", "usage": usage,
            "content": [{"type": "text", "text": f"Step {turn} of {turns} on {task_id}"},
                        {"type": "tool_use", "name": tool,
                         "input": {field: value.format(id=task_id)}}]}})
        if fail and turn * 2 >= turns:
            _emit({"type": "result", "subtype": "error_during_execution", "is_error": True,
                   "result": f"simulated failure on attempt {attempt}; a retry will succeed",
                   "num_turns": turn, "total_cost_usd": round(cost, 6), "usage": total})
            return args.exit_code
    with open(f"{task_id}.txt", "w", encoding="utf-8") as fh:
        fh.write(f"{key} done by the demo's stand-in for Claude Code on attempt {attempt}\n")
    _emit({"type": "result", "subtype": "success", "is_error": False, "num_turns": turns,
           "result": f"Wrote {task_id}.txt: {task_id} is done.",
           "total_cost_usd": round(cost, 6), "usage": total, "permission_denials": []})
    return 0


if __name__ == "__main__":
    sys.exit(main())
