"""Basic usage: configure a Dispatcher in code, submit a small taskset, run it to completion.

Run:  python examples/basic_dispatcher_usage.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from necrocode.dispatcher import DispatcherConfig, DispatcherCore
from necrocode.dispatcher.models import AgentPool, PoolType, SchedulingPolicy, Task, Taskset


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config = DispatcherConfig(
            poll_interval=5,
            scheduling_policy=SchedulingPolicy.PRIORITY,
            max_global_concurrency=10,
            registry_path=str(Path(tmp) / "registry.db"),
        )
        config.agent_pools.append(
            AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2, enabled=True)
        )
        config.skill_mapping = {"default": ["local"]}

        # Each task's command is an argv list, run without a shell in the task's workspace slot.
        agent = [sys.executable, "-c", "import os; print('working in', os.getcwd())"]
        taskset = Taskset(
            name="hello",
            tasks=[
                Task(id="1", title="Write the schema", command=agent),
                Task(id="2", title="Write the API", dependencies=["1"], command=agent),
                Task(id="3", title="Write the docs", dependencies=["1"], command=agent),
            ],
        )

        dispatcher = DispatcherCore(config)
        dispatcher.start()
        dispatcher.submit(taskset)

        deadline = time.time() + 60
        while time.time() < deadline:
            counters = dispatcher.get_status()["counters"]
            if counters["done"] + counters["failed"] == 3:
                break
            time.sleep(0.2)

        status = dispatcher.get_status()
        print(f"state: {status['state']}, policy: {status['policy']}")
        for pool in status["pools"]:
            print(f"pool {pool['pool_name']}: {pool['running']}/{pool['max_concurrency']} running")
        for task in dispatcher.registry.list_tasks(taskset="hello"):
            print(f"task {task.key}: {task.state.value} ({task.attempts} failed attempt(s))")

        dispatcher.stop(timeout=300)  # graceful shutdown
        done = status["counters"]["done"]
        print(f"done: {done}/3")
        return 0 if done == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
