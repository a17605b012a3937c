"""The dashboard screen: header, pools, running / queue / finished tables, event tail.

Narrow terminals (80x24) show one panel at a time under a tab bar; wide ones (>= 150x40) show the
four panels in a grid. Keys act on the selected row (or the marked rows) of the last task table
that had the focus; every verb goes through the engine's control methods (see ``NecroApp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from necrocode.dispatcher.snapshot import Snapshot
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input, Tab, Tabs

from ..widgets import (
    DashboardHeader,
    DiffTable,
    EventTail,
    FinishedTable,
    PoolsTable,
    QueueTable,
    RunningTable,
)
from ..widgets.footer import QuietFooter
from ..widgets.format import state_value
from .main_verbs import DashboardVerbs
from .modals import FilterInput

if TYPE_CHECKING:
    from ..app import NecroApp

#: Actions that change the engine's state: hidden (not only disabled) in read-only mode.
MUTATING_ACTIONS = frozenset(
    {"pause_toggle", "pause", "resume", "priority_up", "priority_down", "priority_set",
     "retry", "cancel", "pool_toggle", "mark", "retry_from_base", "land"}
)

#: Panels in tab order: (panel id, tab label, widget id).
PANELS: tuple[tuple[str, str, str], ...] = (
    ("running", "Running", "running-table"),
    ("queue", "Queue", "queue-table"),
    ("finished", "Finished", "finished-table"),
    ("events", "Events", "events"),
)

WIDE_MIN = (120, 40)


class PanelTabs(Tabs, can_focus=False):
    """The tab bar of narrow layouts (clicks and tab keys switch panels)."""


class MainScreen(DashboardVerbs, Screen[None]):
    """The live dashboard."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # one key, two bindings: the footer says Pause while running and Resume while paused
        Binding("p", "pause", "Pause", id="pause", tooltip="Pause / resume dispatching"),
        Binding("p", "resume", "Resume", id="resume", tooltip="Pause / resume dispatching"),
        Binding("plus", "priority_up", "Prio+", id="priority_up", show=False),
        Binding("minus", "priority_down", "Prio-", id="priority_down", show=False),
        Binding("equals_sign", "priority_set", "Set prio", id="priority_set", show=False),
        Binding("r", "retry", "Retry", id="retry"),
        Binding("c", "cancel", "Cancel", id="cancel"),
        Binding("B", "retry_from_base", "From base", id="retry_from_base", show=False,
                tooltip="Start the task from the base, without its dependencies' work"),
        Binding("M", "land", "Land", id="land", show=False,
                tooltip="Land the selected task's taskset (merge its DONE work)"),
        Binding("e", "pool_toggle", "Pool", id="pool_toggle", tooltip="Enable / disable the pool"),
        # priority: taken when the app reads the key, so keys read with it in one go (`/fe`)
        # already go to the filter box (see check_action: in the box, `/` is a character)
        Binding("slash", "filter", "Filter", id="filter", priority=True),
        Binding("space", "mark", "Mark", id="mark", show=False),
        Binding("enter", "detail", "Detail", id="detail"),
        Binding("g", "graph", "Graph", id="graph"),
        Binding("L", "agent_log", "Log", id="agent_log",
                tooltip="Agent view: the attempt's log full screen, its prompt and diff"),
        Binding("F", "failed_only", "Failed only", id="failed_only", show=False,
                tooltip="Finished panel: failed tasks only (again: all); acknowledges failures"),
        Binding("d", "deadlocks", "Stuck tasks", id="deadlocks", show=False,
                tooltip="Dependency cycles and tasks blocked by failures"),
        Binding("S", "sort('skill')", "Sort skill", id="sort_skill", show=False),
        Binding("P", "sort('priority')", "Sort priority", id="sort_priority", show=False),
        Binding("W", "sort('wait')", "Sort wait", id="sort_wait", show=False),
        Binding("T", "sort('task')", "Sort task", id="sort_task", show=False),
        Binding("N", "sort('tenant')", "Sort tenant", id="sort_tenant", show=False),
        Binding("O", "sort('')", "Dispatch order", id="sort_order", show=False),
        Binding("tab", "next_panel(1)", "Next panel", id="next_panel", show=False),
        Binding("shift+tab", "next_panel(-1)", "Prev panel", id="prev_panel", show=False),
        Binding("escape", "back", "Back", id="back", show=False,
                tooltip="clear marks, then the filter; on other screens: back / close"),
    ]

    def __init__(self) -> None:
        super().__init__(id="main")
        self.active_table_id = "running-table"
        self._panel = "running"  # the panel the narrow layout shows
        self.failed_only = False
        self._snap: Snapshot | None = None
        self._filter_timer: Timer | None = None
        self._titles: dict[str, str] = {}  # panel id -> its title now
        self._tab_labels: dict[str, str] = {}  # panel id -> the label its tab shows

    @property
    def necro(self) -> NecroApp:
        return self.app  # type: ignore[return-value]

    # --- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        clock = self.necro.clock
        yield DashboardHeader(read_only=self.necro.read_only, id="header")
        yield PoolsTable(id="pools")
        yield PanelTabs(*(Tab(label, id=f"tab-{pid}") for pid, label, _ in PANELS), id="tabs")
        with Vertical(id="body"):
            with Vertical(id="box-running", classes="box active"):
                yield RunningTable(clock=clock, id="running-table")
            with Vertical(id="box-events", classes="box"):
                yield EventTail(id="events")
            with Vertical(id="box-queue", classes="box"):
                yield QueueTable(clock=clock, id="queue-table")
            with Vertical(id="box-finished", classes="box"):
                yield FinishedTable(clock=clock, id="finished-table")
        yield FilterInput(placeholder="filter: words matched in key, title, skill, state…",
                          id="filter")
        yield QuietFooter(compact=True)

    def on_mount(self) -> None:
        self.query_one(FilterInput).display = False
        for pid, label, _ in PANELS:
            self.query_one(f"#box-{pid}").border_title = label
        self._layout_for(self.size.width, self.size.height)
        self.query_one("#running-table").focus()
        self.call_after_refresh(self.necro.refresh_snapshot)

    def on_resize(self, event: events.Resize) -> None:
        self._layout_for(event.size.width, event.size.height)

    def _layout_for(self, width: int, height: int) -> None:
        self.set_class(width >= WIDE_MIN[0] and height >= WIDE_MIN[1], "wide")
        if not self.wide:
            self._label_tabs()
            self.show_panel(self._panel)

    @property
    def wide(self) -> bool:
        return self.has_class("wide")

    def show_panel(self, pid: str) -> None:
        """Make a panel the visible one (narrow layout) and mark its tab active.

        In the wide layout every panel shows: classes are left alone (a class change restyles
        and lays out the whole body, ~0.1 s at 10k rows)."""
        self._panel = pid
        if self.wide:
            return
        for other, _, _ in PANELS:
            self.query_one(f"#box-{other}").set_class(other == pid, "active")
        tabs = self.query_one(PanelTabs)
        if tabs.active != f"tab-{pid}":
            tabs.active = f"tab-{pid}"

    @on(Tabs.TabActivated, "#tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        pid = (event.tab.id or "tab-running").removeprefix("tab-")
        self.show_panel(pid)
        widget_id = dict((p, w) for p, _, w in PANELS)[pid]
        widget = self.query_one(f"#{widget_id}")
        # Follow a tab click only: never pull the focus out of the filter line (a programmatic
        # tab change arrives later as a message, possibly after `/` focused the filter).
        if self.wide or isinstance(self.focused, Input) or self.query_one(FilterInput).display:
            return
        if not widget.has_focus:
            widget.focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        widget = event.widget
        if isinstance(widget, DiffTable) and widget.id:
            self.active_table_id = widget.id
        for pid, _, wid in PANELS:
            if widget.id == wid:
                self.show_panel(pid)

    # --- data ------------------------------------------------------------------------------------
    @property
    def shown(self) -> Snapshot | None:
        """The snapshot the dashboard shows (applied last)."""
        return self._snap

    def on_screen_resume(self) -> None:
        # back from a dialog: the snapshots that came meanwhile, once the dialog is gone
        self.call_after_refresh(self.necro.refresh_snapshot)

    def apply(self, snap: Snapshot) -> None:
        """Apply a new snapshot to every panel."""
        for step in self.apply_steps(snap):
            step()

    def apply_steps(self, snap: Snapshot) -> list[Callable[[], None]]:
        """:meth:`apply` in steps of one or two panels, to run in this order (the console runs
        them with its loop free in between, so a key waits for one step at most)."""

        def header() -> None:
            was_paused = self.paused
            self._snap = snap
            if self.paused != was_paused:
                self.refresh_bindings()  # Pause <-> Resume in the footer
            self.query_one(DashboardHeader).apply(snap)
            self.query_one(PoolsTable).apply(snap.pools)
            running = self.query_one(RunningTable)
            running.heartbeat_timeout = snap.heartbeat_timeout
            running.apply(snap.running)

        def queue() -> None:
            table = self.query_one(QueueTable)
            table.position_of = snap.position_of
            table.apply(snap.queued)

        def finished() -> None:
            self.query_one(FinishedTable).apply(snap.finished)

        def tail() -> None:
            self.query_one(EventTail).apply(snap.events)
            self._update_titles()

        return [header, queue, finished, tail]

    def tick(self) -> None:
        """Clock tick without a new snapshot: ages and waiting times move on."""
        for table in self.task_tables():
            table.tick()

    def action_failed_only(self) -> None:
        finished = self.query_one(FinishedTable)
        self.failed_only = not self.failed_only
        if self.failed_only:
            finished.set_only(lambda v: state_value(v.state) == "failed")
        else:
            finished.set_only(None)
        self.necro.acknowledge_failures()
        self.show_panel("finished")
        self.set_focus(finished)
        self._update_titles()

    def _update_titles(self) -> None:
        counts = {
            "running": self.query_one(RunningTable),
            "queue": self.query_one(QueueTable),
            "finished": self.query_one(FinishedTable),
        }
        for pid, label, _ in PANELS:
            table = counts.get(pid)
            if table is None:
                continue
            shown, total = table.shown_count, table.total
            title = f"{label} {total}" if shown == total else f"{label} {shown}/{total}"
            if pid == "finished" and self._snap is not None:
                c = self._snap.counters
                ever = c.done + c.failed + c.cancelled  # the panel keeps the newest only
                if self.failed_only:
                    title = f"Failed {shown} of {c.failed:,} (F: all)"
                elif ever > total:
                    title = f"{label} {shown:,} of {ever:,}"
            if table.sort_id:
                title += f" ↕{table.sort_id}{'↑' if table.sort_reverse else ''}"
            if table.marked:
                title += f" ●{len(table.marked)}"
            box = self.query_one(f"#box-{pid}")
            if box.border_title != title:
                box.border_title = title
            self._titles[pid] = title
        self._label_tabs()

    def _label_tabs(self) -> None:
        """The panels' titles on the tab bar, which only the narrow layout shows: a tab's new
        label lays out the whole screen again, so the wide layout leaves them until narrow."""
        if self.wide:
            return
        for pid, title in self._titles.items():
            if self._tab_labels.get(pid) != title:
                self._tab_labels[pid] = title
                self.query_one(f"#tab-{pid}", Tab).label = title

    def task_tables(self) -> list[DiffTable[Any]]:
        return [self.query_one(RunningTable), self.query_one(QueueTable),
                self.query_one(FinishedTable)]

    @property
    def active_table(self) -> DiffTable[Any]:
        return self.query_one(f"#{self.active_table_id}", DiffTable)

    def focused_table(self) -> DiffTable[Any] | None:
        """The task table that has the focus now (None: the pools, events or filter do)."""
        focused = self.focused
        return focused if isinstance(focused, DiffTable) else None

    def selected_task(self) -> str | None:
        """Key of the selected task in the focused task table."""
        table = self.focused_table()
        return table.selected_key if table is not None else None

    def target_tasks(self) -> list[str]:
        """Marked tasks of the focused table, else its selected task (none elsewhere)."""
        table = self.focused_table()
        return table.target_keys() if table is not None else []

    def _no_task(self) -> None:
        where = "this table is empty" if self.focused_table() is not None else (
            "task verbs act on a task table: tab to Running, Queue or Finished")
        self.notify(f"no task selected: {where}", severity="warning")

    def task_priority(self, key: str) -> int | None:
        for table in self.task_tables():
            view = table.view(key)
            if view is not None and hasattr(view, "priority"):
                return int(view.priority)
        return None

    # --- bindings --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.necro.read_only and action in MUTATING_ACTIONS:
            return False
        if action in ("pause", "resume"):
            return (action == "resume") == self.paused
        if action == "filter" and isinstance(self.focused, FilterInput):
            return False  # typed into the filter (task keys have a `/`)
        return True

    @property
    def paused(self) -> bool:
        return self._snap is not None and self._snap.state == "paused"

    def clear_all_marks(self) -> None:
        """After a bulk action: no table keeps marks (they would take the next verb too)."""
        for table in self.task_tables():
            table.clear_marks()
        self._update_titles()

    def action_pool_toggle(self) -> None:
        pools = self.query_one(PoolsTable)
        if not pools.has_focus:
            # never the pool row a hidden panel last had: the pools panel must be the view
            self.notify("e toggles the pool under the cursor of the pools panel: tab to it "
                        "(shift+tab from the running table)", severity="warning")
            return
        name = pools.selected_pool
        if name is None:
            self.notify("no pool selected", severity="warning")
            return
        status = pools.pools.get(name)
        self.necro.set_pool_enabled(name, not (status.enabled if status else True))

    def action_filter(self) -> None:
        box = self.query_one(FilterInput)
        box.add_class("shown")
        box.display = True  # inline, at once: focus() refuses a widget not displayed yet
        # Screen.set_focus is immediate; Widget.focus() is deferred behind keys already queued,
        # which would then reach the table as verbs (r, c, …) instead of the filter. The
        # binding is a priority one for the same reason: the app forwards each key it reads to
        # the widget focused then, before the table would have run a binding of its own.
        self.set_focus(box)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        # Debounced: re-filtering 10k rows per keystroke would lag behind the typing.
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value
        self._filter_timer = self.set_timer(0.3, lambda: self.set_filter(value))

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
            self._filter_timer = None
        self.set_filter(event.value)
        box = self.query_one(FilterInput)
        if not event.value:
            box.remove_class("shown")
            box.display = False
            self.set_filter("")
        self.set_focus(self.active_table)

    def set_filter(self, text: str) -> None:
        """Filter every task table (the filter holds across refreshes)."""
        with self.app.batch_update():
            for table in self.task_tables():
                if table.filter_text != text.strip().lower():
                    table.set_filter(text)
            self.query_one(DashboardHeader).set_filter(text.strip())
            self._update_titles()

    def action_sort(self, sort_id: str) -> None:
        table = self.focused_table() or self.active_table
        if sort_id and sort_id not in table.SORTS:
            self.notify(f"the {table.id} cannot sort by {sort_id}", severity="warning")
            return
        table.set_sort(sort_id or None)
        self._update_titles()

    def action_mark(self) -> None:
        table = self.focused_table()
        if table is None:
            self._no_task()
            return
        table.toggle_mark()
        self._update_titles()

    def action_detail(self) -> None:
        key = self.selected_task()
        if key:
            self.necro.open_detail(key)

    @on(DiffTable.RowSelected)
    def _row_selected(self, event: DiffTable.RowSelected) -> None:
        event.stop()
        self.necro.open_detail(event.key)

    def action_agent_log(self) -> None:
        key = self.selected_task()
        if key:
            self.necro.open_agent_log(key)
        else:
            self._no_task()

    def action_graph(self) -> None:
        self.necro.open_graph(self.selected_task())

    def action_deadlocks(self) -> None:
        self.necro.open_deadlocks()

    def action_next_panel(self, step: int) -> None:
        order = ["pools"] + [w for _, _, w in PANELS]
        focused = self.focused
        current = focused.id if isinstance(focused, Widget) and focused.id in order else None
        index = order.index(current) if current else 0
        target = order[(index + step) % len(order)]
        for pid, _, wid in PANELS:
            if wid == target:
                self.show_panel(pid)
        self.set_focus(self.query_one(f"#{target}"))

    def action_back(self) -> None:
        table = self.active_table
        if table.marked:
            table.clear_marks()
            self._update_titles()
        elif table.filter_text:
            box = self.query_one(FilterInput)
            box.value = ""
            box.remove_class("shown")
            box.display = False
            self.set_filter("")
