"""Concurrency control: per-pool max_concurrency, CPU/memory quotas and the global limit hold,
even within one scheduling round; every task left queued says why.

Run:  python examples/concurrency_control_example.py
"""

from __future__ import annotations

import sys
from collections import Counter

from necrocode.dispatcher import AgentPoolManager, DispatcherConfig, Scheduler, TaskQueue
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, Task


def main() -> int:
    config = DispatcherConfig(max_global_concurrency=5)
    config.agent_pools += [
        AgentPool(name="local", max_concurrency=2),
        AgentPool(name="docker", type=PoolType.DOCKER, max_concurrency=4, cpu_quota=4,
                  memory_quota=4096, config={"image": "necrocode/runner:latest"}),
    ]
    config.skill_mapping = {"backend": ["docker"], "default": ["local"]}
    manager = AgentPoolManager(config)
    scheduler = Scheduler("skill-based", config)

    queue = TaskQueue()
    for i in range(6):
        queue.enqueue(Task(id=f"be{i}", title="backend", required_skill="backend",
                           resources=Resources(cpu=1.5, memory_mb=1024)))
    for i in range(4):
        queue.enqueue(Task(id=f"misc{i}", title="misc"))

    decisions = scheduler.schedule(queue, manager)
    per_pool = Counter(pool.name for _, pool in decisions)
    print(f"one round placed {len(decisions)} task(s): {dict(per_pool)} "
          f"(global limit {config.max_global_concurrency})")
    for status in manager.get_all_pool_status():
        print(f"  {status.pool_name}: {status.running}/{status.max_concurrency} running, "
              f"cpu {status.cpu_in_use}/{status.cpu_quota}")
    for task in queue.tasks()[:3]:
        print(f"  {task.key} waits: {scheduler.explain(task, manager).message}")

    # A completion frees capacity at once: release, and the next round places one more.
    done_task, done_pool = decisions[0]
    manager.release(done_pool.name, done_task)
    more = scheduler.schedule(queue, manager)
    print(f"after one completion the next round placed: {[t.key for t, _ in more]}")
    ok = manager.global_running <= config.max_global_concurrency
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
