"""Formatting helpers shared by the dashboard widgets: durations, bars, state colours.

Every time-dependent text is computed from a ``now`` given by the caller (the app's injectable
clock), so snapshot tests with a frozen clock are deterministic.
"""

from __future__ import annotations

import time

from necrocode.dispatcher.models import TaskState, Usage
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

#: Colour of each task state, used by tables, the graph and the detail screen.
STATE_STYLES: dict[str, str] = {
    TaskState.BLOCKED.value: "grey62",
    TaskState.READY.value: "cyan",
    TaskState.RUNNING.value: "bold yellow",
    TaskState.DONE.value: "green",
    TaskState.FAILED.value: "bold red",
    TaskState.CANCELLED.value: "magenta",
}

#: Colour of each dispatcher state shown in the header.
ENGINE_STATE_STYLES: dict[str, str] = {
    "starting": "cyan",
    "running": "bold green",
    "paused": "bold black on yellow",
    "draining": "bold yellow",
    "stopping": "bold red",
    "stopped": "red",
}


def state_value(state: object) -> str:
    """The plain string of a TaskState (or anything with ``.value``)."""
    return str(getattr(state, "value", state))


def state_text(state: object) -> Text:
    """A task state coloured by :data:`STATE_STYLES`."""
    value = state_value(state)
    return Text(value, style=STATE_STYLES.get(value, ""))


def runs_of(state: object, attempts: int) -> int:
    """How many times a task ran: the registry's ``attempts`` counts FAILED attempts, so a
    RUNNING or DONE task has run ``attempts + 1`` times (a task done at once: 1)."""
    if state_value(state) in (TaskState.RUNNING.value, TaskState.DONE.value):
        return attempts + 1
    return attempts


def fmt_duration(seconds: float | None) -> str:
    """Compact duration: ``42s``, ``3m05s``, ``2h07m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_clock(timestamp: float | None) -> str:
    """Local wall-clock time ``HH:MM:SS`` of a timestamp."""
    if timestamp is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def fmt_datetime(timestamp: float | None) -> str:
    """Local ``YYYY-MM-DD HH:MM:SS`` of a timestamp."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def heartbeat_style(age: float, timeout: float) -> str:
    """Green under half the timeout, yellow after, red near it (>= 80 %)."""
    if timeout <= 0:
        return "green"
    if age < timeout / 2:
        return "green"
    if age < timeout * 0.8:
        return "yellow"
    return "bold red"


def heartbeat_text(age: float, timeout: float) -> Text:
    """Heartbeat age coloured by risk."""
    return Text(fmt_duration(age), style=heartbeat_style(age, timeout))


def bar(used: float, total: float, width: int = 10) -> Text:
    """A saturation bar ``█████░░░░░`` coloured green / yellow / red by fill."""
    ratio = 0.0 if total <= 0 else max(0.0, min(1.0, used / total))
    filled = round(ratio * width)
    style = "green" if ratio < 0.7 else ("yellow" if ratio < 1.0 else "bold red")
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style="grey35")
    return text


def fmt_quota(used: float, quota: float | None, unit: str = "") -> str:
    """``1.5/4`` or ``1.5/-`` (no quota)."""
    def num(v: float) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    q = "∞" if quota is None else num(quota)
    return f"{num(used)}/{q}{unit}"


def one_line(text: str | None) -> str:
    """The text on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(str(text).split()) if text else ""


def fitted(text: str | None, style: str = "") -> Text:
    """One-line Text that ends with an ellipsis where its column cuts it."""
    return Text(one_line(text), style=style, no_wrap=True, overflow="ellipsis")


def middle_ellipsis(key: str, width: int) -> str:
    """A task key cut in the middle to ``width``, keeping its id: ``chat-app-t…/2.1``."""
    if len(key) <= width:
        return key
    if width <= 1:
        return key[:width]
    taskset, sep, task_id = key.rpartition("/")
    if sep and len(task_id) + 2 < width:
        return taskset[: width - len(task_id) - 2] + "…/" + task_id
    head = (width - 1) // 2
    return key[:head] + "…" + key[len(key) - (width - 1 - head):]


class KeyText:
    """A task key cell: drawn cut in the middle to whatever width its column has."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(middle_ellipsis(self.key, options.max_width), no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(len(self.key), len(self.key))

    def __str__(self) -> str:
        return self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyText) and other.key == self.key or other == self.key

    def __hash__(self) -> int:
        return hash(self.key)


def truncate(text: str | None, width: int) -> str:
    """Single line, at most ``width`` characters (an ellipsis marks the cut)."""
    if not text:
        return ""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


def fmt_tokens(count: int | None) -> str:
    """Compact token count: ``950``, ``12.3k``, ``4.56M``; ``-`` when none."""
    if not count:
        return "-"
    if count < 1000:
        return str(count)
    if count < 100_000:
        return f"{count / 1000:.1f}k"
    if count < 1_000_000:
        return f"{count // 1000}k"
    if count < 100_000_000:
        return f"{count / 1_000_000:.2f}M".replace(".00M", "M")
    return f"{count // 1_000_000}M"


def fmt_cost(usd: float | None) -> str:
    """A cost in USD: ``$0.004``, ``$0.42``, ``$12.30``, ``$1,234``; ``-`` when unknown."""
    if usd is None:
        return "-"
    if usd < 0.1:
        return f"${usd:.3f}"
    if usd < 1000:
        return f"${usd:.2f}"
    return f"${usd:,.0f}"


def usage_of(view: object) -> tuple[int, float | None] | None:
    """(input + output tokens, cost in USD or None) of a view's ``usage``; None without one.

    ``usage`` is a :class:`~necrocode.dispatcher.models.Usage` (a dict from older clients)."""
    usage = getattr(view, "usage", None)
    if usage is None:
        return None
    if isinstance(usage, dict):
        tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        cost = usage.get("cost_usd")
        return tokens, float(cost) if isinstance(cost, int | float) else None
    return int(usage.total_tokens), usage.cost_usd


def usage_text(usage: Usage) -> str:
    """A coding agent's usage in full: ``12,000 in (3,000 cached) · 345 out · 7 turns · $0.42``."""
    parts = [f"{usage.input_tokens:,} in"
             + (f" ({usage.cached_tokens:,} cached)" if usage.cached_tokens else ""),
             f"{usage.output_tokens:,} out"]
    if usage.turns:
        parts.append(f"{usage.turns} turn{'s' if usage.turns != 1 else ''}")
    parts.append(fmt_cost(usage.cost_usd) if usage.cost_usd is not None else "cost unknown")
    return " · ".join(parts)


def budget_text(max_cost_usd: float | None, max_tokens: int | None, max_turns: int | None,
                spent: Usage | None = None) -> str:
    """A run's budget (``$1.00 · 50,000 tokens · 30 turns``), with what ``spent`` used of it."""
    parts = []
    if max_cost_usd is not None:
        cost = None if spent is None else spent.cost_usd
        parts.append(("" if cost is None else f"{fmt_cost(cost)} of ") + fmt_cost(max_cost_usd))
    if max_tokens is not None:
        used = "" if spent is None else f"{spent.total_tokens:,} of "
        parts.append(f"{used}{max_tokens:,} tokens")
    if max_turns is not None:
        used = "" if spent is None else f"{spent.turns} of "
        parts.append(f"{used}{max_turns} turns")
    return " · ".join(parts)
