"""Exceptions raised by the Dispatcher.

Every error derives from :class:`DispatcherError`. Messages name the object at fault and the fix,
so that the console and the CLI can print them as they are, without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class DispatcherError(Exception):
    """Root of every error the Dispatcher raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found while validating user input (a config file, a taskset).

    ``location`` names where: ``"config/dispatcher.yaml:12"`` or ``"tasks.yaml, task 1.2"``;
    ``key`` names the key or field (``"agent_pools.docker.max_concurrency"``).
    """

    location: str
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        key = f"{self.key}: " if self.key else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{key}{self.message}{hint}"


class ValidationError(DispatcherError):
    """User input was refused; ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: list[Problem], title: str = "invalid input") -> None:
        self.problems = list(problems)
        self.title = title
        lines = [f"{title}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class ConfigError(ValidationError):
    """The configuration file or object is invalid."""

    def __init__(self, problems: list[Problem], title: str = "invalid configuration") -> None:
        super().__init__(problems, title)


class TasksetError(ValidationError):
    """A taskset (YAML file, Kiro tasks.md) is invalid; nothing was written."""

    def __init__(self, problems: list[Problem], title: str = "invalid taskset") -> None:
        super().__init__(problems, title)


class RegistryError(DispatcherError):
    """The Task Registry could not complete an operation."""


class RegistryLostError(RegistryError):
    """The registry's file (or folder) was deleted or replaced while it was open: going on
    would dispatch from an empty registry."""


class TaskNotFoundError(RegistryError):
    """No task with that key exists in the registry."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"task {key!r} not found; task keys are 'taskset/id' (see `necroui tasks`)"
        )


class InvalidTransitionError(RegistryError):
    """A state change was refused: not allowed by the state machine, or the task moved on."""

    def __init__(self, key: str, current: str, target: str, reason: str = "") -> None:
        self.key = key
        self.current = current
        self.target = target
        why = f": {reason}" if reason else ""
        super().__init__(f"task {key!r} cannot go from {current} to {target}{why}")


class RunnerLaunchError(DispatcherError):
    """A runner could not be started; the task is retried with backoff and its slot released."""

    def __init__(self, message: str, *, pool: str = "", retryable: bool = True) -> None:
        self.pool = pool
        self.retryable = retryable
        super().__init__(message)


class DeadlockDetectedError(DispatcherError):
    """Tasks wait on each other in a cycle and can never run.

    ``cycles`` holds each cycle as the list of task keys in order.
    """

    def __init__(self, cycles: list[list[str]], message: str | None = None) -> None:
        self.cycles = [list(c) for c in cycles]
        if message is None:
            paths = "; ".join(" -> ".join([*c, c[0]]) for c in self.cycles)
            message = (
                f"dependency cycle(s) detected: {paths}; remove one dependency of each cycle "
                "from the taskset and submit it again"
            )
        super().__init__(message)


class PoolNotFoundError(DispatcherError):
    """No agent pool with that name is configured."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        known_txt = f"; configured pools: {', '.join(known)}" if known else ""
        super().__init__(f"agent pool {name!r} is not configured{known_txt}")


class DispatcherStateError(DispatcherError):
    """An operation does not fit the Dispatcher's current state (not started, stopping, …)."""
