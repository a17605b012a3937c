"""The row model behind the dashboard's task tables: rows by key, filter, sort, marks, cursor.

Pure Python (no Textual): a snapshot's views come in, :meth:`RowModel.apply` works out which
rows arrived, changed and left (by key, with each view's ``rev`` or a cheap signature), and the
order shown (snapshot order, or a sort, after the filter). Cells are formatted lazily, only for
rows that are drawn, and cached until the row's view changes. The widget
(:class:`~necroui.widgets.difftable.DiffTable`) draws ``order`` and keeps the cursor by key with
:meth:`RowModel.follow_key`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from rich.text import Text

from .format import KeyText

V = TypeVar("V")
V_contra = TypeVar("V_contra", contravariant=True)
CellValue = str | Text | KeyText


@dataclass(frozen=True)
class SortSpec:
    """A sort the user can pick with a shift-letter: its name and the value it sorts by."""

    name: str
    value: Callable[[Any, float], Any]  # (view, now) -> sortable value
    by_key: bool = False  # the value depends on the row's key only (kept while the row is)


class RowSpec(Protocol[V_contra]):
    """What the model asks of its table: how a row is keyed, compared, formatted, searched."""

    def view_key(self, view: V_contra) -> str: ...
    def signature(self, view: V_contra) -> Hashable: ...
    def static_cells(self, view: V_contra) -> tuple[CellValue, ...]: ...
    def lazy_cells(self, view: V_contra, now: float) -> tuple[CellValue, ...]: ...
    def search_text(self, view: V_contra) -> str: ...


class RowCells:
    """One row's view and its formatted cells (static ones until the view changes)."""

    __slots__ = ("lazy", "static", "view")

    def __init__(self, view: Any) -> None:
        self.view = view
        self.static: tuple[CellValue, ...] | None = None
        self.lazy: tuple[CellValue, ...] | None = None


@dataclass(frozen=True)
class Change:
    """What one :meth:`RowModel.apply` (or filter, or sort) did to the rows shown."""

    added: int = 0
    removed: int = 0
    updated: int = 0  # shown rows whose cells must be drawn again
    reordered: bool = False

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.updated or self.reordered)


class RowModel(Generic[V]):
    """Rows keyed by task key, in the order shown; diff-updated from snapshot sequences."""

    def __init__(self, spec: RowSpec[V], sorts: dict[str, SortSpec],
                 clock: Callable[[], float],
                 flags: Callable[[V], frozenset[str]] | None = None) -> None:
        self.spec = spec
        # ``flags``: what a row has to show (e.g. "tokens"), asked only when the row changes;
        # :attr:`in_use` is the union over the rows, kept by counts (O(changes) per apply)
        self.flags = flags
        self.in_use: frozenset[str] = frozenset()
        self._flags: dict[str, frozenset[str]] = {}
        self._flag_counts: dict[str, int] = {}
        self.sorts = sorts
        self.clock = clock
        self.views: dict[str, V] = {}
        self.rank: dict[str, int] = {}  # key -> position in the snapshot's sequence
        self.cells: dict[str, RowCells] = {}
        self.order: list[str] = []  # keys shown, in table order
        self.index: dict[str, int] = {}  # key shown -> its row
        self.marked: set[str] = set()
        self.filter_text = ""
        self.only: Callable[[Any], bool] | None = None  # a view filter besides the words
        self.sort_id: str | None = None
        self.sort_reverse = False
        self.max_key_len = 0
        self._sigs: dict[str, Hashable] = {}
        self._search: dict[str, str] = {}
        self._last: Sequence[V] | None = None
        # the sort's value of each row (dropped when the row changes), and which sort they are
        self._sort_values: dict[str, Any] = {}
        self._values_of: str | None = None
        self._sorted_by: tuple[str, bool] | None = None  # the sort ``order`` is in

    # --- queries ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.order)

    def key_at(self, row: int) -> str | None:
        return self.order[row] if 0 <= row < len(self.order) else None

    def row_of(self, key: str) -> int | None:
        return self.index.get(key)

    def static(self, key: str) -> tuple[CellValue, ...]:
        """The row's static cells, formatted now if not cached."""
        row = self.cells[key]
        if row.static is None:
            row.static = self.spec.static_cells(row.view)
        return row.static

    def lazy(self, key: str, now: float | None = None) -> tuple[CellValue, ...]:
        """The row's clock-dependent cells (cached until :meth:`tick` finds them changed)."""
        row = self.cells[key]
        if row.lazy is None:
            row.lazy = self.spec.lazy_cells(row.view, self.clock() if now is None else now)
        return row.lazy

    def tick(self, keys: Sequence[str], now: float) -> list[str]:
        """Re-format the lazy cells of ``keys``; the keys whose text changed."""
        changed: list[str] = []
        for key in keys:
            row = self.cells.get(key)
            if row is None:
                continue
            cells = self.spec.lazy_cells(row.view, now)
            if cells != row.lazy:
                row.lazy = cells
                changed.append(key)
        return changed

    def matches(self, key: str) -> bool:
        if self.only is not None and not self.only(self.views[key]):
            return False
        if not self.filter_text:
            return True
        text = self._search.get(key)
        if text is None:
            text = self._search[key] = self.spec.search_text(self.views[key])
        return all(word in text for word in self.filter_text.split())

    # --- changes ---------------------------------------------------------------------------------
    def apply(self, views: Sequence[V], *, force: bool = False) -> Change:
        """Bring the rows to ``views`` (snapshot order): new rows, changed ones, gone ones.

        An unchanged view (the same object, the same ``rev`` or an equal signature) costs a
        dict lookup; only changed rows lose their formatted cells.
        """
        if views is self._last and not force:
            return Change()
        self._last = views
        old_views, sigs, cells, spec = self.views, self._sigs, self.cells, self.spec
        # keys, rows by key and ranks at C speed; the loop below sees only the views that are
        # not the very objects shown already (at 10k rows a busy snapshot changes dozens)
        view_key = spec.view_key
        keys = [view_key(view) for view in views]
        new_views: dict[str, V] = dict(zip(keys, views, strict=True))
        rank: dict[str, int] = dict(zip(keys, range(len(keys)), strict=True))
        seen = old_views.get
        fresh = (list(new_views.items()) if force
                 else [(k, v) for k, v in new_views.items() if seen(k) is not v])
        updated = added = 0
        membership = False
        shown = self.index
        values = self._sort_values
        drop_values = bool(values) and not (self._values_of is not None
                                            and self.sorts[self._values_of].by_key)
        for key, view in fresh:
            old = old_views.get(key)
            if old is not None and not force:
                if drop_values:
                    values.pop(key, None)
                row = cells.get(key)
                if row is not None:
                    row.view = view  # positions and times: the next tick compares them
                rev = getattr(view, "rev", 0)
                if rev and rev == getattr(old, "rev", 0):
                    continue
            sig = spec.signature(view)
            if old is not None and not force and sig == sigs.get(key):
                continue
            sigs[key] = sig
            values.pop(key, None)
            if self.flags is not None:
                self._set_flags(key, self.flags(view))
            self._search.pop(key, None)
            row = cells.get(key)
            if row is None:
                cells[key] = RowCells(view)
            else:
                row.view, row.static, row.lazy = view, None, None
            if old is None:
                added += 1
                self.max_key_len = max(self.max_key_len, len(key))
            was_shown = key in shown
            if was_shown != self.matches_view(key, view):
                membership = True
            elif was_shown:
                updated += 1
        gone = old_views.keys() - new_views.keys()
        removed = 0
        for key in gone:
            if key in self._flags:
                self._set_flags(key, frozenset())
            sigs.pop(key, None)
            self._sort_values.pop(key, None)
            self._search.pop(key, None)
            cells.pop(key, None)
            self.marked.discard(key)
            if key in shown:
                removed += 1
        self.views = new_views
        self.rank = rank
        if membership or added or removed or force:
            before = self.index
            reordered = self._reorder(always=True)
            after = self.index
            return Change(added=len(after.keys() - before.keys()),
                          removed=len(before.keys() - after.keys()),
                          updated=updated, reordered=reordered)
        # positions changed in the snapshot order: re-sort only without a sort of our own
        reordered = self._reorder(always=self.sort_id is None or bool(updated))
        return Change(updated=updated, reordered=reordered)

    def _set_flags(self, key: str, new: frozenset[str]) -> None:
        old = self._flags.get(key, frozenset())
        if new == old:
            return
        counts, crossed = self._flag_counts, False
        for flag in old - new:
            counts[flag] -= 1
            crossed = crossed or not counts[flag]
        for flag in new - old:
            counts[flag] = counts.get(flag, 0) + 1
            crossed = crossed or counts[flag] == 1
        if new:
            self._flags[key] = new
        else:
            del self._flags[key]
        if crossed:
            self.in_use = frozenset(f for f, n in counts.items() if n)

    def matches_view(self, key: str, view: V) -> bool:
        if self.only is not None and not self.only(view):
            return False
        if not self.filter_text:
            return True
        text = self._search.get(key)
        if text is None:
            text = self._search[key] = self.spec.search_text(view)
        return all(word in text for word in self.filter_text.split())

    def set_filter(self, text: str) -> Change:
        """Show only rows whose text contains every word of ``text`` (case-insensitive)."""
        self.filter_text = text.strip().lower()
        before = self.index
        reordered = self._reorder(always=True, resort=True)
        after = self.index
        return Change(added=len(after.keys() - before.keys()),
                      removed=len(before.keys() - after.keys()), reordered=reordered)

    def set_only(self, only: Callable[[Any], bool] | None) -> Change:
        """Show only rows whose view passes ``only`` (None: all), besides the filter words."""
        self.only = only
        return self.set_filter(self.filter_text)

    def set_sort(self, sort_id: str | None, reverse: bool | None = None) -> Change:
        """Sort by a :attr:`sorts` id (None: the snapshot's order); the same id twice reverses."""
        if sort_id is not None and sort_id not in self.sorts:
            raise KeyError(sort_id)
        if reverse is None:
            reverse = (not self.sort_reverse) if sort_id == self.sort_id else False
        self.sort_id, self.sort_reverse = sort_id, reverse
        return Change(reordered=self._reorder(always=True))

    def toggle_mark(self, key: str) -> None:
        if key in self.marked:
            self.marked.discard(key)
        elif key in self.views:
            self.marked.add(key)

    def _desired(self, resort: bool) -> list[str]:
        rank = self.rank
        if self.sort_id is None:
            self._sorted_by = None
            keys = ([k for k in rank if self.matches(k)] if self.filter_text or self.only
                    else list(rank))
            return keys[::-1] if self.sort_reverse else keys
        sort = (self.sort_id, self.sort_reverse)
        if resort or self._sorted_by != sort:
            keys = ([k for k in rank if self.matches(k)] if self.filter_text or self.only
                    else list(rank))
        else:
            # the same sort and filter as the rows shown: start from their order (nearly
            # sorted already, so the sort below is about one comparison per row), less the
            # rows gone, plus the rows arrived or changed
            shown = self.index
            keys = [k for k in self.order if k in rank]
            if self.filter_text or self.only:
                keys = [k for k in keys if self.matches(k)]
            keys += [k for k in rank if k not in shown and self.matches(k)]
        self._sorted_by = sort
        values = self._sort_values
        if self._values_of != self.sort_id:
            values.clear()
            self._values_of = self.sort_id
        value = self.sorts[self.sort_id].value
        views, now = self.views, self.clock()
        for k in keys:
            if k not in values:
                values[k] = value(views[k], now)
        return sorted(keys, key=lambda k: (values[k], rank[k]), reverse=self.sort_reverse)

    def _reorder(self, *, always: bool, resort: bool = False) -> bool:
        if not always:
            return False
        desired = self._desired(resort)
        if desired == self.order:
            return False
        self.order = desired
        self.index = dict(zip(desired, range(len(desired)), strict=True))
        return True

    # --- cursor ----------------------------------------------------------------------------------
    def follow_key(self, key: str | None, old_order: Sequence[str], old_row: int) -> str | None:
        """Where the cursor goes after a change: ``key`` while it is shown, else its nearest
        surviving neighbour in ``old_order`` (the one below first), else the same row."""
        if not self.order:
            return None
        index = self.index
        if key is not None and key in index:
            return key
        if key is not None and old_order:
            i = min(max(old_row, 0), len(old_order) - 1)
            if old_order[i] != key:
                try:
                    i = list(old_order).index(key)
                except ValueError:
                    i = -1
            if i >= 0:
                below = next((k for k in old_order[i + 1:] if k in index), None)
                if below is not None:
                    return below
                above = next((k for k in reversed(old_order[:i]) if k in index), None)
                if above is not None:
                    return above
        return self.order[min(max(old_row, 0), len(self.order) - 1)]
