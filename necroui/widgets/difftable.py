"""A DataTable that applies snapshots as diffs keyed by row, keeping cursor, sort and filter.

The live-monitor pattern (STYLE.md): never clear and rebuild. Each :meth:`DiffTable.apply` adds
new rows, ``update_cell``s only the cells whose formatted value changed, removes gone rows in one
pass, and re-sorts only when the order really changed. Time-dependent ("lazy") cells, such as
waiting time or heartbeat age, are refreshed from the clock for the visible rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.geometry import Size
from textual.widgets import DataTable
from textual.widgets._data_table import RowRenderables
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, Row, RowKey

from .format import KeyText

V = TypeVar("V")

MARK = "●"


@dataclass(frozen=True)
class Column:
    """One column: key, header label, content width and whether it ticks with the clock.

    ``flex``: the column takes the width its panel has left (the last column: pending reason,
    last error); ``width`` is then its minimum before other columns are dropped. ``drop``: a
    column that may be hidden when the panel is narrow, the highest number first.
    """

    key: str
    label: str
    width: int = 8
    lazy: bool = False  # depends on the clock or on the row's position: refreshed when visible
    flex: bool = False
    drop: int = 0


class _RowState:
    """One row's view and its formatted cells, formatted when the row is first drawn.

    Formatting 10,000 rows up front froze the first screen; only the rows on screen are ever
    formatted, and a changed row is re-formatted when it is drawn again.
    """

    __slots__ = ("lazy", "static", "table", "view")

    def __init__(self, table: DiffTable[Any], view: Any) -> None:
        self.table = table
        self.view = view
        self.static: tuple[CellValue, ...] | None = None
        self.lazy: tuple[CellValue, ...] | None = None

    def value(self, lazy: bool, index: int) -> CellValue:
        if lazy:
            if self.lazy is None:
                self.lazy = self.table.lazy_cells(self.view, self.table.clock())
            return self.lazy[index]
        if self.static is None:
            self.static = self.table.static_cells(self.view)
        return self.static[index]


CellValue = str | Text | KeyText


@dataclass(frozen=True)
class SortSpec:
    """A sort the user can pick with a shift-letter: its name and the value it sorts by."""

    name: str
    value: Callable[[Any, float], Any]  # (view, now) -> sortable value


class DiffTable(DataTable[CellValue], Generic[V]):
    """Base of the queue, running and finished tables.

    Subclasses define :attr:`COLUMNS`, :attr:`SORTS` and the row hooks. Every table has a
    ``mark`` column (space marks rows) and a ``task`` column holding the row key as plain text.
    """

    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    # Fixed widths (auto widths re-measure 10k rows), fitted to the panel on resize: the task
    # column is as wide as the longest key up to TASK_MAX (longer keys are cut in the middle,
    # TASK_MIN when space is short), the flex column takes what is left.
    TASK_MIN: ClassVar[int] = 10
    TASK_MAX: ClassVar[int] = 24
    SORTS: ClassVar[dict[str, SortSpec]] = {}  # sort id ("skill", "priority", ...) -> spec
    # Newest-first tables: while the cursor is on the first row (and no sort is set), new rows
    # arriving on top take the cursor and stay visible; a cursor moved down keeps its task.
    FOLLOW_HEAD: ClassVar[bool] = False
    # DataTable's home/end only scroll sideways when the cursor is a row: they move the cursor.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home,ctrl+home", "first_row", "First row", show=False),
        Binding("end,ctrl+end", "last_row", "Last row", show=False),
    ]

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        # No cell padding: each column's width includes its one-space gap, so a hidden
        # (dropped) column can take no room at all.
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=0)
        self.clock = clock
        self._views: dict[str, V] = {}
        self._sigs: dict[str, Hashable] = {}
        self._rows: dict[str, _RowState] = {}  # rows shown or filtered out
        self._search: dict[str, str] = {}  # filter texts, dropped when a row's signature changes
        self._last_views: Sequence[V] | None = None
        self._blank_cells: list[CellValue] = [""] * (len(self.COLUMNS) + 2)
        self._dirty = False  # cells changed: drop DataTable's render caches before the paint
        self._order: list[str] = []  # keys shown, in table order
        self._shown: set[str] = set()
        self._rowkeys: dict[str, RowKey] = {}
        self._fast_rows: tuple[tuple[int, int], list[Row]] | None = None
        self._snapshot_rank: dict[str, int] = {}
        self.filter_text = ""
        self.sort_id: str | None = None
        self.sort_reverse = False
        self.marked: set[str] = set()
        # The task the cursor is on, kept by KEY across refreshes, re-sorts and filters (the
        # row index of a task changes all the time in a live queue). Set by the user's moves;
        # programmatic moves while a snapshot applies do not change it.
        self._cursor_key: str | None = None
        self._holding = False
        self._max_key_len = 0
        self._fitted: tuple[int, bool, int] | None = None  # (width, scrollbar, key length)
        self.hidden_columns: set[str] = set()
        self._static_cols = [c for c in self.COLUMNS if not c.lazy]
        self._lazy_cols = [c for c in self.COLUMNS if c.lazy]
        self._layout: list[tuple[bool, int]] = []  # per column: (lazy?, index in its group)
        counts = [0, 0]
        for col in self.COLUMNS:
            self._layout.append((col.lazy, counts[col.lazy]))
            counts[col.lazy] += 1

    # --- hooks for subclasses --------------------------------------------------------------------
    def signature(self, view: V) -> Hashable:
        """Cheap tuple of the fields the static cells show (compared to detect changes)."""
        raise NotImplementedError

    def static_cells(self, view: V) -> tuple[CellValue, ...]:
        """Formatted non-lazy cells after ``mark`` and ``task``, in column order."""
        raise NotImplementedError

    def lazy_cells(self, view: V, now: float) -> tuple[CellValue, ...]:
        """Formatted lazy cells, in column order."""
        return ()

    def search_text(self, view: V) -> str:
        """Lower-case text the filter matches against."""
        raise NotImplementedError

    def view_key(self, view: V) -> str:
        return str(cast(Any, view).key)

    # --- faster internals for 10k rows of height 1 ----------------------------------------------
    # DataTable rebuilds these O(rows) lists after every change with per-row overhead (~50 ms
    # at 10k rows, each frame); the same lists built straight from the index map cost ~2 ms.
    @property
    def ordered_rows(self) -> list[Row]:
        key = (len(self.rows), self._update_count)
        cached = getattr(self, "_fast_rows", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        reverse = getattr(self._row_locations, "_reverse", None)
        if reverse is None or len(reverse) != len(self.rows):
            return super().ordered_rows
        rows = self.rows
        out = [rows[reverse[i]] for i in range(len(rows))]
        self._fast_rows = (key, out)
        return out

    @property
    def _y_offsets(self) -> list[tuple[RowKey, int]]:
        cache = self._offset_cache
        if self._update_count in cache:
            return cache[self._update_count]  # type: ignore[no-any-return]
        ordered = self.ordered_rows
        if all(row.height == 1 for row in ordered):
            offsets = [(row.key, 0) for row in ordered]
        else:
            offsets = [(row.key, y) for row in ordered for y in range(row.height)]
        cache[self._update_count] = offsets
        return offsets

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # Every column has a fixed width and every row height 1: measuring each new row's cells
        # (what DataTable does, ~4 s for 10k new rows) cannot change anything.
        if any(col.auto_width for col in self.columns.values()) or any(
            self.rows[k].auto_height for k in new_rows if k in self.rows
        ):
            super()._update_dimensions(new_rows)
            return
        width = sum(col.get_render_width(self) for col in self.columns.values())
        header = self.header_height if self.show_header else 0
        self.virtual_size = Size(width + self._row_label_column_width, len(self.rows) + header)

    def action_first_row(self) -> None:
        """Move the cursor to the first row."""
        if self.row_count:
            self.move_cursor(row=0, animate=False)

    def action_last_row(self) -> None:
        """Move the cursor to the last row."""
        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)

    # --- setup -----------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.add_column(" ", key="mark", width=2)
        self.add_column("task", key="task", width=self.TASK_MIN + 1)
        for col in self.COLUMNS:
            self.add_column(col.label, key=col.key, width=col.width + (0 if col.flex else 1))

    def on_resize(self) -> None:
        self.fit_columns()

    def column_widths(self, width: int) -> dict[str, int]:
        """Content widths of the columns for a panel ``width`` wide (0: hidden)."""
        task = max(self.TASK_MIN, min(self.TASK_MAX, self._max_key_len))
        gaps = {c.key: 0 if c.flex else 1 for c in self.COLUMNS}
        widths = {c.key: c.width for c in self.COLUMNS}
        flex = next((c for c in self.COLUMNS if c.flex), None)

        def left() -> int:
            used = 2 + task + 1 + sum(w + gaps[k] for k, w in widths.items()
                                      if flex is None or k != flex.key)
            return width - used

        for col in sorted((c for c in self.COLUMNS if c.drop), key=lambda c: -c.drop):
            if flex is None or left() >= flex.width:
                break
            widths[col.key] = 0
            gaps[col.key] = 0
        if flex is not None:
            short = flex.width - left()
            if short > 0:
                task = max(self.TASK_MIN, task - short)
            widths[flex.key] = max(4, left())
        return {"task": task, **widths}

    def fit_columns(self) -> None:
        """Give the columns the panel's width (on resize and when the scrollbar comes or goes)."""
        if not self.size.width or not self.columns:
            return
        scrollbar = self.row_count + 1 > self.size.height
        key = (self.size.width, scrollbar, min(self._max_key_len, self.TASK_MAX))
        if key == self._fitted:
            return
        self._fitted = key
        avail = self.size.width - (self.styles.scrollbar_size_vertical if scrollbar else 0)
        widths = self.column_widths(avail)
        gaps = {c.key: 0 if c.flex else 1 for c in self.COLUMNS}
        gaps["task"] = 1
        changed = False
        self.hidden_columns = set()
        for name, content in widths.items():
            column = self.columns.get(ColumnKey(name))
            if column is None:
                continue
            render = content + gaps.get(name, 1) if content else 0
            if not content:
                self.hidden_columns.add(name)
            if column.width != render:
                column.width = render
                changed = True
        if changed:
            self._update_count += 1
            self._require_update_dimensions = True
            self.refresh()

    # --- queries ---------------------------------------------------------------------------------
    @property
    def selected_key(self) -> str | None:
        """Key of the row highlighted now (read from the cursor), or None when empty."""
        return self._key_at(self.cursor_row)

    def _key_at(self, row: int) -> str | None:
        if row < 0 or row >= self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(Coordinate(row, 0))
        except Exception:  # noqa: BLE001 - row vanished meanwhile
            return None
        return None if row_key.value is None else str(row_key.value)

    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        if not self._holding:
            self._cursor_key = self._key_at(new.row)

    def _intended_cursor(self) -> str | None:
        key = self._cursor_key
        return key if key is not None and key in self._shown else self.selected_key

    def _restore_cursor(self, key: str | None, old_order: list[str], old_row: int) -> None:
        """Put the cursor back on ``key``; if it left, on its nearest surviving neighbour.

        The highlighted row keeps its place on screen when it can (the rows around it move).
        """
        if not self._order:
            self._cursor_key = None
            return
        shown = self._shown
        target = key if key is not None and key in shown else None
        if target is None and key is not None and old_order:
            i = min(max(old_row, 0), len(old_order) - 1)
            if old_order[i] != key:
                try:
                    i = old_order.index(key)
                except ValueError:
                    i = -1
            if i >= 0:
                below = next((k for k in old_order[i + 1:] if k in shown), None)
                target = below or next(
                    (k for k in reversed(old_order[:i]) if k in shown), None)
        if target is None:
            target = self._order[min(max(old_row, 0), len(self._order) - 1)]
        index = self._index_of(target)
        self._cursor_key = target
        if index is None or index == self.cursor_row:
            return
        screen_line = old_row - int(self.scroll_y)
        height = max(1, self.size.height - 1)
        self._holding = True
        try:
            self.move_cursor(row=index, animate=False, scroll=False)
        finally:
            self._holding = False
        if 0 <= screen_line < height:
            top = max(0, index - screen_line)
            self.call_after_refresh(self.scroll_to, y=top, animate=False)
        else:
            self.call_after_refresh(self._scroll_cursor_into_view)

    def view(self, key: str) -> V | None:
        """The latest view of a row (shown or filtered out)."""
        return self._views.get(key)

    @property
    def shown_keys(self) -> list[str]:
        """Keys shown, in table order."""
        return list(self._order)

    @property
    def shown_count(self) -> int:
        """Number of rows shown (after the filter), without copying the key list."""
        return len(self._order)

    @property
    def total(self) -> int:
        return len(self._views)

    def target_keys(self) -> list[str]:
        """Marked rows (still present) if any, else the selected row."""
        marked = [k for k in self._order if k in self.marked]
        if marked:
            return marked
        key = self.selected_key
        return [key] if key else []

    # --- user changes ----------------------------------------------------------------------------
    def set_filter(self, text: str) -> None:
        """Show only rows whose text contains every word of ``text`` (case-insensitive).

        Only the rows that appear or disappear change; search texts are cached per row.
        """
        self.filter_text = text.strip().lower()
        cursor_key, old_order, old_row = self._intended_cursor(), self._order, self.cursor_row
        self._holding = True
        try:
            views, shown = self._views, self._shown
            visible = [k for k in self._snapshot_rank if self._matches_key(k)]
            keep = set(visible)
            to_remove = [k for k in shown if k not in keep]
            to_add = [k for k in visible if k not in shown]
            if to_remove:
                self._remove_rows(to_remove)
            if to_add:
                self._add_rows([self._new_row(k, views[k]) for k in to_add])
                self._max_key_len = max(self._max_key_len, max(len(k) for k in to_add))
            self._reorder(force=True)
            self.fit_columns()
        finally:
            self._holding = False
        self._restore_cursor(cursor_key, old_order, old_row)
        self.tick()

    def set_sort(self, sort_id: str | None, reverse: bool | None = None) -> None:
        """Sort by a :attr:`SORTS` id (None: the snapshot's order); the same id twice reverses."""
        if sort_id is not None and sort_id not in self.SORTS:
            raise KeyError(sort_id)
        if reverse is None:
            reverse = (not self.sort_reverse) if sort_id == self.sort_id else False
        self.sort_id, self.sort_reverse = sort_id, reverse
        key, old_order, old_row = self._intended_cursor(), list(self._order), self.cursor_row
        self._holding = True
        try:
            self._reorder(force=True)
        finally:
            self._holding = False
        self._restore_cursor(key, old_order, old_row)

    def toggle_mark(self, key: str | None = None) -> None:
        """Mark or unmark a row (default: the selected one)."""
        key = key or self.selected_key
        if key is None:
            return
        if key in self.marked:
            self.marked.discard(key)
        else:
            self.marked.add(key)
        if key in self._shown:
            self.update_cell(key, "mark", MARK if key in self.marked else "")

    def clear_marks(self) -> None:
        for key in list(self.marked):
            self.marked.discard(key)
            if key in self._shown:
                self.update_cell(key, "mark", "")

    # --- applying snapshots ----------------------------------------------------------------------
    def apply(self, views: Sequence[V]) -> None:
        """Bring the table to ``views`` (snapshot order) by adding, updating and removing rows."""
        self._apply(views, force=False)

    def _matches(self, view: V) -> bool:
        return self._matches_key(view.key, view)  # type: ignore[attr-defined]

    def _matches_key(self, key: str, view: V | None = None) -> bool:
        if not self.filter_text:
            return True
        text = self._search.get(key)
        if text is None:
            text = self._search[key] = self.search_text(
                view if view is not None else self._views[key])
        return all(word in text for word in self.filter_text.split())

    def _new_row(self, key: str, view: V) -> tuple[str, list[CellValue]]:
        """A row's placeholder cells: its text is made by _compute_row_renderables when drawn."""
        state = self._rows.get(key)  # kept while filtered out: no re-formatting on the way back
        if state is None:
            self._rows[key] = _RowState(self, view)
        elif state.view is not view:
            state.view, state.static, state.lazy = view, None, None
        return key, self._blank_cells

    def _compute_row_renderables(self, row_index: int) -> RowRenderables:
        row_key = self._row_locations.get_key(row_index) if row_index >= 0 else None
        key = None if row_key is None else row_key.value
        state = self._rows.get(key) if key is not None else None
        if state is None:
            return super()._compute_row_renderables(row_index)
        cells: list[Any] = [Text(MARK if key in self.marked else ""), KeyText(str(key))]
        for is_lazy, i in self._layout:
            value = state.value(is_lazy, i)
            cells.append(Text(value, no_wrap=True) if isinstance(value, str) else value)
        return RowRenderables(None, cells)

    def get_cell(self, row_key: RowKey | str, column_key: ColumnKey | str) -> CellValue:
        """The cell's formatted value (rows are formatted when drawn; this formats on demand)."""
        key = row_key.value if isinstance(row_key, RowKey) else row_key
        column = column_key.value if isinstance(column_key, ColumnKey) else column_key
        state = self._rows.get(key) if key is not None else None
        if state is None:
            raise CellDoesNotExist(f"no row {row_key!r}")
        if column == "mark":
            return MARK if key in self.marked else ""
        if column == "task":
            return str(key)
        for col, (is_lazy, i) in zip(self.COLUMNS, self._layout, strict=True):
            if col.key == column:
                return state.value(is_lazy, i)
        raise CellDoesNotExist(f"no column {column_key!r}")

    def _apply(self, views: Sequence[V], *, force: bool) -> None:
        if views is self._last_views and not force:  # the engine's same tuple: nothing moved
            self.tick()
            return
        self._last_views = views
        cursor_key, old_order, old_row = self._intended_cursor(), self._order, self.cursor_row
        follow = (self.FOLLOW_HEAD and self.sort_id is None and old_row <= 0
                  and int(self.scroll_y) == 0)
        self._holding = True
        try:
            self._apply_rows(views, force=force)
        finally:
            self._holding = False
        if follow and self._order:
            cursor_key, old_row = self._order[0], 0
        self._restore_cursor(cursor_key, old_order, old_row)
        self.tick()

    def _apply_rows(self, views: Sequence[V], *, force: bool) -> None:
        old_views = self._views
        new_views: dict[str, V] = {}
        rank: dict[str, int] = {}
        to_add: list[str] = []
        to_remove: list[str] = []
        changed = False
        for i, view in enumerate(views):
            key = view.key  # type: ignore[attr-defined]
            new_views[key] = view
            rank[key] = i
            old = old_views.get(key)
            if not force and old is not None:
                if old is view:
                    continue
                state = self._rows.get(key)
                if state is not None:
                    state.view = view  # positions and times: the next tick compares them
                rev = getattr(view, "rev", 0)
                if rev and rev == getattr(old, "rev", 0):
                    continue
                sig = self.signature(view)
                if sig == self._sigs.get(key):
                    continue
            else:
                sig = self.signature(view)
            if self._sigs.get(key) != sig:
                self._search.pop(key, None)  # its filter text may have changed
                state = self._rows.get(key)
                if state is not None and key not in self._shown:
                    state.view, state.static = view, None  # formatted again if shown again
            shown = key in self._shown
            visible = self._matches(view)
            if shown and not visible:
                to_remove.append(key)
            elif shown:
                if sig != self._sigs.get(key):
                    self._update_static(key, view)
                    changed = True
            elif visible:
                to_add.append(key)
            self._sigs[key] = sig
        for key in self._shown:
            if key not in new_views:
                to_remove.append(key)
        for key in old_views.keys() - new_views.keys():
            self._sigs.pop(key, None)
            self._search.pop(key, None)
            self._rows.pop(key, None)
            self.marked.discard(key)
        self._views = new_views
        self._snapshot_rank = rank
        if to_remove:
            self._remove_rows(to_remove)
        rows = [self._new_row(key, new_views[key]) for key in to_add]
        if rows:
            self._add_rows(rows)
        if to_add:
            self._max_key_len = max(self._max_key_len, max(len(k) for k in to_add))
        self._reorder(force=bool(to_add or to_remove or changed or force))
        self.fit_columns()

    def _add_rows(self, rows: list[tuple[str, list[CellValue]]]) -> None:
        """Append rows; many at once skip DataTable.add_row's per-row overhead (~75 us each)."""
        if len(rows) <= 50 or not hasattr(self, "_row_locations"):
            for key, cells in rows:
                self._rowkeys[key] = self.add_row(*cells, key=key)
                self._shown.add(key)
                self._order.append(key)
            return
        columns = [col.key for col in self.ordered_columns]
        start = self.row_count
        for offset, (key, cells) in enumerate(rows):
            row_key = RowKey(key)
            if row_key in self._row_locations:
                raise ValueError(f"duplicate row key {key!r}")
            self._row_locations[row_key] = start + offset
            self._data[row_key] = dict(zip(columns, cells, strict=True))
            self.rows[row_key] = Row(row_key, 1)
            self._new_rows.add(row_key)
            self._rowkeys[key] = row_key
            self._shown.add(key)
            self._order.append(key)
        self._require_update_dimensions = True
        self._update_count += 1
        self.cursor_coordinate = self.cursor_coordinate
        if start == 0 and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self.check_idle()
        self.refresh()

    def _update_static(self, key: str, view: V) -> None:
        state = self._rows.get(key)
        if state is not None:
            state.view, state.static, state.lazy = view, None, None
            self._dirty = True

    def _invalidate(self) -> None:
        """Cells changed in place: DataTable's render caches must not show the old text."""
        self._dirty = False
        self._cell_render_cache.clear()
        self._row_renderable_cache.clear()
        self._row_render_cache.clear()
        self._line_cache.clear()
        self.refresh()

    def _index_of(self, key: str) -> int | None:
        try:
            return self.get_row_index(key)
        except Exception:  # noqa: BLE001 - row vanished meanwhile
            return None

    def _desired_order(self) -> list[str]:
        now = self.clock()
        rank = self._snapshot_rank
        shown = self._shown
        if self.sort_id is None:
            return [k for k in rank if k in shown]
        spec = self.SORTS[self.sort_id]
        views = self._views

        def sort_key(key: str) -> tuple[Any, int]:
            value = spec.value(views[key], now)
            return (value, rank.get(key, 0))

        return sorted(shown, key=sort_key, reverse=self.sort_reverse)

    def _reorder(self, *, force: bool) -> None:
        if self.sort_id is not None and not force:
            return
        desired = self._desired_order()
        if desired == self._order:
            return
        from textual._two_way_dict import TwoWayDict

        rowkeys = self._rowkeys
        self._row_locations = TwoWayDict(
            {rowkeys.get(k) or RowKey(k): i for i, k in enumerate(desired)})
        self._update_count += 1
        self.refresh()
        self._order = desired

    def _remove_rows(self, keys: list[str]) -> None:
        drop = set(keys)
        if len(drop) <= 8 or not hasattr(self, "_row_locations"):
            for key in drop:
                self.remove_row(key)
        else:
            self._bulk_remove(drop)
        self._shown -= drop
        self._order = [k for k in self._order if k not in drop]
        for key in drop:
            self._rowkeys.pop(key, None)

    def _bulk_remove(self, drop: set[str]) -> None:
        """Remove many rows in one pass (DataTable.remove_row is O(rows) per call)."""
        from textual._two_way_dict import TwoWayDict

        rowkeys = self._rowkeys
        remaining = [k for k in self._order if k not in drop]
        for key in drop:
            row_key = rowkeys.get(key) or RowKey(key)
            self.rows.pop(row_key, None)
            self._data.pop(row_key, None)
            self._new_rows.discard(row_key)
        if self._updated_cells:
            self._updated_cells = {
                c for c in self._updated_cells if str(c.row_key.value) not in drop
            }
        self._row_locations = TwoWayDict(
            {rowkeys.get(k) or RowKey(k): i for i, k in enumerate(remaining)}
        )
        self._require_update_dimensions = True
        self._update_count += 1
        self.cursor_coordinate = self.cursor_coordinate
        self.check_idle()
        self.refresh()

    # --- clock ticks -----------------------------------------------------------------------------
    def visible_range(self) -> range:
        """Indexes of the rows on screen (header excluded)."""
        top = int(self.scroll_y)
        height = max(1, self.size.height - 1) if self.size.height else 50
        return range(top, min(len(self._order), top + height + 1))

    def tick(self, now: float | None = None) -> None:
        """Refresh lazy cells (ages, positions) of the visible rows where their text changed."""
        if self._lazy_cols:
            now = self.clock() if now is None else now
            order, rows = self._order, self._rows
            for index in self.visible_range():
                state = rows.get(order[index])
                if state is None:
                    continue
                cells = self.lazy_cells(state.view, now)
                if cells != state.lazy:
                    state.lazy = cells
                    self._dirty = True
        if self._dirty:
            self._invalidate()
