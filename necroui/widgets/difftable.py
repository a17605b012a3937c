"""The dashboard's task tables: a :class:`RowModel` drawn by a line-API ``ScrollView``.

The live-monitor pattern (STYLE.md): never clear and rebuild. :meth:`DiffTable.apply` hands the
snapshot's views to the model, which diffs them by key; the widget then draws only the lines on
screen (each row formatted when first drawn, its line cached until its cells change). The cursor
stays on its task (by key) across refreshes, re-sorts and filters. Only Textual's public API is
used: ``ScrollView``, ``render_line``, component classes, bindings and messages.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from .columns import Column, fit_columns, header_line, row_line
from .rowmodel import CellValue, Change, RowModel, SortSpec

V = TypeVar("V")

MARK = "●"

__all__ = ["MARK", "CellValue", "Column", "DiffTable", "SortSpec"]


class DiffTable(ScrollView, Generic[V], can_focus=True):
    """Base of the queue, running and finished tables.

    Subclasses define :attr:`COLUMNS`, :attr:`SORTS` and the row hooks. Every table has a
    ``mark`` column (space marks rows) and a ``task`` column holding the row key.
    """

    DEFAULT_CSS = """
    DiffTable {
        background: $surface;
        color: $foreground;
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        &:focus {
            background-tint: $foreground 5%;
            & > .difftable--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
        & > .difftable--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .difftable--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .difftable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"difftable--header", "difftable--cursor"}

    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    # Fixed widths, fitted to the panel on resize: the task column is as wide as the longest key
    # up to TASK_MAX (longer keys are cut in the middle, TASK_MIN when space is short), the flex
    # column takes what is left.
    TASK_MIN: ClassVar[int] = 10
    TASK_MAX: ClassVar[int] = 24
    SORTS: ClassVar[dict[str, SortSpec]] = {}  # sort id ("skill", "priority", ...) -> spec
    # Newest-first tables: while the cursor is on the first row (and no sort is set), new rows
    # arriving on top take the cursor and stay visible; a cursor moved down keeps its task.
    FOLLOW_HEAD: ClassVar[bool] = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Row up (table)", id="row_up", show=False),
        Binding("down,j", "cursor(1)", "Row down (table)", id="row_down", show=False),
        Binding("pageup", "page(-1)", "Page up (table)", id="page_up", show=False),
        Binding("pagedown", "page(1)", "Page down (table)", id="page_down", show=False),
        Binding("home,ctrl+home", "first_row", "First row (table)", id="first_row", show=False),
        Binding("end,ctrl+end,G", "last_row", "Last row (table)", id="last_row", show=False),
        Binding("enter", "select", "Detail", id="select_row", show=False),
    ]

    class RowSelected(Message):
        """Enter (or a click on the highlighted row) on a row: ``key`` is its task."""

        def __init__(self, table: DiffTable[Any], key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> DiffTable[Any]:
            return self.table

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self._auto = any(c.auto for c in self.COLUMNS)
        self.model: RowModel[V] = RowModel(self, self.SORTS, clock,
                                           self.row_flags if self._auto else None)
        self.cursor_row = 0
        # The task the cursor is on, kept by KEY across refreshes, re-sorts and filters (the
        # row index of a task changes all the time in a live queue).
        self._cursor_key: str | None = None
        self._widths: list[int] = []  # render width of each column (mark, task, COLUMNS)
        self._fitted: tuple[int, bool, int, frozenset[str]] | None = None
        self.hidden_columns: set[str] = set()
        self._layout = self._column_layout()
        self._lines: dict[str, tuple[object, object, bool, int, Strip]] = {}
        self._epoch = 0  # widths or styles changed: cached lines are stale
        self._styles: tuple[Style, Style, Style] | None = None

    def _column_layout(self) -> list[tuple[bool, int]]:
        counts = [0, 0]
        layout = []
        for col in self.COLUMNS:
            layout.append((col.lazy, counts[col.lazy]))
            counts[col.lazy] += 1
        return layout

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

    def row_flags(self, view: V) -> frozenset[str]:
        """The ``auto`` columns this row has something for (asked only when the row changes)."""
        return frozenset()

    def view_key(self, view: V) -> str:
        key: str = cast(Any, view).key  # every view's key is a str: asked per row per apply
        return key

    # --- queries ---------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self.model.order)

    @property
    def selected_key(self) -> str | None:
        """Key of the row highlighted now, or None when empty."""
        return self.model.key_at(self.cursor_row)

    def get_row_index(self, key: str) -> int:
        """Row of a shown task (KeyError when it is not shown)."""
        row = self.model.row_of(key)
        if row is None:
            raise KeyError(key)
        return row

    def view(self, key: str) -> V | None:
        """The view of a row (shown or filtered out)."""
        return self.model.views.get(key)

    @property
    def shown_keys(self) -> list[str]:
        """Keys shown, in table order."""
        return list(self.model.order)

    @property
    def shown_count(self) -> int:
        return len(self.model.order)

    @property
    def total(self) -> int:
        return len(self.model.views)

    @property
    def filter_text(self) -> str:
        return self.model.filter_text

    @property
    def sort_id(self) -> str | None:
        return self.model.sort_id

    @property
    def sort_reverse(self) -> bool:
        return self.model.sort_reverse

    @property
    def marked(self) -> set[str]:
        return self.model.marked

    def target_keys(self) -> list[str]:
        """Marked rows (still present) if any, else the selected row."""
        marked = [k for k in self.model.order if k in self.model.marked]
        if marked:
            return marked
        key = self.selected_key
        return [key] if key else []

    def get_cell(self, key: str, column: str) -> CellValue:
        """A cell's formatted value (formatted now if the row was not drawn yet)."""
        if key not in self.model.cells:
            raise KeyError(key)
        if column == "mark":
            return MARK if key in self.model.marked else ""
        if column == "task":
            return key
        for col, (is_lazy, i) in zip(self.COLUMNS, self._layout, strict=True):
            if col.key == column:
                cells = self.model.lazy(key) if is_lazy else self.model.static(key)
                return cells[i]
        raise KeyError(column)

    @property
    def column_labels(self) -> list[str]:
        return [" ", "task", *(c.label for c in self.COLUMNS)]

    def render_widths(self) -> dict[str, int]:
        """The width each column takes on screen now (0: hidden), its gap included."""
        keys = ["mark", "task", *(c.key for c in self.COLUMNS)]
        return dict(zip(keys, self._widths, strict=False))

    # --- user changes ----------------------------------------------------------------------------
    def set_filter(self, text: str) -> None:
        """Show only rows whose text contains every word of ``text`` (case-insensitive)."""
        self._changed(lambda: self.model.set_filter(text))

    def set_only(self, only: Callable[[Any], bool] | None) -> None:
        """Show only rows whose view passes ``only`` (None: every row)."""
        self._changed(lambda: self.model.set_only(only))

    def set_sort(self, sort_id: str | None, reverse: bool | None = None) -> None:
        """Sort by a :attr:`SORTS` id (None: the snapshot's order); the same id twice reverses."""
        if sort_id is not None and sort_id not in self.SORTS:
            raise KeyError(sort_id)
        self._changed(lambda: self.model.set_sort(sort_id, reverse))

    def toggle_mark(self, key: str | None = None) -> None:
        """Mark or unmark a row (default: the selected one)."""
        key = key or self.selected_key
        if key is not None:
            self.model.toggle_mark(key)
            self._refresh_key(key)

    def clear_marks(self) -> None:
        marked = list(self.model.marked)
        self.model.marked.clear()
        for key in marked:
            self._refresh_key(key)

    # --- applying snapshots ----------------------------------------------------------------------
    def apply(self, views: Sequence[V]) -> None:
        """Bring the table to ``views`` (snapshot order): rows arrive, change and leave by key."""
        follow = (self.FOLLOW_HEAD and self.model.sort_id is None and self.cursor_row <= 0
                  and int(self.scroll_y) == 0)
        in_use = self.model.in_use
        self._changed(lambda: self.model.apply(views), follow_head=follow)
        if self.model.in_use != in_use:  # an auto column comes or goes (tokens, cost)
            self._fit()

    def _changed(self, change: Callable[[], Change], *, follow_head: bool = False) -> None:
        key = self._cursor_key if self._cursor_key in self.model.index else self.selected_key
        old_order, old_row = self.model.order, self.cursor_row
        result = change()
        if follow_head and self.model.order:
            key, old_row = self.model.order[0], 0
        if result.any:
            self._fit()
            self.refresh()
        self._restore_cursor(key, old_order, old_row)
        self.tick()

    def _restore_cursor(self, key: str | None, old_order: Sequence[str], old_row: int) -> None:
        """The cursor back on ``key`` (or its nearest neighbour); the highlighted row keeps its
        place on screen when it can (the rows around it move)."""
        target = self.model.follow_key(key, old_order, old_row)
        self._cursor_key = target
        if target is None:
            self.cursor_row = 0
            return
        index = self.model.index[target]
        if index == self.cursor_row:
            return
        screen_line = old_row - int(self.scroll_y)
        self._set_row(index)
        if 0 <= screen_line < self._page():
            self._scroll_after(max(0, index - screen_line))
        else:
            self._scroll_into_view()

    # --- cursor ----------------------------------------------------------------------------------
    def move_cursor(self, *, row: int, animate: bool = False, scroll: bool = True) -> None:
        """Put the cursor on ``row`` (clamped), by the user: the cursor follows its task."""
        if not self.model.order:
            return
        row = min(max(row, 0), len(self.model.order) - 1)
        self._set_row(row)
        self._cursor_key = self.model.order[row]
        if scroll:
            self._scroll_into_view()

    def _set_row(self, row: int) -> None:
        old, self.cursor_row = self.cursor_row, row
        if old != row:
            self._refresh_row(old)
            self._refresh_row(row)

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_into_view(self) -> None:
        row, top, page = self.cursor_row, int(self.scroll_y), self._page()
        if row < top:
            self._scroll_after(row)
        elif row >= top + page:
            self._scroll_after(row - page + 1)

    def _scroll_after(self, y: int) -> None:
        if y == int(self.scroll_y):
            return
        if y <= self.max_scroll_y:
            self.scroll_to(y=y, animate=False, immediate=True)
        else:  # the virtual size grew in this refresh: scroll once the layout has it
            self.call_after_refresh(self.scroll_to, y=y, animate=False)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step)

    def action_page(self, step: int) -> None:
        page = self._page()
        self.move_cursor(row=self.cursor_row + step * page, scroll=False)
        self._scroll_after(max(0, min(int(self.scroll_y) + step * page, self.cursor_row)))
        self._scroll_into_view()

    def action_first_row(self) -> None:
        """Move the cursor to the first row."""
        self.move_cursor(row=0)

    def action_last_row(self) -> None:
        """Move the cursor to the last row."""
        self.move_cursor(row=len(self.model.order) - 1)

    def action_select(self) -> None:
        key = self.selected_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        row = int(self.scroll_y) + offset.y - 1
        if row >= len(self.model.order):
            return
        if row == self.cursor_row or event.chain >= 2:
            self.move_cursor(row=row)
            self.action_select()
        else:
            self.move_cursor(row=row)

    def on_focus(self) -> None:
        self._restyle()

    def on_blur(self) -> None:
        self._restyle()

    def _restyle(self) -> None:
        self._epoch += 1
        self.refresh()

    # --- layout ----------------------------------------------------------------------------------
    def on_resize(self) -> None:
        self._fit()

    def column_widths(self, width: int) -> dict[str, int]:
        """Content widths of the columns for a panel ``width`` wide (0: hidden)."""
        task = max(self.TASK_MIN, min(self.TASK_MAX, self.model.max_key_len))
        return fit_columns(self.COLUMNS, width, task, self.TASK_MIN, self.model.in_use)

    def _fit(self) -> None:
        """Give the columns the panel's width (on resize and when the scrollbar comes or goes)."""
        rows = len(self.model.order)
        width = self.size.width
        scrollbar = rows + 1 > self.size.height
        key = (width, scrollbar, min(self.model.max_key_len, self.TASK_MAX),
               self.model.in_use)
        if key != self._fitted and width:
            self._fitted = key
            avail = width - (self.styles.scrollbar_size_vertical if scrollbar else 0)
            content = self.column_widths(avail)
            widths = [2, content["task"] + 1]
            self.hidden_columns = set()
            for col in self.COLUMNS:
                w = content[col.key]
                if not w:
                    self.hidden_columns.add(col.key)
                widths.append(w + (0 if col.flex else 1) if w else 0)
            if widths != self._widths:
                self._widths = widths
                self._epoch += 1
                self.refresh()
        size = Size(sum(self._widths), rows + 1)
        if self.virtual_size != size:
            self.virtual_size = size

    # --- drawing ---------------------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        self._styles = (
            self.rich_style,
            self.get_component_rich_style("difftable--header"),
            self.get_component_rich_style("difftable--cursor"),
        )
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base, header, cursor = self._styles or (Style(), Style(), Style())
        if y == 0:
            return self._header_strip(base + header, width)
        row = int(self.scroll_y) + y - 1
        key = self.model.key_at(row)
        if key is None:
            return Strip.blank(width, base)
        if row == self.cursor_row:
            return self._cursor_strip(key, base, cursor, width)
        return self._row_strip(key, base, width)

    def _cursor_strip(self, key: str, base: Style, cursor: Style, width: int) -> Strip:
        strip = self._row_strip(key, base, width)
        return Strip(Segment.apply_style(strip, post_style=cursor), strip.cell_length)

    def _header_strip(self, style: Style, width: int) -> Strip:
        return self._strip(header_line(self.column_labels, self._widths), style, width)

    def _row_strip(self, key: str, base: Style, width: int) -> Strip:
        model = self.model
        static, lazy = model.static(key), model.lazy(key)
        marked = key in model.marked
        cached = self._lines.get(key)
        if (cached is not None and cached[0] is static and cached[1] is lazy
                and cached[2] == marked and cached[3] == self._epoch):
            return cached[4]
        widths = self._widths or [2, self.TASK_MIN + 1] + [c.width + 1 for c in self.COLUMNS]
        line = row_line(MARK if marked else "", key, widths, self._layout, static, lazy)
        strip = self._strip(line, base, width)
        if len(self._lines) > 4 * max(50, self.size.height):
            self._lines.clear()  # only lines on screen are worth keeping
        self._lines[key] = (static, lazy, marked, self._epoch, strip)
        return strip

    def _strip(self, line: Text, style: Style, width: int) -> Strip:
        segments = list(line.render(self.app.console))
        strip = Strip(Segment.apply_style(segments, style), line.cell_len)
        return strip.crop_extend(0, width, style)

    def _refresh_row(self, row: int) -> None:
        y = row - int(self.scroll_y) + 1
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def _refresh_key(self, key: str) -> None:
        row = self.model.row_of(key)
        if row is not None:
            self._refresh_row(row)

    # --- clock ticks -----------------------------------------------------------------------------
    def visible_range(self) -> range:
        """Indexes of the rows on screen (header excluded)."""
        top = int(self.scroll_y)
        height = max(1, self.size.height - 1) if self.size.height else 50
        return range(top, min(len(self.model.order), top + height + 1))

    def tick(self, now: float | None = None) -> None:
        """Refresh lazy cells (ages, positions) of the visible rows where their text changed."""
        if not any(c.lazy for c in self.COLUMNS):
            return
        order = self.model.order
        keys = [order[i] for i in self.visible_range()]
        changed = self.model.tick(keys, self.clock() if now is None else now)
        for key in changed:
            self._refresh_key(key)
