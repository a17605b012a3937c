"""RetryManager: whether a failed task runs again, and when.

The manager keeps no state of its own: attempts spent and the next attempt time live on the task
(and so in the registry), which is what makes retries survive a restart. Delay for attempt ``n``
is ``retry_backoff_base ** n`` seconds, spread by ``±retry_jitter`` and capped at
``retry_backoff_max``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from .config import DispatcherConfig
from .models import Task

__all__ = ["NON_RETRYABLE_REASONS", "RetryDecision", "RetryManager"]

#: Failure reasons that no retry can fix (matched case-insensitively as substrings).
NON_RETRYABLE_REASONS: tuple[str, ...] = (
    "bad task definition",
    "invalid task definition",
    "not retryable",
)


@dataclass(frozen=True)
class RetryDecision:
    """What to do with a failed task."""

    retry: bool
    message: str  # e.g. "attempt 1/3 failed; retry in 2.1 s" or "exit code 2 is not retryable"
    delay: float = 0.0
    next_attempt_at: float | None = None


class RetryManager:
    """Retry rules from the config: max attempts, backoff with jitter and cap, non-retryables.

    Pass ``rng=random.Random(seed)`` for deterministic jitter (tests, simulations).
    """

    def __init__(
        self,
        config: DispatcherConfig | None = None,
        *,
        rng: random.Random | None = None,
        non_retryable_reasons: tuple[str, ...] = NON_RETRYABLE_REASONS,
    ) -> None:
        self.config = config or DispatcherConfig()
        self._rng = rng or random.Random()
        self.non_retryable_reasons = tuple(r.lower() for r in non_retryable_reasons)

    def max_attempts_for(self, task: Task) -> int:
        """The task's own ``max_attempts`` when set, else ``retry_max_attempts``."""
        if task.max_attempts is not None and task.max_attempts > 0:
            return int(task.max_attempts)
        return max(1, int(self.config.retry_max_attempts))

    def is_retryable(self, exit_code: int | None = None, reason: str | None = None) -> bool:
        """False for configured non-retryable exit codes and reasons such as a bad definition."""
        if exit_code is not None and exit_code in set(self.config.non_retryable_exit_codes):
            return False
        if reason:
            low = reason.lower()
            if any(r in low for r in self.non_retryable_reasons):
                return False
        return True

    def should_retry(
        self, task: Task, exit_code: int | None = None, reason: str | None = None
    ) -> bool:
        """True when ``task`` should run again; ``task.attempts`` counts this failure already."""
        return self.is_retryable(exit_code, reason) and task.attempts < self.max_attempts_for(task)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (after ``attempt`` failures)."""
        cfg = self.config
        cap = float(cfg.retry_backoff_max)
        try:
            base = float(cfg.retry_backoff_base) ** max(0, attempt)
        except OverflowError:
            base = cap
        base = min(base, cap) if cap > 0 else base
        jitter = float(cfg.retry_jitter)
        if jitter > 0:
            base *= 1.0 + self._rng.uniform(-jitter, jitter)
        if cap > 0:
            base = min(base, cap)
        return max(0.0, base)

    def next_attempt_at(self, task: Task, now: float | None = None) -> float:
        """When the next attempt of ``task`` may start (``now`` + :meth:`delay`)."""
        now = time.time() if now is None else now
        return now + self.delay(task.attempts)

    def decide(
        self,
        task: Task,
        exit_code: int | None = None,
        reason: str | None = None,
        now: float | None = None,
    ) -> RetryDecision:
        """:meth:`should_retry` and :meth:`next_attempt_at` together, with a human message."""
        limit = self.max_attempts_for(task)
        what = f"exit code {exit_code}" if exit_code is not None else (reason or "failure")
        if exit_code is not None and exit_code in set(self.config.non_retryable_exit_codes):
            return RetryDecision(False, f"exit code {exit_code} is not retryable")
        if not self.is_retryable(None, reason):
            return RetryDecision(False, f"{reason} is not retryable")
        if task.attempts >= limit:
            return RetryDecision(
                False, f"attempt {task.attempts}/{limit} failed ({what}); no attempts left"
            )
        now = time.time() if now is None else now
        delay = self.delay(task.attempts)
        return RetryDecision(
            True,
            f"attempt {task.attempts}/{limit} failed ({what}); retry in {delay:.1f} s",
            delay,
            now + delay,
        )
