"""EngineHealth: features that are degraded right now, said once and shown in every snapshot.

When a part of the engine fails in a way that does not stop it (the deadlock check, the queue
order, a pending reason, the event feed), the failure is logged once at warning with the object
it concerns and kept here until that part works again; snapshots carry the list, so the console
and ``necroui status`` show it.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

MAX_PROBLEMS = 20


class EngineHealth:
    """What is degraded, by feature (engine thread only)."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}
        self.version = 0

    def failed(self, feature: str, error: BaseException | str, *, what: str = "") -> None:
        """``feature`` does not work: a warning when this is new (or changed), then kept."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        message = f"{what}: {text}" if what else text
        if self._problems.get(feature) == message:
            return
        if len(self._problems) >= MAX_PROBLEMS and feature not in self._problems:
            return
        self._problems[feature] = message
        self.version += 1
        logger.warning("%s degraded: %s", feature, message,
                       exc_info=error if isinstance(error, BaseException) else None)

    def ok(self, feature: str) -> None:
        """``feature`` works again."""
        if self._problems.pop(feature, None) is not None:
            self.version += 1
            logger.info("%s works again", feature)

    def problems(self) -> tuple[str, ...]:
        """One line per degraded feature."""
        return tuple(f"{feature}: {message}" for feature, message in self._problems.items())
