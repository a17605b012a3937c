"""The ranges every number that enters the Dispatcher must fall in.

Tasksets, config files, the command line and the HTTP API all check their numbers here, so a
``.nan``, an ``.inf``, a ``1e308`` or a 27-digit priority is refused where it is written (with the
file, key and range) instead of failing later in a scheduling round. :func:`task_problem` applies
the same rules to a task already stored in a registry (written by another tool), so the scheduler
can set that one task aside and keep scheduling the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Bound",
    "CONFIG_BOUNDS",
    "CPU",
    "GENERIC",
    "MAX_ATTEMPTS",
    "MEMORY_MB",
    "POOL_BOUNDS",
    "PRIORITY",
    "SECONDS",
    "describe",
    "is_number",
    "task_problem",
]

#: A year, in seconds: the longest timeout, interval or estimate accepted.
YEAR = 366 * 24 * 3600


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def describe(value: Any) -> str:
    """A short text for a number in an error message (never thousands of digits)."""
    if isinstance(value, bool) or not is_number(value):
        from .yaml_source import type_name

        return type_name(value)
    if isinstance(value, int) and abs(value) >= 10**15:
        digits = int(value.bit_length() * 0.30103) + 1
        return f"an integer of about {digits} digits"
    if isinstance(value, float) and math.isnan(value):
        return "nan (not a number)"
    if isinstance(value, float) and math.isinf(value):
        return "infinity" if value > 0 else "-infinity"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fmt(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


@dataclass(frozen=True)
class Bound:
    """A closed (or left-open) range for one number.

    ``integer`` refuses fractions; ``unit`` is said in messages ("seconds", "cores").
    """

    low: float
    high: float
    low_open: bool = False
    integer: bool = False
    unit: str = ""

    def text(self) -> str:
        """The range in words: ``"a number > 0 and <= 3600 seconds"``."""
        kind = "an integer" if self.integer else "a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.low_open:
            return f"{kind} > {_fmt(self.low)} and <= {_fmt(self.high)}{unit}"
        return f"{kind} from {_fmt(self.low)} to {_fmt(self.high)}{unit}"

    def problem(self, value: Any) -> str | None:
        """None when ``value`` fits; else what is wrong, for the error message."""
        if not is_number(value) or (self.integer and not isinstance(value, int)):
            return f"expected {self.text()}, got {describe(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {describe(value)}"
        if value <= self.low if self.low_open else value < self.low:
            side = ">" if self.low_open else ">="
            return f"must be {side} {_fmt(self.low)}, got {describe(value)}"
        if value > self.high:
            return f"must be <= {_fmt(self.high)}, got {describe(value)}"
        return None

    def hint(self) -> str:
        """The fix, for the error's hint: the range in words."""
        return f"give {self.text()}"


SECONDS = Bound(0, YEAR, low_open=True, unit="seconds")
PRIORITY = Bound(-10**9, 10**9, integer=True)
CPU = Bound(0, 1024.0, low_open=True, unit="cores")
MEMORY_MB = Bound(0, 16 * 1024 * 1024, low_open=True, integer=True, unit="MB")
MAX_ATTEMPTS = Bound(1, 1000, integer=True)
#: Any other number (a key added later without a range of its own).
GENERIC = Bound(-1e12, 1e12)

#: Ranges of the numeric settings of the ``dispatcher:`` section.
CONFIG_BOUNDS: dict[str, Bound] = {
    "poll_interval": Bound(0, 3600, low_open=True, unit="seconds"),
    "max_global_concurrency": Bound(1, 100_000, integer=True),
    "heartbeat_timeout": Bound(0, 7 * 24 * 3600, low_open=True, unit="seconds"),
    "retry_max_attempts": MAX_ATTEMPTS,
    "retry_backoff_base": Bound(1, 1000),
    "graceful_shutdown_timeout": Bound(0, YEAR, unit="seconds"),
    "api_port": Bound(0, 65535, integer=True),
    "heartbeat_interval": Bound(0, 24 * 3600, low_open=True, unit="seconds"),
    "priority_aging_seconds": Bound(0, YEAR, unit="seconds"),
    "fair_share_default_weight": Bound(0, 1e6, low_open=True),
    "fair_share_half_life": Bound(0, 10 * YEAR, low_open=True, unit="seconds"),
    "fair_share_entry_charge": Bound(0, YEAR, unit="seconds"),
    "retry_backoff_max": Bound(0, YEAR, low_open=True, unit="seconds"),
    "retry_jitter": Bound(0, 1),
    "slots_per_repo": Bound(1, 1000, integer=True),
    "runner_stop_grace": Bound(0, 3600, unit="seconds"),
    "deadlock_check_interval": Bound(0, 24 * 3600, low_open=True, unit="seconds"),
    "snapshot_max_rate": Bound(0, 1000, low_open=True, unit="per second"),
    "output_log_max_bytes": Bound(0, 1 << 40, integer=True, unit="bytes"),
    "api_max_connections": Bound(1, 10_000, integer=True),
    "api_max_connections_per_client": Bound(1, 10_000, integer=True),
    "api_read_timeout": Bound(0, 3600, low_open=True, unit="seconds"),
}
#: A tenant's fair-share weight.
WEIGHT = Bound(0, 1e6, low_open=True)
#: An exit code named in non_retryable_exit_codes (negative: killed by that signal).
EXIT_CODE = Bound(-255, 255, integer=True)
#: ui.refresh_interval.
REFRESH = Bound(0, 3600, low_open=True, unit="seconds")

#: Ranges of a pool's numbers.
POOL_BOUNDS: dict[str, Bound] = {
    "max_concurrency": Bound(1, 100_000, integer=True),
    "cpu_quota": Bound(0, 1e6, low_open=True, unit="cores"),
    "memory_quota": Bound(0, 1 << 40, low_open=True, integer=True, unit="MB"),
}


_CPU_HIGH = CPU.high
_MEM_HIGH = MEMORY_MB.high
_PRIO_LOW, _PRIO_HIGH = PRIORITY.low, PRIORITY.high


def task_problem(task: Any) -> str | None:
    """What makes a stored task impossible to schedule (a number out of range), or None.

    Checks the fields the scheduler computes with: ``resources.cpu``, ``resources.memory_mb``,
    ``priority``, ``timeout``, ``max_attempts``. Cheap: a few comparisons for a valid task.
    """
    try:
        res = task.resources
        cpu, mem, prio = res.cpu, res.memory_mb, task.priority
        if (type(cpu) is float and 0.0 < cpu <= _CPU_HIGH and type(mem) is int
                and 0 < mem <= _MEM_HIGH and type(prio) is int
                and _PRIO_LOW <= prio <= _PRIO_HIGH
                and task.timeout is None and task.max_attempts is None):
            return None  # the common case, without building messages
    except AttributeError:
        pass
    res = getattr(task, "resources", None)
    checks: tuple[tuple[str, Bound, Any], ...] = (
        ("resources.cpu", CPU, getattr(res, "cpu", None)),
        ("resources.memory_mb", MEMORY_MB, getattr(res, "memory_mb", None)),
        ("priority", PRIORITY, getattr(task, "priority", None)),
    )
    for name, bound, value in checks:
        why = bound.problem(value)
        if why:
            return f"{name} {why}"
    for name, bound in (("timeout", SECONDS), ("max_attempts", MAX_ATTEMPTS)):
        value = getattr(task, name, None)
        if value is not None:
            why = bound.problem(value)
            if why:
                return f"{name} {why}"
    return None
