"""RunnerLauncher: launch one agent as a local process in a workspace slot and watch it end.

The local launcher starts the agent's argv (never through a shell) in its own process group,
with the runner contract's environment, and writes its output to the attempt's log file.

Run:  python examples/runner_launcher_example.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from necrocode.dispatcher.launchers import LaunchEnvironment
from necrocode.dispatcher.launchers.local import LocalProcessLauncher
from necrocode.dispatcher.models import AgentPool, Task
from necrocode.dispatcher.repo_pool import RepoPoolManager

AGENT = """
import json, os
ctx = json.loads(os.environ["NECROCODE_TASK_CONTEXT"])
print("runner", os.environ["RUNNER_ID"], "on pool", os.environ["POOL_NAME"])
print("task", ctx["task"], "-", ctx["title"], "in", os.getcwd())
open("result.txt", "w").write("hello from the agent\\n")
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        launcher = LocalProcessLauncher(
            LaunchEnvironment(api_url=None, token_for=lambda rid: "", runs_dir=state / "runs")
        )
        slots = RepoPoolManager(state, slots_per_repo=2)
        pool = AgentPool(name="local", max_concurrency=2)
        task = Task(id="1.1", taskset="example", title="Say hello",
                    command=[sys.executable, "-c", AGENT])

        slot = slots.allocate_slot(task)
        assert slot is not None
        runner = launcher.launch(task, slot, pool, attempt=1)
        print(f"launched {runner.runner_id} (pid {runner.handle}) in slot {slot.slot_id}")

        deadline = time.time() + 30
        result = launcher.poll(runner)
        while result is None and time.time() < deadline:
            time.sleep(0.05)
            result = launcher.poll(runner)
        launcher.release(runner)
        slots.release_slot(slot.slot_id)
        launcher.close()

        print(f"exit code: {result.exit_code if result else 'still running'}")
        print("log:")
        print(Path(runner.log_path or "").read_text().rstrip())
        return 0 if result is not None and result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
