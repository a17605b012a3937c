"""DeadlockDetector: dependency cycles, and tasks blocked for good by a failed dependency.

Run:  python examples/deadlock_detector_example.py
"""

from __future__ import annotations

import sys

from necrocode.dispatcher import DeadlockDetectedError, DeadlockDetector
from necrocode.dispatcher.models import Task, TaskState


def main() -> int:
    detector = DeadlockDetector()

    cycle = [
        Task(id="1", title="schema", taskset="app", dependencies=["3"], state=TaskState.BLOCKED),
        Task(id="2", title="api", taskset="app", dependencies=["1"], state=TaskState.BLOCKED),
        Task(id="3", title="client", taskset="app", dependencies=["2"], state=TaskState.BLOCKED),
    ]
    try:
        detector.check(cycle)
    except DeadlockDetectedError as exc:
        print(f"DeadlockDetectedError: {exc}")
        print(f"tasks in the cycle: {exc.cycles}")

    failed = [
        Task(id="db", title="database", taskset="svc", state=TaskState.FAILED),
        Task(id="api", title="api", taskset="svc", dependencies=["db"], state=TaskState.BLOCKED),
        Task(id="ui", title="ui", taskset="svc", dependencies=["api"], state=TaskState.BLOCKED),
    ]
    report = detector.detect(failed)
    for entry in report.entries:
        print(f"{entry.kind}: {', '.join(entry.tasks)} (root {entry.root})")
        print(f"  suggestion: {entry.suggestion}")
    return 0 if report.blocked_by_failure else 1


if __name__ == "__main__":
    sys.exit(main())
