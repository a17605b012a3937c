"""A full-screen text view for logs, prompts and diffs: follow, wrap, search (line API).

:class:`LogLines` holds the lines (bounded) and finds matches; :class:`LogView` draws only the
lines on screen, wrapped or cut at the width, with the search term highlighted, and follows
the end while ``follow`` is on (scrolling up turns it off, End turns it on again).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

MAX_LINES = 50_000

_DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"),
                ("diff ", "bold yellow"))


class LogLines:
    """The lines of one text (a log grows at its end); the oldest go past :data:`MAX_LINES`."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self.lines: list[str] = []
        self.dropped = 0  # lines gone from the top

    def clear(self) -> None:
        self.lines = []
        self.dropped = 0

    def extend(self, lines: Iterable[str]) -> None:
        self.lines.extend(line.expandtabs(4) for line in lines)
        extra = len(self.lines) - self.max_lines
        if extra > 0:
            del self.lines[:extra]
            self.dropped += extra

    def find(self, term: str, start: int, step: int = 1) -> int | None:
        """Index of the next line from ``start`` (wrapping around) containing ``term``
        (case-insensitive), going forwards (``step`` 1) or backwards (-1)."""
        if not term or not self.lines:
            return None
        needle = term.lower()
        n = len(self.lines)
        for i in range(n):
            index = (start + step * i) % n
            if needle in self.lines[index].lower():
                return index
        return None


class LogView(ScrollView, can_focus=True):
    """Draws a :class:`LogLines`; rows are lines, or pieces of lines when wrapping."""

    DEFAULT_CSS = """
    LogView {
        height: 1fr;
        background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "scroll_rows(-1)", "Up", show=False),
        Binding("down,j", "scroll_rows(1)", "Down", show=False),
        Binding("pageup", "scroll_rows(-20)", "Page up", show=False),
        Binding("pagedown", "scroll_rows(20)", "Page down", show=False),
        Binding("home", "top", "Top", show=False),
        Binding("end,G", "bottom", "End (follow)", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = LogLines()
        self.wrap = False
        self.follow = True
        self.term = ""
        self.diff_colours = False
        self.current: int | None = None  # the line of the match last jumped to
        self._rows: list[tuple[int, int]] = []  # (line, start column) per row when wrapping
        self._wrapped_for: tuple[int, int] | None = None

    # --- content ---------------------------------------------------------------------------------
    def set_lines(self, lines: Iterable[str], *, diff: bool = False) -> None:
        self.text.clear()
        self.diff_colours = diff
        self.current = None
        self.append(lines)

    def append(self, lines: Iterable[str]) -> None:
        self.text.extend(lines)
        self._layout()
        if self.follow:  # once the layout has the new height
            self.call_after_refresh(self._to_end)

    def _to_end(self) -> None:
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def set_wrap(self, wrap: bool) -> None:
        top = self._line_at(int(self.scroll_y))
        self.wrap = wrap
        self._layout()
        self._scroll_to_line(top)

    def set_term(self, term: str) -> None:
        self.term = term
        self.refresh()

    def jump(self, step: int = 1) -> bool:
        """To the next (or previous) line with the search term; False when there is none."""
        if self.current is not None:
            start = self.current + step
        else:
            start = self._line_at(int(self.scroll_y)) + (0 if step > 0 else -1)
        found = self.text.find(self.term, start, step)
        if found is None:
            return False
        self.current = found
        self.follow = False
        self._scroll_to_line(found, center=True)
        self.refresh()
        return True

    # --- geometry --------------------------------------------------------------------------------
    def _width(self) -> int:
        return max(10, self.scrollable_content_region.width or self.size.width or 80)

    def _layout(self) -> None:
        lines = self.text.lines
        if self.wrap:
            width = self._width()
            rows: list[tuple[int, int]] = []
            for i, line in enumerate(lines):
                rows.extend((i, start) for start in range(0, max(1, len(line)), width))
            self._rows = rows
            self._wrapped_for = (width, len(lines))
            size = Size(width, len(rows))
        else:
            self._rows = []
            size = Size(max((len(s) for s in lines[-2000:]), default=0), len(lines))
        if self.virtual_size != size:
            self.virtual_size = size
        self.refresh()

    def on_resize(self) -> None:
        if self.wrap:
            self._layout()

    def _line_at(self, row: int) -> int:
        if self.wrap and self._rows:
            return self._rows[min(max(row, 0), len(self._rows) - 1)][0]
        return row

    def _row_of(self, line: int) -> int:
        if not self.wrap:
            return line
        lo, hi = 0, len(self._rows)
        while lo < hi:  # the first row of the line
            mid = (lo + hi) // 2
            if self._rows[mid][0] < line:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _scroll_to_line(self, line: int, center: bool = False) -> None:
        row = self._row_of(line)
        if center:
            row = max(0, row - self.scrollable_content_region.height // 2)
        self.scroll_to(y=row, animate=False, immediate=True)

    # --- keys ------------------------------------------------------------------------------------
    def action_scroll_rows(self, step: int) -> None:
        self.follow = step > 0 and self.scroll_y + step >= self.max_scroll_y
        self.scroll_to(y=self.scroll_y + step, animate=False, immediate=True)

    def action_top(self) -> None:
        self.follow = False
        self.scroll_to(y=0, animate=False, immediate=True)

    def action_bottom(self) -> None:
        self.follow = True
        self._to_end()

    # --- drawing ---------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self._width()
        row = int(self.scroll_y) + y
        base = self.rich_style
        if self.wrap:
            if row >= len(self._rows):
                return Strip.blank(width, base)
            index, start = self._rows[row]
            piece = self.text.lines[index][start:start + width]
        else:
            if row >= len(self.text.lines):
                return Strip.blank(width, base)
            index = row
            left = int(self.scroll_x)
            piece = self.text.lines[index][left:left + width]
        text = Text(piece, no_wrap=True, end="")
        if self.diff_colours:
            line = self.text.lines[index]
            for prefix, style in _DIFF_STYLES:
                if line.startswith(prefix):
                    text.stylize(style)
                    break
        if self.term:
            style = "bold black on yellow" if index == self.current else "black on dark_goldenrod"
            text.highlight_regex(re.compile(re.escape(self.term), re.I), style)
        segments = list(text.render(self.app.console))
        strip = Strip(segments, text.cell_len).apply_style(base)
        return strip.crop_extend(0, width, Style.null() + base)
