"""The columns of the dashboard's task tables and how they share a panel's width."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from .format import KeyText, middle_ellipsis
from .rowmodel import CellValue


@dataclass(frozen=True)
class Column:
    """One column: key, header label, content width and whether it ticks with the clock.

    ``flex``: the column takes the width its panel has left (the last column: pending reason,
    last error); ``width`` is then its minimum before other columns are dropped. ``drop``: a
    column that may be hidden when the panel is narrow, the highest number first; the last one
    (``drop=1``) stays while the flex column keeps its ``least`` width. ``auto``: a
    column shown only while some row has something for it (the row model's ``in_use``: tokens
    and cost only when a coding agent reported them).
    """

    key: str
    label: str
    width: int = 8
    lazy: bool = False  # depends on the clock or on the row's position: refreshed when visible
    flex: bool = False
    drop: int = 0
    auto: bool = False
    least: int = 0  # flex column: the width it gives up to keep the ``drop=1`` column


def fit_columns(columns: Sequence[Column], width: int, task: int, task_min: int,
                in_use: frozenset[str] = frozenset()) -> dict[str, int]:
    """Content widths for a panel ``width`` wide (0: hidden), ``task`` the key column's wish.

    ``auto`` columns not in ``in_use`` take nothing; then ``drop`` columns go (highest first)
    until the flex column has its minimum; then the task column shrinks down to ``task_min``.
    """
    shown = {c.key: not c.auto or c.key in in_use for c in columns}
    gaps = {c.key: 0 if c.flex or not shown[c.key] else 1 for c in columns}
    widths = {c.key: c.width if shown[c.key] else 0 for c in columns}
    flex = next((c for c in columns if c.flex), None)

    def left() -> int:
        used = 2 + task + 1 + sum(w + gaps[k] for k, w in widths.items()
                                  if flex is None or k != flex.key)
        return width - used

    for col in sorted((c for c in columns if c.drop), key=lambda c: -c.drop):
        if flex is None or left() >= flex.width:
            break
        if col.drop == 1 and flex.least and left() >= flex.least:
            break  # the last to go stays: the flex column makes do with its least
        widths[col.key] = 0
        gaps[col.key] = 0
    if flex is not None:
        short = flex.width - left()
        if short > 0:
            task = max(task_min, task - short)
        widths[flex.key] = max(4, left())
    return {"task": task, **widths}


def header_line(labels: Sequence[str], widths: Sequence[int]) -> Text:
    """The header row: each label cut to its column's width (hidden columns left out)."""
    line = Text(no_wrap=True, end="")
    for label, w in zip(labels, widths, strict=False):
        if w:
            line.append(label[:w].ljust(w))
    return line


def row_line(mark: str, key: str, widths: Sequence[int], layout: Sequence[tuple[bool, int]],
             static: Sequence[CellValue], lazy: Sequence[CellValue]) -> Text:
    """One row: mark, key and cells (``layout``: each column's (is lazy, index)) at ``widths``."""
    line = Text(no_wrap=True, end="")
    line.append(mark.ljust(widths[0]))
    if widths[1]:
        line.append(middle_ellipsis(key, widths[1]).ljust(widths[1]))
    for (is_lazy, i), w in zip(layout, widths[2:], strict=False):
        if w:  # a text may take its gap too (as wide as the column, cut there)
            _append_cell(line, (lazy if is_lazy else static)[i], w)
    return line

def _append_cell(line: Text, value: CellValue, width: int) -> None:
    """One cell cut to ``width`` columns (an ellipsis where its Text asks), padded to it."""
    if isinstance(value, KeyText):
        line.append(middle_ellipsis(value.key, width).ljust(width))
        return
    if isinstance(value, str):
        line.append(value[:width].ljust(width))
        return
    cell = value.copy()
    cell.truncate(width, overflow=value.overflow or "crop")
    cell.pad_right(width - cell.cell_len)
    line.append_text(cell)
