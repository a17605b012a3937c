"""The row model of the dashboard tables, without Textual: diffs by key, filter, sort, cursor."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

from necrocode.dispatcher.graph import natural_key

from necroui.widgets.rowmodel import CellValue, Change, RowModel, SortSpec


@dataclass(frozen=True)
class Row:
    key: str
    prio: int = 0
    title: str = ""
    rev: int = 0


class Spec:
    """Counts formatting calls, as the table would format rows."""

    def __init__(self) -> None:
        self.formatted: list[str] = []

    def view_key(self, view: Row) -> str:
        return view.key

    def signature(self, view: Row) -> Hashable:
        return (view.prio, view.title)

    def static_cells(self, view: Row) -> tuple[CellValue, ...]:
        self.formatted.append(view.key)
        return (str(view.prio),)

    def lazy_cells(self, view: Row, now: float) -> tuple[CellValue, ...]:
        return ()

    def search_text(self, view: Row) -> str:
        return f"{view.key} {view.title}".lower()


SORTS = {
    "task": SortSpec("task", lambda v, now: natural_key(v.key)),
    "priority": SortSpec("priority", lambda v, now: -v.prio),
}


def model(rows: list[Row]) -> tuple[RowModel[Row], Spec]:
    spec = Spec()
    m: RowModel[Row] = RowModel(spec, SORTS, lambda: 0.0)
    m.apply(rows)
    return m, spec


def test_an_unchanged_row_costs_nothing_and_a_changed_one_is_formatted_again() -> None:
    rows = [Row(f"ts/{i}") for i in range(100)]
    m, spec = model(rows)
    assert spec.formatted == []  # nothing drawn yet: nothing formatted
    m.static("ts/5")
    m.static("ts/6")
    again = [dataclasses.replace(r) for r in rows]  # equal, new objects
    assert m.apply(again) == Change()
    changed = list(again)
    changed[5] = dataclasses.replace(rows[5], prio=3)
    assert m.apply(changed) == Change(updated=1)
    spec.formatted.clear()
    m.static("ts/5")
    m.static("ts/6")
    assert spec.formatted == ["ts/5"]


def test_rows_arrive_and_leave_by_key() -> None:
    m, _ = model([Row("a"), Row("b"), Row("c")])
    change = m.apply([Row("c"), Row("d"), Row("a")])
    assert change == Change(added=1, removed=1, updated=0, reordered=True)
    assert m.order == ["c", "d", "a"] and m.index == {"c": 0, "d": 1, "a": 2}


def test_same_rev_skips_the_signature() -> None:
    m, _ = model([Row("a", rev=1)])
    assert m.apply([Row("a", prio=9, rev=1)]) == Change()  # the engine says: not changed
    assert m.apply([Row("a", prio=9, rev=2)]) == Change(updated=1)


def test_task_sort_is_natural_and_the_same_key_again_reverses() -> None:
    m, _ = model([Row("fe.10"), Row("fe.9"), Row("fe.1")])
    m.set_sort("task")
    assert m.order == ["fe.1", "fe.9", "fe.10"]
    m.set_sort("task")
    assert m.order == ["fe.10", "fe.9", "fe.1"]
    m.set_sort(None)  # dispatch order
    assert m.order == ["fe.10", "fe.9", "fe.1"]
    m.set_sort(None)  # O again: reversed dispatch order
    assert m.order == ["fe.1", "fe.9", "fe.10"] and m.sort_reverse


def test_filter_keeps_marks_and_matches_every_word() -> None:
    m, _ = model([Row("a", title="Fix login"), Row("b", title="fix logout"), Row("c")])
    m.toggle_mark("a")
    m.set_filter("FIX log")
    assert m.order == ["a", "b"]
    m.set_filter("logout")
    assert m.order == ["b"] and m.marked == {"a"}
    m.apply([Row("a", title="logout too"), Row("b", title="fix logout"), Row("c")])
    assert m.order == ["a", "b"]  # its new title matches now


def test_cursor_follows_its_key_else_its_nearest_neighbour_below() -> None:
    m, _ = model([Row(k) for k in "abcde"])
    old = list(m.order)
    m.apply([Row(k) for k in "eadb"])  # c left
    assert m.follow_key("b", old, 1) == "b"
    assert m.follow_key("c", old, 2) == "d"  # below it before
    m.apply([Row(k) for k in "ab"])
    assert m.follow_key("e", list("eadb"), 0) == "a"
    m.apply([])
    assert m.follow_key("a", ["a", "b"], 0) is None


def test_flags_in_use_follow_the_rows_and_are_asked_only_of_changed_rows() -> None:
    asked: list[str] = []

    def flags(view: Row) -> frozenset[str]:
        asked.append(view.key)
        return frozenset({"tokens"}) if view.prio else frozenset()

    rows = [Row(f"ts/{i}") for i in range(1000)]
    m: RowModel[Row] = RowModel(Spec(), SORTS, lambda: 0.0, flags)
    m.apply(rows)
    assert m.in_use == frozenset() and len(asked) == 1000
    asked.clear()
    rows = [*rows[:5], dataclasses.replace(rows[5], prio=1), *rows[6:]]
    m.apply(rows)
    assert m.in_use == {"tokens"} and asked == ["ts/5"]  # one row changed: one asked
    asked.clear()
    m.apply([dataclasses.replace(r) for r in rows])  # equal views: nothing asked
    assert asked == [] and m.in_use == {"tokens"}
    m.apply(rows[:5] + rows[6:])  # the row with usage leaves
    assert m.in_use == frozenset() and asked == []


def test_a_sorted_table_stays_sorted_as_rows_come_change_and_go() -> None:
    """Under a sort, an apply re-sorts from the rows shown (nearly in order already): the
    same order as sorting every row from scratch, ties in snapshot order."""
    import random

    rng = random.Random(7)
    rows = [Row(f"ts/{i}", prio=rng.randrange(4), title=rng.choice(["x", "y"]))
            for i in range(300)]
    m, _ = model(rows)
    m.set_sort("priority")
    m.set_filter("x")
    for round_ in range(20):
        rows = [r for r in rows if rng.random() > 0.05]
        rows = [dataclasses.replace(r, prio=rng.randrange(4), title=rng.choice(["x", "y"]))
                if rng.random() < 0.05 else r for r in rows]
        rows += [Row(f"new/{round_}.{i}", prio=rng.randrange(4), title="x") for i in range(5)]
        rng.shuffle(rows)
        m.apply(rows)
        expected = sorted((r for r in rows if "x" in f"{r.key} {r.title}".lower()),
                          key=lambda r: -r.prio)  # stable: ties keep the snapshot's order
        assert m.order == [r.key for r in expected]


def test_the_task_sort_string_orders_as_natural_key() -> None:
    import random

    from necroui.widgets.tasktables import _natural

    rng = random.Random(3)
    keys = ["fe/1.10", "fe/1.9", "fe/1", "fe/1.", "fe2/a", "fe/a", "fe/a1", "fe/a01",
            "f/10", "f/9", "f", "f/", "a-b/c", "a/b-c", "x/007", "x/7b", "x/7", "x/t10", "x/t9"]
    keys += ["".join(rng.choice("ab1290/.-") for _ in range(rng.randrange(1, 8)))
             for _ in range(400)]
    by_natural = sorted(keys, key=natural_key)
    by_string = sorted(keys, key=_natural)
    # equal under natural_key (x/007 and x/7) may come in either order: compare the keys
    assert [natural_key(k) for k in by_string] == [natural_key(k) for k in by_natural]
