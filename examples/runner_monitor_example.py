"""RunnerMonitor: heartbeats, heartbeat age and lost runners (on a simulated clock).

Run:  python examples/runner_monitor_example.py
"""

from __future__ import annotations

import sys

from necrocode.dispatcher import RunnerMonitor
from necrocode.dispatcher.models import Runner, RunnerState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def main() -> int:
    clock = Clock()
    monitor = RunnerMonitor(heartbeat_timeout=60, clock=clock)
    for rid in ("runner-a", "runner-b", "runner-c"):
        monitor.add_runner(Runner(runner_id=rid, task_key=f"demo/{rid[-1]}", pool_name="local",
                                  state=RunnerState.RUNNING, started_at=clock.now))

    clock.now += 30
    monitor.update_heartbeat("runner-a", progress="tests passing: 12/40")
    monitor.update_heartbeat("runner-b")
    clock.now += 40  # runner-c never sent a heartbeat: judged from its start, 70 s ago
    monitor.update_heartbeat("runner-a", progress="tests passing: 40/40")

    for info in monitor.all():
        print(f"{info.runner_id}: heartbeat age {info.heartbeat_age:.0f}s, "
              f"progress {info.progress or '-'}")
    lost = monitor.check_heartbeats()
    print(f"lost (no heartbeat within 60s): {', '.join(lost) or 'none'}")

    clock.now += 25  # runner-b's last heartbeat is now 65 s old
    lost = monitor.check_heartbeats()
    print(f"lost a little later: {', '.join(sorted(lost))}")
    for rid in lost:
        monitor.remove_runner(rid)  # the engine fences the runner, then forgets it
    status = monitor.get_runner_status("runner-a")
    print(f"still watched: {[i.runner_id for i in monitor.all()]}; "
          f"runner-a state {status.state.value if status else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
