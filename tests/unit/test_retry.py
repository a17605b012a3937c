"""RetryManager: attempts, per-task override, backoff with jitter and cap, non-retryables."""

from __future__ import annotations

import random
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.models import Task
from necrocode.dispatcher.retry import RetryManager


def manager(seed: int | None = 1, **kw: Any) -> RetryManager:
    base: dict[str, Any] = dict(retry_max_attempts=3, retry_backoff_base=2.0,
                                retry_backoff_max=300.0, retry_jitter=0.0)
    base.update(kw)
    return RetryManager(DispatcherConfig(**base),
                        rng=random.Random(seed) if seed is not None else None)


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "retry"),
    [
        (1, None, True),  # first failure of 3
        (2, None, True),  # second failure of 3
        (3, None, False),  # third failure: no attempts left
        (3, 5, True),  # per-task override raises the limit
        (1, 1, False),  # per-task override lowers it
    ],
)
def test_max_attempts(attempts: int, max_attempts: int | None, retry: bool) -> None:
    task = Task(id="1", attempts=attempts, max_attempts=max_attempts)
    assert manager().should_retry(task) is retry


def test_max_attempts_for() -> None:
    rm = manager()
    assert rm.max_attempts_for(Task(id="1")) == 3
    assert rm.max_attempts_for(Task(id="1", max_attempts=7)) == 7


def test_backoff_is_exponential_without_jitter() -> None:
    rm = manager()
    assert [rm.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_backoff_is_capped() -> None:
    rm = manager(retry_backoff_max=10.0)
    assert rm.delay(3) == 8.0
    assert rm.delay(4) == 10.0
    assert rm.delay(10_000) == 10.0  # no overflow


def test_jitter_stays_within_fraction_and_is_seeded() -> None:
    rm = manager(seed=42, retry_jitter=0.25)
    delays = [rm.delay(3) for _ in range(200)]
    assert all(6.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 100
    again = manager(seed=42, retry_jitter=0.25)
    assert [again.delay(3) for _ in range(200)] == delays


def test_jitter_never_exceeds_cap() -> None:
    rm = manager(retry_jitter=0.5, retry_backoff_max=8.0)
    assert all(rm.delay(3) <= 8.0 for _ in range(100))


def test_non_retryable_exit_codes_and_reasons() -> None:
    rm = manager(non_retryable_exit_codes=[2, 126])
    task = Task(id="1", attempts=1)
    assert rm.should_retry(task, exit_code=1)
    assert not rm.should_retry(task, exit_code=2)
    assert not rm.should_retry(task, exit_code=126)
    assert not rm.should_retry(task, reason="Bad task definition: no command")
    assert rm.should_retry(task, reason="heartbeat timeout")


def test_next_attempt_at_uses_attempts_spent() -> None:
    rm = manager()
    assert rm.next_attempt_at(Task(id="1", attempts=3), now=100.0) == 108.0


def test_decide_explains() -> None:
    rm = manager(non_retryable_exit_codes=[2])
    d = rm.decide(Task(id="1", attempts=1), exit_code=1, now=0.0)
    assert d.retry and d.next_attempt_at == 2.0
    assert d.message == "attempt 1/3 failed (exit code 1); retry in 2.0 s"
    d = rm.decide(Task(id="1", attempts=3), exit_code=1)
    assert not d.retry and "no attempts left" in d.message
    assert rm.decide(Task(id="1", attempts=1), exit_code=2).message == (
        "exit code 2 is not retryable"
    )
    assert not rm.decide(Task(id="1", attempts=1), reason="bad task definition").retry
