"""The pools panel: saturation bar, CPU and memory used/quota, enabled, health per pool."""

from __future__ import annotations

from collections.abc import Sequence

from necrocode.dispatcher.models import PoolStatus
from rich.text import Text
from textual.widgets import DataTable

from .format import bar, fitted, fmt_quota, one_line

#: (key, label, width, drop): health takes the width left; at narrow widths the columns with a
#: drop rank are hidden (highest first) so that no horizontal scrollbar appears.
_COLUMNS: tuple[tuple[str, str, int, int], ...] = (
    ("pool", "pool", 10, 0),
    ("type", "type", 6, 1),
    ("load", "load", 14, 0),
    ("cpu", "cpu", 7, 2),
    ("mem", "mem MB", 10, 3),
    ("enabled", "on", 3, 0),
    ("health", "health", 20, 0),
)
_HEALTH_MIN = 20


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
            msg += f": {one_line(pool.last_error)}"
        health = fitted(msg, "bold red" if not pool.healthy else "yellow")
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
        super().__init__(id=id, cursor_type="row", cell_padding=0)
        self._cells: dict[str, tuple[str | Text, ...]] = {}
        self.pools: dict[str, PoolStatus] = {}
        self._fitted: tuple[int, int] | None = None
        self._widths: dict[str, int] = {}

    def on_mount(self) -> None:
        self._widths = {key: width + 1 for key, _, width, _ in _COLUMNS}
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label, _, _ in _COLUMNS:
            self.add_column(label, key=key, width=self._widths[key])

    def on_resize(self) -> None:
        self.fit_columns()

    def fit_columns(self) -> None:
        """Fit the columns to the width: health takes the rest, minor columns go when narrow.

        New widths rebuild the table (a handful of rows) through DataTable's public API.
        """
        scrollbar = self.styles.scrollbar_size_vertical if self.row_count + 1 > (
            self.size.height or 99) else 0
        width = self.size.width - scrollbar
        if width <= 0 or (width, self.row_count) == self._fitted:
            return
        self._fitted = (width, self.row_count)
        widths = {key: w + 1 for key, _, w, _ in _COLUMNS if key != "health"}
        for key, _, _, _ in sorted((c for c in _COLUMNS if c[3]), key=lambda c: -c[3]):
            if width - sum(widths.values()) >= _HEALTH_MIN:
                break
            widths[key] = 0
        widths["health"] = max(4, width - sum(widths.values()))
        if widths == self._widths:
            return
        self._widths = widths
        selected = self.selected_pool
        self.clear(columns=True)
        self._add_columns()
        for name, cells in self._cells.items():
            self.add_row(*cells, key=name)
        if selected in self._cells:
            self.move_cursor(row=list(self._cells).index(selected), animate=False)

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
                for (key, _, _, _), a, b in zip(_COLUMNS, old, cells, strict=True):
                    if a != b:
                        self.update_cell(pool.pool_name, key, b)
            self._cells[pool.pool_name] = cells
        self.pools = {p.pool_name: p for p in pools}
        self.fit_columns()
