"""Small rich helpers for the command line: tables, state colours, problem lists."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Colour of each task state in tables.
STATE_STYLES: dict[str, str] = {
    "blocked": "dim",
    "ready": "yellow",
    "running": "cyan",
    "done": "green",
    "failed": "bold red",
    "cancelled": "magenta",
}


def stdout_console() -> Console:
    """A console on the current stdout (so click's test runner captures it)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    """A console on the current stderr, for problems and warnings."""
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def state_text(state: str) -> Text:
    """A task state, coloured."""
    return Text(state, style=STATE_STYLES.get(state, ""))


def make_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
               title: str | None = None, right: Sequence[str] = ()) -> Table:
    """A compact table; columns named in ``right`` are right-aligned (numbers)."""
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left",
                         overflow="fold" if name == columns[-1] else "ellipsis",
                         no_wrap=name != columns[-1])
    for row in rows:
        table.add_row(*[cell if isinstance(cell, Text) else Text(_cell(cell)) for cell in row])
    return table


def print_table(table: Table) -> None:
    """Print a rich table on stdout (see :func:`print_rows` for output that may be piped)."""
    stdout_console().print(table)


def print_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
               title: str | None = None, right: Sequence[str] = ()) -> None:
    """Print rows as a table on stdout.

    On a terminal, a rich table fitted to its width. Piped or redirected (grep, awk, a file),
    one plain line per row whatever its length: columns aligned with spaces, no colour, no
    trailing blanks, never wrapped at 80 columns (and fast for 10,000s of rows).
    """
    out = stdout_console()
    if out.is_terminal:
        out.print(make_table(columns, rows, title=title, right=right))
        return
    for line in plain_lines(columns, rows, right=right, title=title):
        _echo(line)


def plain_lines(columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                right: Sequence[str] = (), title: str | None = None) -> list[str]:
    """The rows as aligned plain-text lines: a header, then one line per row."""
    table = [list(columns)] + [
        [(cell.plain if isinstance(cell, Text) else _cell(cell)).replace("\n", " ")
         for cell in row]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    last = len(columns) - 1
    lines = [title] if title else []
    for row in table:
        cells = [
            text if i == last and columns[i] not in right
            else (text.rjust(widths[i]) if columns[i] in right else text.ljust(widths[i]))
            for i, text in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_age(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def since(timestamp: float | None, now: float | None = None) -> str:
    """Age of a timestamp, formatted."""
    if timestamp is None:
        return "-"
    return format_age((now if now is not None else time.time()) - timestamp)


def _echo(text: str) -> None:
    print(text, file=sys.stdout)


def print_status(data: dict[str, Any], *, queued_rows: int = 20) -> None:
    """Human summary of a dispatcher status dict (``Snapshot.to_dict()``).

    Every running task, the first ``queued_rows`` queued ones in dispatch order and the
    counts: bounded whatever the size of the queue.
    """
    if data.get("state") == "not running" and not data.get("api_url"):
        _echo(f"no Dispatcher is running for registry {data.get('registry_path') or '-'} "
              "(start one with `necroui` or `necroui --no-tui`)")
    else:
        where = data.get("api_url") or data.get("registry_path") or ""
        _echo(f"dispatcher {data.get('state', 'unknown')}"
              f"{' at ' + where if where else ''}, policy {data.get('policy', '-')}")
    counters = data.get("counters") or {}
    if counters:
        parts = [f"{k} {counters[k]}" for k in
                 ("total", "ready", "blocked", "running", "done", "failed", "cancelled")
                 if k in counters]
        _echo("tasks: " + ", ".join(parts))
    pools = data.get("pools") or []
    if pools:
        rows = [
            (p.get("pool_name"), p.get("pool_type"),
             f"{p.get('running')}/{p.get('max_concurrency')}",
             "yes" if p.get("enabled", True) else "no",
             "yes" if p.get("healthy", True) else f"no: {p.get('last_error') or ''}")
            for p in pools
        ]
        print_rows(["POOL", "TYPE", "RUNNING", "ENABLED", "HEALTHY"], rows)
    running = data.get("running") or []
    if running:
        run_rows = [(r.get("key"), r.get("pool"), r.get("runner_id"), r.get("attempt"),
                     since(r.get("started_at"))) for r in running]
        print_rows(["RUNNING", "POOL", "RUNNER", "TRY", "FOR"], run_rows)
    queued = data.get("queued") or []
    if queued:
        # dispatch order (READY by position, then BLOCKED), whatever order the list came in
        order = sorted(range(len(queued)), key=lambda i: (
            queued[i].get("position") is None, queued[i].get("position") or 0, i))
        shown = [queued[i] for i in order[:queued_rows]]
        queue_rows = [(q.get("position") or "-", q.get("key"), q.get("priority"),
                       (q.get("pending") or {}).get("message", "")) for q in shown]
        if queue_rows:
            print_rows(["#", "QUEUED", "PRI", "WHY"], queue_rows, right=("#", "PRI"))
        total = (data.get("totals") or {}).get("queued", len(queued))  # server-side limit
        if total > len(shown):
            _echo(f"... and {total - len(shown)} more queued (--queued N shows more)")
