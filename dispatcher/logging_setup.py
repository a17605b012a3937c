"""Logging set-up for the Dispatcher: human text lines or one JSON object per line.

Convention for event lines: code that logs something about a task, a runner or a pool passes
them as ``extra`` fields, always under these three names::

    log.info("runner started", extra={"task": task.key, "runner": runner_id, "pool": pool.name})
    log.warning("launch failed: %s", err, extra=log_extra(task=task, pool=pool))

``task`` is the task key (``taskset/id``), ``runner`` the runner id, ``pool`` the pool name;
:func:`log_extra` builds that dict from objects or strings. Any of them may be left out. A
:class:`~.models.TaskEvent` passed as ``extra={"event": ev}`` fills the three from the event
(``task_key``, ``runner_id``, ``pool``) and adds ``event_type``.

``setup_logging(level, fmt="json")`` writes every record as one JSON object per line with the
keys ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``task``, ``runner``, ``pool``
(``null`` when not given), plus any other ``extra`` fields and ``exc_info`` for exceptions.
``fmt="text"`` writes ``HH:MM:SS LEVEL logger: message [task=… runner=… pool=…]``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

#: The context fields every JSON line carries.
CONTEXT_FIELDS = ("task", "runner", "pool")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_HANDLER_MARK = "_necrocode_handler"


def log_extra(task: object = None, runner: object = None, pool: object = None) -> dict[str, Any]:
    """The ``extra`` dict of the convention, from objects (Task, Runner, AgentPool) or strings."""
    out: dict[str, Any] = {}
    if task is not None:
        out["task"] = task if isinstance(task, str) else getattr(task, "key", str(task))
    if runner is not None:
        out["runner"] = (runner if isinstance(runner, str)
                         else getattr(runner, "runner_id", str(runner)))
    if pool is not None:
        out["pool"] = pool if isinstance(pool, str) else (
            getattr(pool, "name", None) or getattr(pool, "pool_name", None) or str(pool))
    return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(getattr(value, "value", value))


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """task, runner, pool of a record (from ``extra`` fields, else from an ``event`` extra)."""
    out: dict[str, Any] = {name: getattr(record, name, None) for name in CONTEXT_FIELDS}
    event = getattr(record, "event", None)
    if event is not None and hasattr(event, "event_type"):
        for name, attr in (("task", "task_key"), ("runner", "runner_id"), ("pool", "pool")):
            if out[name] is None:
                out[name] = getattr(event, attr, None)
        out["event_type"] = getattr(event.event_type, "value", str(event.event_type))
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, always with ``task``, ``runner`` and ``pool`` keys."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _context(record).items():
            data[name] = _jsonable(value)
        for key, value in vars(record).items():
            if key == "event" and "event_type" in data:
                continue
            if key not in _STANDARD_ATTRS and key not in data and not key.startswith("_"):
                data[key] = _jsonable(value)
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message [task=… runner=… pool=…]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{name}={value}" for name, value in _context(record).items()
                   if name in CONTEXT_FIELDS and value is not None]
        if not context:
            return line
        head, sep, tail = line.partition("\n")  # keep tracebacks below the context
        return f"{head} [{' '.join(context)}]{sep}{tail}"


def setup_logging(
    level: int | str = "INFO",
    fmt: str = "text",
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send log records at ``level`` and above to ``stream`` (stderr) as text or JSON lines.

    Calling it again replaces the handler it installed before (other handlers are kept).
    Raises ValueError for an unknown level or format, naming the accepted values.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r} is not known; use 'text' or 'json'")
    if isinstance(level, str):
        resolved = logging.getLevelName(level.strip().upper())
        if not isinstance(resolved, int):
            raise ValueError(
                f"log level {level!r} is not known; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        level = resolved
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "TextFormatter", "log_extra", "setup_logging"]
