"""Checks of the JSON bodies the HTTP API accepts, before the engine sees them.

Every number is checked for finiteness and range (:mod:`..limits`): JSON's ``1e400`` reads as
infinity and ``1e20`` as a float, and both used to reach the engine. Bodies nest at most
:data:`MAX_DEPTH` levels. A refused body is a :class:`PayloadError` (HTTP 400) that names the
field and the fix.
"""

from __future__ import annotations

import math
from typing import Any

from .. import limits
from ..errors import DispatcherError

__all__ = ["MAX_DEPTH", "PayloadError", "check_control", "check_depth", "check_report"]

#: Deepest nesting of objects and arrays in a request body.
MAX_DEPTH = 32
#: Longest string field (a task key, a progress message, a reason).
MAX_TEXT = 4096
#: Exit codes a runner may report (negative: killed by that signal).
EXIT_CODE = limits.Bound(-(2**31), 2**31 - 1, integer=True)


class PayloadError(DispatcherError):
    """A request body was refused (HTTP 400); the message names the field and the fix."""


def check_depth(data: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse bodies nested deeper than ``limit`` (iteratively: no recursion to exhaust)."""
    todo: list[tuple[Any, int]] = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > limit:
            raise PayloadError(f"body nested more than {limit} levels deep; send a flat object")
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)


def _text(payload: dict[str, Any], name: str, required: bool = False) -> None:
    value = payload.get(name)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise PayloadError(f"{name!r} must be a non-empty string of at most {MAX_TEXT} "
                           f"characters, got {limits.describe(value)}")


def _number(payload: dict[str, Any], name: str, bound: limits.Bound) -> None:
    value = payload.get(name)
    if value is None:
        return
    why = bound.problem(value)
    if why:
        raise PayloadError(f"{name!r} {why}; {bound.hint()}")


def check_control(verb: str, payload: dict[str, Any]) -> None:
    """The body of ``POST /v1/control/{verb}``."""
    if verb in ("priority", "retry", "cancel"):
        key = payload.get("task") or payload.get("key") or payload.get("task_key")
        if key is not None and (not isinstance(key, str) or len(key) > MAX_TEXT):
            raise PayloadError('"task" must be a task key string "taskset/id"')
    if verb == "priority":
        raw = payload.get("priority")
        if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit() and len(raw) < 30:
            raw = int(raw)
        if raw is None:
            raise PayloadError('priority needs {"task": "taskset/id", "priority": N}')
        why = limits.PRIORITY.problem(raw)
        if why:
            raise PayloadError(f"priority {why}; {limits.PRIORITY.hint()}")
    if verb == "pool":
        _text(payload, "pool")
        _text(payload, "name")


def check_report(payload: dict[str, Any]) -> None:
    """The body of a runner's heartbeat or completion report."""
    _number(payload, "exit_code", EXIT_CODE)
    duration = payload.get("duration")
    if duration is not None and (not limits.is_number(duration)
                                 or not math.isfinite(duration) or duration < 0):
        raise PayloadError(f"'duration' must be a finite number of seconds >= 0, got "
                           f"{limits.describe(duration)}")
    for name in ("reason", "progress"):
        value = payload.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise PayloadError(f"{name!r} must be a string of at most {MAX_TEXT} characters")
    artifacts = payload.get("artifacts")
    if artifacts is not None and not (isinstance(artifacts, list) and len(artifacts) <= 1000
                                      and all(isinstance(a, str) and len(a) <= MAX_TEXT
                                              for a in artifacts)):
        raise PayloadError("'artifacts' must be a list of at most 1000 strings")
