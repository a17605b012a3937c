"""Dispatch overhead per coding-agent run: each installed CLI run directly, then through its
preset, the local-process launcher and the stream reader, against the scripted model server.

    python tests/bench/bench_agents.py [--runs 3]

Prints a table: the fastest of N runs each way (the machine is shared and noisy), the
difference, and what the reader recorded (tokens, turns, cost). A CLI that is not installed
(``. .ci/agents.sh``) is left out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from necrocode.dispatcher.agents.launch import plan_attempt  # noqa: E402
from necrocode.dispatcher.models import AgentPool, Slot, Task  # noqa: E402
from test_agents_real import CLIS, KEY, KEY_ENV, Harness, find_cli  # noqa: E402

from necroui.demo.model_server import ModelServer, Script  # noqa: E402

SCRIPT = Script(commands=["printf 'hello\\n' > hello.txt"], final="Created hello.txt")


def direct(root: Path, server: ModelServer, name: str, exe: str) -> float:
    """Seconds of one run of the CLI by hand (same argv, env and files)."""
    h = Harness(root, server)
    server.configure(SCRIPT)
    spec = CLIS[name]
    pool = AgentPool("p", agent=name, agent_options={
        "model": spec.model, "base_url": server.url + spec.url_suffix, "api_key_env": KEY_ENV,
        "executable": exe})
    plan = plan_attempt(Task(id="1", taskset="ts", title="Create hello.txt"),
                        Slot("s", str(h.worktree), None, "b"), pool, attempt=1,
                        agent_dir=str(root / "direct"), environ={KEY_ENV: KEY})
    assert plan is not None
    plan.write_files()
    t0 = time.perf_counter()
    subprocess.run(list(plan.argv), cwd=h.worktree, env={**os.environ, **plan.env},
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300, check=False)
    took = time.perf_counter() - t0
    h.close()
    return took


def dispatched(root: Path, server: ModelServer, name: str, exe: str) -> tuple[float, str]:
    """Seconds of one run through launcher + reader, and the usage it recorded."""
    h = Harness(root, server)
    t0 = time.perf_counter()
    runner, _ = h.start(CLIS[name], exe, SCRIPT)
    result = h.wait_exit(runner)
    took = time.perf_counter() - t0
    h.close()
    u = result.state.usage
    cost = f"{u.cost_usd:.5f}" if u.cost_usd is not None else "null"
    return took, f"{u.input_tokens}/{u.output_tokens}/{u.cached_tokens} {u.turns} {cost}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'agent':<16}{'direct s':>10}{'dispatched s':>14}{'overhead ms':>13}  "
          "tokens in/out/cached, turns, cost USD")
    with ModelServer() as server, tempfile.TemporaryDirectory() as tmp:
        for i, (name, spec) in enumerate(CLIS.items()):
            exe = find_cli(spec)
            if exe is None:
                print(f"{name:<16}not installed")
                continue
            a = min(direct(Path(tmp) / f"{i}-d{n}", server, name, exe) for n in range(args.runs))
            runs = [dispatched(Path(tmp) / f"{i}-r{n}", server, name, exe)
                    for n in range(args.runs)]
            b, usage = min(runs)
            print(f"{name:<16}{a:>10.2f}{b:>14.2f}{(b - a) * 1000:>13.0f}  {usage}")


if __name__ == "__main__":
    main()
