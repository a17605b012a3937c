"""RetryManager: exponential backoff with jitter and a cap, attempt limits, non-retryable codes.

Run:  python examples/retry_manager_example.py
"""

from __future__ import annotations

import random
import sys

from necrocode.dispatcher import DispatcherConfig, RetryManager
from necrocode.dispatcher.models import Task


def main() -> int:
    config = DispatcherConfig(retry_max_attempts=3, retry_backoff_base=2.0, retry_jitter=0.1,
                              retry_backoff_max=300, non_retryable_exit_codes=[2])
    retry = RetryManager(config, rng=random.Random(7))

    print("delay before the next attempt (base 2, +/-10% jitter, cap 300 s):")
    for attempt in range(1, 11):
        print(f"  after {attempt:2} failure(s): {retry.delay(attempt):6.1f} s")

    task = Task(id="flaky", title="a flaky test")
    for attempt in (1, 2, 3):
        task.attempts = attempt  # attempts already spent, this failure included
        decision = retry.decide(task, exit_code=1, now=0.0)
        print(f"attempt {attempt}: retry={decision.retry} - {decision.message}")

    task.attempts = 1
    print(f"exit code 2: retry={retry.should_retry(task, exit_code=2)} "
          f"({retry.decide(task, exit_code=2).message})")

    patient = Task(id="patient", title="may try 5 times", max_attempts=5)
    print(f"per-task max_attempts: {retry.max_attempts_for(patient)} "
          f"(global {config.retry_max_attempts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
