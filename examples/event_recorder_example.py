"""EventRecorder: events written with state changes, queried by task and time, and a local
JSONL fallback when the registry cannot take them (replayed later, nothing lost).

Run:  python examples/event_recorder_example.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from necrocode.dispatcher import EventRecorder
from necrocode.dispatcher.models import EventType, Task, TaskEvent, Taskset, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry


class FlakyRegistry:
    """A registry whose event table is down until `healthy` is set (to show the fallback)."""

    def __init__(self, inner: SQLiteRegistry) -> None:
        self.inner = inner
        self.healthy = False

    def record_event(self, event: TaskEvent) -> TaskEvent:
        if not self.healthy:
            raise OSError("database is locked")
        return self.inner.record_event(event)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        registry = SQLiteRegistry(Path(tmp) / "registry.db")
        registry.submit_taskset(Taskset(name="app", tasks=[Task(id="1", title="schema")]))
        recorder = EventRecorder(registry, tmp)

        start = time.time()
        assigned = TaskEvent(EventType.TASK_ASSIGNED, "app/1", runner_id="r-1", slot_id="scratch/0",
                             pool="local", message="assigned to pool local")
        recorder.transition("app/1", TaskState.RUNNING, expected=TaskState.READY, event=assigned,
                            runner_id="r-1")
        recorder.emit(EventType.RUNNER_STARTED, "app/1", runner_id="r-1", pool="local")

        flaky = FlakyRegistry(registry)
        offline = EventRecorder(flaky, tmp)
        offline.emit(EventType.RUNNER_COMPLETED, "app/1", runner_id="r-1", pool="local",
                     duration=12.5, message="exited 0")
        print(f"registry down: {offline.fallback_writes} event(s) kept in "
              f"{Path(offline.fallback_path or '').name}")
        flaky.healthy = True
        print(f"registry back: replayed {offline.replay()} event(s)")

        for event in registry.get_events(task_key="app/1", since=start):
            extra = f" duration={event.duration}s" if event.duration else ""
            print(f"{event.event_type.value:16} runner={event.runner_id} pool={event.pool}"
                  f" slot={event.slot_id}{extra}")
        count = len(registry.get_events(task_key="app/1", since=start))
        registry.close()
        return 0 if count == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
