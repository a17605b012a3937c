"""The `d` modal: dependency cycles and tasks blocked for good behind a failed dependency.

One row per entry of ``snapshot.deadlocks`` with its suggestion; ``r`` retries the root of the
highlighted entry (the failed task the others wait on), ``enter`` opens the root's detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from necrocode.dispatcher.snapshot import DeadlockView
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from ..widgets.format import fitted

if TYPE_CHECKING:
    from ..app import NecroApp


def deadlock_counts(deadlocks: tuple[DeadlockView, ...]) -> tuple[int, int]:
    """(number of cycles, number of tasks blocked behind failed dependencies)."""
    cycles = sum(1 for d in deadlocks if d.kind == "cycle")
    blocked = sum(len(d.tasks) for d in deadlocks if d.kind != "cycle")
    return cycles, blocked


def _tasks_text(view: DeadlockView) -> str:
    if view.kind == "cycle":
        return " -> ".join([*view.tasks, view.tasks[0]]) if view.tasks else "-"
    shown = ", ".join(view.tasks[:3])
    return shown + (f" … (+{len(view.tasks) - 3})" if len(view.tasks) > 3 else "")


class DeadlocksModal(ModalScreen[None]):
    """Lists the snapshot's deadlocks; r retries the root of the highlighted one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="deadlocks_close"),
        Binding("d", "close", "Close", show=False),
        Binding("r", "retry_root", "Retry root", id="deadlocks_retry"),
        Binding("enter", "root_detail", "Root detail", id="deadlocks_detail"),
    ]

    def __init__(self, deadlocks: tuple[DeadlockView, ...]) -> None:
        super().__init__(classes="modal")
        self.deadlocks = deadlocks

    @property
    def necro(self) -> NecroApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        cycles, blocked = deadlock_counts(self.deadlocks)
        with Vertical(classes="dialog wide", id="deadlocks-box"):
            yield Label(f"{cycles} dependency cycle(s), {blocked} task(s) blocked by failures",
                        classes="question")
            yield DataTable(id="deadlocks-table", cursor_type="row")
            yield Label("", id="deadlocks-suggestion", classes="hint")
            hint = "r retries the root · enter opens the root · esc closes"
            if self.necro.read_only:
                hint = "enter opens the root · esc closes (read-only)"
            yield Label(hint if self.deadlocks else "nothing is stuck", classes="hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("kind", key="kind", width=8)
        table.add_column("root", key="root", width=20)
        table.add_column("tasks", key="tasks", width=44)
        for i, view in enumerate(self.deadlocks):
            kind = Text("cycle", style="bold red") if view.kind == "cycle" else Text(
                "blocked", style="yellow")
            table.add_row(kind, fitted(view.root or "-"), fitted(_tasks_text(view)),
                          key=str(i))
        table.focus()
        self._show_suggestion()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_suggestion()

    def _show_suggestion(self) -> None:
        view = self.selected()
        text = Text()
        if view is not None:
            text.append("suggestion: ", style="bold")
            text.append(view.suggestion or "-")
        self.query_one("#deadlocks-suggestion", Label).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "retry_root" and self.necro.read_only:
            return False
        return True

    def selected(self) -> DeadlockView | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return self.deadlocks[int(str(row_key.value))]

    def action_retry_root(self) -> None:
        view = self.selected()
        if view is None or not view.root:
            self.notify("no root task to retry here", severity="warning")
            return
        self.necro.retry_tasks([view.root])

    def action_root_detail(self) -> None:
        view = self.selected()
        key = (view.root or (view.tasks[0] if view.tasks else None)) if view else None
        if key:
            self.dismiss(None)
            self.necro.open_detail(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_root_detail()

    def action_close(self) -> None:
        self.dismiss(None)
