"""DispatcherCore in detail: start, watch status, pause/resume, reprioritise, cancel, stop.

Every control method is thread-safe: it hands a command to the engine thread and returns the
engine's answer as a short sentence (or raises a DispatcherError naming what is wrong).

Run:  python examples/dispatcher_core_example.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from necrocode.dispatcher import DispatcherConfig, DispatcherCore, DispatcherError
from necrocode.dispatcher.models import AgentPool, Task, Taskset


def wait_for(dispatcher: DispatcherCore, predicate, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate(dispatcher.get_status()):
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config = DispatcherConfig(registry_path=str(Path(tmp) / "registry.db"),
                                  retry_backoff_base=1.0, max_global_concurrency=2)
        config.agent_pools.append(AgentPool(name="local", max_concurrency=2))
        config.skill_mapping = {"default": ["local"]}
        quick = [sys.executable, "-c", "print('done')"]
        slow = [sys.executable, "-c", "import time; time.sleep(30)"]

        dispatcher = DispatcherCore(config)
        dispatcher.start()
        print(dispatcher.pause())  # nothing is launched while paused
        dispatcher.submit(Taskset(name="demo", tasks=[
            Task(id="a", title="quick A", command=quick),
            Task(id="b", title="quick B", command=quick, priority=1),
            Task(id="slow", title="a long job", command=slow),
        ]))
        wait_for(dispatcher, lambda s: len(s["queued"]) == 3)
        for row in dispatcher.get_status()["queued"]:
            print(f"queued #{row['position']} {row['key']}: {row['pending']['message']}")

        print(dispatcher.set_priority("demo/a", 5))
        print(dispatcher.resume())
        wait_for(dispatcher, lambda s: any(r["key"] == "demo/slow" for r in s["running"]))
        print(dispatcher.cancel("demo/slow"))
        ok = wait_for(dispatcher, lambda s: s["counters"]["done"] == 2
                      and s["counters"]["cancelled"] == 1)

        try:
            dispatcher.set_priority("demo/missing", 1)
        except DispatcherError as exc:
            print(f"refused: {exc}")

        status = dispatcher.get_status()
        print(f"counters: done={status['counters']['done']} "
              f"cancelled={status['counters']['cancelled']} "
              f"assigned={status['counters']['assigned']}")
        for event in status["events"][-3:]:
            print(f"event {event['event_type']} {event['task_key'] or ''}")
        dispatcher.stop(timeout=10)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
