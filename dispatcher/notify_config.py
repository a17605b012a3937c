"""The ``notify:`` section of the config: hooks told about failures and finished tasksets.

::

    notify:
      command: ["/usr/local/bin/page-me"]   # argv; the notice as JSON on stdin (no shell)
      webhook: "https://hooks.example/necrocode"  # POSTed the notice as JSON
      events: [task_failed, gate_failed]  # kinds sent (default: every kind)
      timeout: 10        # seconds per hook call; a slower command is killed
      queue_size: 100    # notices waiting for slow hooks; the oldest are dropped past it

Parsing and validation live here so that :mod:`.config_loader` only routes the section.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlparse

from .errors import Problem
from .section_keys import section_values
from .yaml_source import Locate, type_name

KINDS = ("task_failed", "budget_stop", "conflict", "gate_failed", "taskset_finished")


@dataclass
class NotifyConfig:
    """Where notices go besides the console (R22.1)."""

    command: list[str] | None = None  # argv run per notice, the notice as JSON on stdin
    webhook: str | None = None  # http(s) URL POSTed the notice as JSON
    events: list[str] | None = None  # kinds sent to the hooks; None: every kind
    timeout: float = 10.0  # seconds per hook call
    queue_size: int = 100  # notices waiting for the hooks; the oldest dropped past it


NOTIFY_KEYS = tuple(f.name for f in fields(NotifyConfig))


def notify_from_section(raw: dict[Any, Any], locate: Locate,
                        problems: list[Problem]) -> NotifyConfig:
    """The NotifyConfig of a parsed ``notify:`` mapping (unknown keys are problems)."""
    return NotifyConfig(**section_values("notify", raw, NOTIFY_KEYS, locate, problems))


def validate_notify(notify: NotifyConfig, add: Callable[..., None]) -> None:
    """Every problem of a NotifyConfig, reported through ``add(path, message, hint)``."""
    if not isinstance(notify, NotifyConfig):
        add(("notify",), f"expected a mapping, got {type_name(notify)}")
        return
    cmd = notify.command
    if cmd is not None and (not isinstance(cmd, list) or not cmd
                            or not all(isinstance(a, str) and a for a in cmd)):
        add(("notify", "command"), f"expected a list of strings (argv), got {type_name(cmd)}",
            'e.g. command: ["/usr/local/bin/page-me", "--json"] (no shell)')
    url = notify.webhook
    if url is not None:
        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            add(("notify", "webhook"), f"expected an http(s) URL, got {url!r}",
                'e.g. webhook: "https://hooks.example/necrocode"')
    events = notify.events
    if events is None:
        pass
    elif not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        add(("notify", "events"), f"expected a list of notice kinds, got {type_name(events)}",
            f"kinds: {', '.join(KINDS)}")
    else:
        for i, kind in enumerate(events):
            if kind not in KINDS:
                close = difflib.get_close_matches(kind, list(KINDS), n=1, cutoff=0.6)
                add(("notify", "events", i), f"unknown notice kind {kind!r}",
                    f"did you mean {close[0]!r}?" if close else f"kinds: {', '.join(KINDS)}")
    timeout = notify.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        add(("notify", "timeout"), f"expected seconds > 0, got {timeout!r}",
            "a hook slower than this is given up (a command is killed)")
    size = notify.queue_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        add(("notify", "queue_size"), f"expected an integer >= 1, got {size!r}")


def notify_to_dict(notify: NotifyConfig) -> dict[str, Any]:
    """The section as YAML data (``config show``), unset hooks left out."""
    out: dict[str, Any] = {"timeout": notify.timeout, "queue_size": notify.queue_size}
    if notify.events is not None:
        out["events"] = list(notify.events)
    if notify.command is not None:
        out["command"] = list(notify.command)
    if notify.webhook is not None:
        out["webhook"] = notify.webhook
    return out
