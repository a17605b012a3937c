"""A custom scheduling policy: a small class registered by name (R11.4).

"shortest-first" places the tasks with the smallest estimated duration first, so quick fixes are
not stuck behind long refactorings. Once registered, the name works in code and in the YAML
(`scheduling_policy: shortest-first`).

Run:  python examples/custom_scheduling_policy.py
"""

from __future__ import annotations

import sys
from typing import Any

from necrocode.dispatcher import AgentPoolManager, DispatcherConfig, Scheduler, TaskQueue
from necrocode.dispatcher.config import config_from_dict
from necrocode.dispatcher.models import AgentPool, Task
from necrocode.dispatcher.policies import Policy, register_policy


class ShortestFirst(Policy):
    """Smallest estimated duration first; ties by higher priority."""

    name = "shortest-first"
    time_invariant = True  # the key ignores `now`: the scheduler keeps an incremental index

    def sort_key(self, task: Task, now: float) -> Any:
        return (task.estimated_duration or 0.0, -task.priority)


register_policy("shortest-first", ShortestFirst)


def main() -> int:
    config = DispatcherConfig(scheduling_policy="shortest-first", max_global_concurrency=3)
    config.agent_pools.append(AgentPool(name="local", max_concurrency=3))
    config.skill_mapping = {"default": ["local"]}

    queue = TaskQueue()
    durations = {"refactor": 3600, "typo": 30, "feature": 900, "test-fix": 120, "docs": 300}
    for i, (name, seconds) in enumerate(durations.items()):
        queue.enqueue(Task(id=str(i), title=name, estimated_duration=seconds))

    scheduler = Scheduler(config.scheduling_policy, config)
    decisions = scheduler.schedule(queue, AgentPoolManager(config))
    print(f"policy: {scheduler.policy_name}")
    for task, pool in decisions:
        print(f"assigned {task.title} ({task.estimated_duration:.0f}s) -> pool {pool.name}")
    print(f"still queued: {', '.join(t.title for t in queue.tasks())}")

    # The registered name is accepted by the config loader too.
    loaded = config_from_dict({"dispatcher": {"scheduling_policy": "shortest-first"}})
    print(f"YAML policy: {loaded.scheduling_policy}")
    return 0 if [t.title for t, _ in decisions] == ["typo", "test-fix", "docs"] else 1


if __name__ == "__main__":
    sys.exit(main())
