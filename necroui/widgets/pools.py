"""The pools panel: saturation bar, CPU and memory used/quota, enabled, health per pool."""

from __future__ import annotations

from collections.abc import Sequence

from necrocode.dispatcher.models import PoolStatus
from rich.text import Text
from textual.widgets import DataTable

from .format import bar, fmt_quota, truncate

_COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("pool", "pool", 10),
    ("type", "type", 6),
    ("load", "load", 14),
    ("cpu", "cpu", 7),
    ("mem", "mem MB", 10),
    ("enabled", "on", 3),
    ("health", "health", 40),
)


_TYPE_SHORT = {"local-process": "local", "docker": "docker", "kubernetes": "k8s"}


def pool_cells(pool: PoolStatus) -> tuple[str | Text, ...]:
    """Formatted cells of one pool row."""
    load = bar(pool.running, pool.max_concurrency, width=8)
    load.append(f" {pool.running}/{pool.max_concurrency}")
    enabled = Text("on", style="green") if pool.enabled else Text("off", style="bold yellow")
    if pool.healthy and not pool.recent_launch_errors:
        health = Text("ok", style="green")
    else:
        msg = f"{pool.recent_launch_errors} launch error(s)"
        if pool.last_error:
            msg += f": {truncate(pool.last_error, 50)}"
        health = Text(msg, style="bold red" if not pool.healthy else "yellow")
    return (
        pool.pool_name,
        _TYPE_SHORT.get(str(getattr(pool.pool_type, "value", pool.pool_type)), "?"),
        load,
        fmt_quota(round(pool.cpu_in_use, 2), pool.cpu_quota),
        fmt_quota(pool.memory_in_use, pool.memory_quota),
        enabled,
        health,
    )


class PoolsTable(DataTable[str | Text]):
    """One row per pool, keyed by pool name, updated cell by cell."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self._cells: dict[str, tuple[str | Text, ...]] = {}
        self.pools: dict[str, PoolStatus] = {}

    def on_mount(self) -> None:
        for key, label, width in _COLUMNS:
            self.add_column(label, key=key, width=width)

    @property
    def selected_pool(self) -> str | None:
        """Name of the pool under the cursor."""
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return None if row_key.value is None else str(row_key.value)

    def apply(self, pools: Sequence[PoolStatus]) -> None:
        """Bring rows to ``pools``: add, update changed cells, remove gone."""
        names = [p.pool_name for p in pools]
        for name in list(self._cells):
            if name not in names:
                self.remove_row(name)
                del self._cells[name]
        for pool in pools:
            cells = pool_cells(pool)
            old = self._cells.get(pool.pool_name)
            if old is None:
                self.add_row(*cells, key=pool.pool_name)
            elif old != cells:
                for (key, _, _), a, b in zip(_COLUMNS, old, cells, strict=True):
                    if a != b:
                        self.update_cell(pool.pool_name, key, b)
            self._cells[pool.pool_name] = cells
        self.pools = {p.pool_name: p for p in pools}
