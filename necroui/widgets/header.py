"""The dashboard header: dispatcher state, policy, global load, totals, throughput, registry."""

from __future__ import annotations

from necrocode.dispatcher.snapshot import Snapshot
from rich.text import Text
from textual.widgets import Static

from .format import ENGINE_STATE_STYLES, fmt_cost, fmt_tokens

_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: tuple[int, ...] | list[int]) -> str:
    """Values as block characters scaled to their max (``▁▃▅█``)."""
    if not values:
        return ""
    top = max(values) or 1
    return "".join(_BLOCKS[min(7, round(v / top * 7))] for v in values)


def header_text(snap: Snapshot | None, *, read_only: bool = False, filter_text: str = "",
                unacknowledged: int = 0, connection: str | None = None) -> Text:
    """The header's two lines as rich Text (``connection``: why the link is down)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" necroui ", style="bold white on dark_green")
    if connection:
        text.append(f" {connection} ", style="bold white on red")
    if snap is None:
        text.append("  waiting for the engine's first snapshot…", style="italic")
        return text
    text.append(" ")
    text.append(f" {snap.state.upper()} ", style=ENGINE_STATE_STYLES.get(snap.state, "bold"))
    if read_only:
        text.append(" READ-ONLY ", style="bold white on blue")
    c = snap.counters
    text.append(" " + str(snap.policy), style="bold")
    text.append("  run ", style="grey62")
    # what can run now (the engine's: enabled, healthy pools under the global cap)
    text.append(f"{snap.running_total}/{snap.capacity}", style="bold")
    text.append("  done ", style="grey62")
    text.append(str(c.done), style="bold green")
    text.append(" failed ", style="grey62")
    text.append(str(c.failed), style="bold red" if c.failed else "bold")
    if c.cancelled:
        text.append(" cancelled ", style="grey62")
        text.append(str(c.cancelled), style="magenta")
    text.append(" of ", style="grey62")
    text.append(f"{c.total:,}", style="bold")
    text.append(" tasks", style="grey62")
    if c.retried:
        text.append("  retries ", style="grey62")
        text.append(str(c.retried), style="bold yellow")
    text.append("\n")
    if unacknowledged:
        text.append(f" ⚠ {unacknowledged} new failure{'s' if unacknowledged > 1 else ''} (F) ",
                    style="bold white on red")
    cycles = sum(1 for d in snap.deadlocks if d.kind == "cycle")
    blocked = sum(len(d.tasks) for d in snap.deadlocks if d.kind != "cycle")
    if cycles:
        text.append(f" {cycles} cycle(s)!", style="bold white on red")
    if blocked:
        text.append(f" {blocked} blocked by failures", style="bold yellow")
    if snap.deadlocks:
        text.append(" (d) ", style="grey62")
    spent = c.usage  # coding agents' totals: early on the line, kept at 80 columns
    if spent is not None and (spent.total_tokens or spent.cost_usd is not None):
        text.append(" tokens ", style="grey62")
        text.append(fmt_tokens(spent.total_tokens), style="bold magenta")
        if spent.cost_usd is not None:
            text.append(" cost ", style="grey62")
            text.append(fmt_cost(spent.cost_usd), style="bold magenta")
        text.append(" ")
    if snap.throughput:
        text.append(" done/" + f"{snap.throughput_interval:g}s ", style="grey62")
        text.append(sparkline(snap.throughput[-24:]), style="green")
        text.append(f" {snap.throughput[-1]}", style="bold")
    text.append("  registry ", style="grey62")
    text.append(snap.registry_path)
    if snap.api_url:
        text.append("  api ", style="grey62")
        text.append(snap.api_url)
    if filter_text:
        text.append("  filter ", style="grey62")
        text.append(f"/{filter_text}", style="bold cyan")
    return text


class DashboardHeader(Static):
    """Two status lines; redrawn only when something shown changed."""

    def __init__(self, *, read_only: bool = False, id: str | None = None) -> None:
        super().__init__(header_text(None), id=id)
        self.read_only = read_only
        self.filter_text = ""
        self.unacknowledged = 0
        self.connection: str | None = None
        self._snap: Snapshot | None = None
        self._last: tuple[object, ...] | None = None

    def apply(self, snap: Snapshot) -> None:
        """Redraw from a snapshot."""
        self._snap = snap
        key = (snap.state, snap.policy, snap.counters, snap.running_total, snap.registry_path,
               snap.api_url, snap.deadlocks, self.filter_text, snap.capacity,
               snap.throughput[-24:], snap.throughput_interval, self.unacknowledged,
               self.connection)
        if key != self._last:
            self._last = key
            self.update(header_text(snap, read_only=self.read_only, filter_text=self.filter_text,
                                    unacknowledged=self.unacknowledged,
                                    connection=self.connection))

    def set_connection(self, problem: str | None) -> None:
        """Show why the link to an attached dispatcher is down (None: it is up)."""
        if problem == self.connection:
            return
        self.connection = problem
        if self._snap is not None:
            self.apply(self._snap)
        else:
            self.update(header_text(None, connection=problem))

    def set_unacknowledged(self, count: int) -> None:
        """Failures told but not looked at yet (F looks)."""
        self.unacknowledged = count
        if self._snap is not None:
            self.apply(self._snap)

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        if self._snap is not None:
            self.apply(self._snap)
