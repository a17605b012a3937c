"""Priorities: higher first, FIFO among equals, changes at run time (persisted), and aging.

Run:  python examples/priority_management_example.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from necrocode.dispatcher import AgentPoolManager, DispatcherConfig, Scheduler, TaskQueue
from necrocode.dispatcher.models import AgentPool, Task, Taskset
from necrocode.dispatcher.registry import SQLiteRegistry


def main() -> int:
    queue = TaskQueue()
    for i, prio in enumerate([0, 5, 0, 10, 5]):
        queue.enqueue(Task(id=f"t{i}", title=f"priority {prio}", priority=prio, ready_at=100.0 + i))
    print(f"head: {queue.peek().id} (priority {queue.peek().priority})")
    queue.update_priority("default/t0", 20)  # O(log n), no rebuild
    order = []
    while (task := queue.dequeue()) is not None:
        order.append(f"{task.id}:{task.priority}")
    print(f"dequeue order after raising t0 to 20: {' '.join(order)}")

    # Aging: +1 effective priority per `priority_aging_seconds` waited, so low ones never starve.
    config = DispatcherConfig(priority_aging_seconds=60, max_global_concurrency=1)
    config.agent_pools.append(AgentPool(name="local", max_concurrency=1))
    config.skill_mapping = {"default": ["local"]}
    aged = TaskQueue()
    aged.enqueue(Task(id="old-low", title="waited 20 min", priority=1, ready_at=0.0))
    aged.enqueue(Task(id="new-high", title="just arrived", priority=10, ready_at=1200.0))
    picked = Scheduler("priority", config).schedule(aged, AgentPoolManager(config), now=1200.0)
    print(f"with aging (60 s per level) the first pick is: {picked[0][0].id}")

    # Run-time changes are persisted in the registry with a PriorityChanged event.
    with tempfile.TemporaryDirectory() as tmp:
        registry = SQLiteRegistry(Path(tmp) / "registry.db")
        registry.submit_taskset(Taskset(name="app", tasks=[Task(id="1", title="fix the login")]))
        registry.set_priority("app/1", 7)
        event = registry.get_events(task_key="app/1")[-1]
        print(f"persisted priority: {registry.get_task('app/1').priority}; "
              f"event {event.event_type.value} {event.details}")
        registry.close()
    return 0 if order[0].startswith("t0") and picked[0][0].id == "old-low" else 1


if __name__ == "__main__":
    sys.exit(main())
