"""Dependency-graph view: layers by topological generation, boxes coloured by state.

The selected task's ancestors and descendants are highlighted and the critical path is marked
(★). Graphs above :data:`FULL_LIMIT` tasks show the neighbourhood of the selected task (two
steps up and down its edges); the arrow keys move along edges, so any task can be reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import networkx as nx
from necrocode.dispatcher import graph as dgraph
from necrocode.dispatcher.models import Task
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..widgets.format import STATE_STYLES, state_value, truncate

if TYPE_CHECKING:
    from ..app import NecroApp

log = logging.getLogger(__name__)

FULL_LIMIT = 120  # tasks shown whole; above, the neighbourhood of the selected task
NEIGHBOUR_DEPTH = 2
BOX_WIDTH = 18


@dataclass
class GraphModel:
    """A taskset's graph with its layers, critical path and each node's layer index."""

    taskset: str
    graph: nx.DiGraph
    levels: list[list[str]] = field(default_factory=list)
    level_of: dict[str, int] = field(default_factory=dict)
    critical: list[str] = field(default_factory=list)
    critical_seconds: float = 0.0
    error: str | None = None

    @classmethod
    def build(cls, taskset: str, tasks: list[Task]) -> GraphModel:
        g = dgraph.build_graph(tasks)
        model = cls(taskset=taskset, graph=g)
        try:
            model.levels = dgraph.levels(g)
            model.critical, model.critical_seconds = dgraph.critical_path(g)
        except Exception as exc:  # noqa: BLE001 - a cycle: show it, lay out what we can
            model.error = str(exc)
            model.levels = [sorted(g.nodes)]
        model.level_of = {n: i for i, lv in enumerate(model.levels) for n in lv}
        return model

    def shown_nodes(self, selected: str | None) -> set[str]:
        """Every node for small graphs; else the selected node's neighbourhood."""
        g = self.graph
        if g.number_of_nodes() <= FULL_LIMIT:
            return set(g.nodes)
        if selected is None or selected not in g:
            return set(self.levels[0][:FULL_LIMIT] if self.levels else [])
        shown: set[str] = {selected}
        for step in (g.predecessors, g.successors):
            frontier = {selected}
            for _ in range(NEIGHBOUR_DEPTH):
                frontier = {n for f in frontier for n in step(f)} - shown
                shown |= frontier
        return shown


def _box_lines(key: str, model: GraphModel, state: str, selected: str | None,
               up: set[str], down: set[str], critical: set[str]) -> list[Text]:
    task = model.graph.nodes[key].get("task")
    label = (task.id if task else key.rsplit("/", 1)[-1]) + " " + (task.title if task else "?")
    star = "★" if key in critical else " "
    inner = BOX_WIDTH - 2
    content = truncate(star + label, inner).ljust(inner)
    border = STATE_STYLES.get(state, "white")
    fill = ""
    if key == selected:
        border, fill = "bold white", "reverse"
    elif key in up:
        fill = "on #1f3a5f"
    elif key in down:
        fill = "on #4a1f4a"
    tl, h, tr, v, bl, br = ("╔", "═", "╗", "║", "╚", "╝") if key == selected else (
        "┌", "─", "┐", "│", "└", "┘")
    state_tag = truncate(state, inner - 2)
    top = Text(tl + h + state_tag + h * (inner - 1 - len(state_tag)) + tr, style=border)
    mid = Text(v, style=border)
    mid.append(content, style=fill or STATE_STYLES.get(state, ""))
    mid.append(v, style=border)
    bottom = Text(bl + h * inner + br, style=border)
    return [top, mid, bottom]


def render_graph(model: GraphModel, selected: str | None, states: dict[str, str],
                 width: int) -> tuple[Text, int]:
    """The graph as text, and the line of the selected box (to scroll to it)."""
    g = model.graph
    shown = model.shown_nodes(selected)
    up = dgraph.ancestors(g, selected) if selected else set()
    down = dgraph.descendants(g, selected) if selected else set()
    critical = set(model.critical)
    per_line = max(1, (width - 6) // (BOX_WIDTH + 1))
    out = Text()
    selected_line = 0
    line_no = 0
    first = True
    for index, level in enumerate(model.levels):
        nodes = [n for n in level if n in shown]
        if not nodes:
            continue
        if not first:  # an arrow between two shown levels, none after the last
            out.append("  ▼\n", style="grey50")
            line_no += 1
        first = False
        hidden = len(level) - len(nodes)
        head = f"L{index + 1} " + (f"(+{hidden} not shown)" if hidden else "")
        out.append(head + "\n", style="bold grey62")
        line_no += 1
        for start in range(0, len(nodes), per_line):
            chunk = nodes[start:start + per_line]
            boxes = [_box_lines(n, model, states.get(n, "missing"), selected, up, down, critical)
                     for n in chunk]
            if selected in chunk:
                selected_line = line_no
            for row in range(3):
                line = Text("  ")
                for box in boxes:
                    line.append_text(box[row])
                    line.append(" ")
                out.append_text(line)
                out.append("\n")
                line_no += 1
    return out, selected_line


class GraphScreen(Screen[None]):
    """The dependency graph of the selected task's taskset."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="graph_back"),
        Binding("up", "move('up')", "Dependency", id="graph_up"),
        Binding("down", "move('down')", "Dependent", id="graph_down"),
        Binding("left", "move('left')", "Prev", id="graph_left"),
        Binding("right", "move('right')", "Next", id="graph_right"),
        Binding("enter", "detail", "Detail", id="graph_detail"),
    ]

    def __init__(self, key: str | None) -> None:
        super().__init__(classes="graph")
        self.selected = key
        self.model: GraphModel | None = None
        self._last_render: tuple[Any, ...] | None = None

    @property
    def necro(self) -> NecroApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("computing the graph…", id="graph-status")
        with VerticalScroll(id="graph-scroll", can_focus=False):
            yield Static("", id="graph-body")
        yield Static("", id="graph-info")
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._load, thread=True, exit_on_error=False)
        self.set_interval(1.0, self.redraw, name="graph-refresh")

    def _load(self) -> None:
        registry = self.necro.engine.registry
        taskset = self.selected.rpartition("/")[0] if self.selected else None
        if not taskset:
            sets = registry.list_tasksets()
            taskset = sets[0].name if sets else ""
        tasks = registry.list_tasks(taskset=taskset) if taskset else []
        model = GraphModel.build(taskset, tasks)
        self.app.call_from_thread(self._loaded, model)

    def _loaded(self, model: GraphModel) -> None:
        self.model = model
        if self.selected not in model.graph:
            self.selected = model.levels[0][0] if model.levels and model.levels[0] else None
        self.redraw(force=True)

    def states(self) -> dict[str, str]:
        """Task states: live views from the dashboard over the states read at load time."""
        assert self.model is not None
        states = {}
        for node, data in self.model.graph.nodes(data=True):
            task = data.get("task")
            states[node] = state_value(task.state) if task is not None else "missing"
        for table in self.necro.main.task_tables():
            for key, view in table.model.views.items():
                if key in states:
                    states[key] = state_value(getattr(view, "state", "running"))
        return states

    def redraw(self, force: bool = False) -> None:
        model = self.model
        if model is None:
            return
        states = self.states()
        width = self.size.width or 80
        key = (self.selected, width, tuple(sorted(states.items())) if len(states) < 2000
               else len(states))
        if not force and key == self._last_render:
            return
        self._last_render = key
        body, line = render_graph(model, self.selected, states, width)
        self.query_one("#graph-body", Static).update(body)
        g = model.graph
        status = Text(f" graph {model.taskset}", style="bold")
        status.append(f"  {g.number_of_nodes()} tasks, {len(model.levels)} levels")
        if g.number_of_nodes() > FULL_LIMIT:
            status.append(f"  (neighbourhood of the selected task, ±{NEIGHBOUR_DEPTH})",
                          style="yellow")
        if model.critical:
            status.append(f"  ★ critical path {len(model.critical)} tasks, "
                          f"est. {model.critical_seconds:g}s", style="grey62")
        if model.error:
            status.append(f"\n {model.error}", style="bold red")
        self.query_one("#graph-status", Static).update(status)
        self.query_one("#graph-info", Static).update(self._info())
        scroll = self.query_one("#graph-scroll", VerticalScroll)
        height = scroll.size.height or 10
        if not (scroll.scroll_y <= line <= scroll.scroll_y + height - 4):
            scroll.scroll_to(y=max(0, line - 2), animate=False)

    def _info(self) -> Text:
        model, key = self.model, self.selected
        if model is None or key is None or key not in model.graph:
            return Text("")
        g = model.graph
        text = Text(" ")
        text.append(key, style="bold")
        text.append("  deps: ", style="grey62")
        text.append(", ".join(sorted(g.predecessors(key))) or "-")
        text.append("  dependents: ", style="grey62")
        text.append(", ".join(sorted(g.successors(key))) or "-")
        text.append("  ▮ ancestors ", style="#6fa8dc")
        text.append("▮ descendants", style="#c27ba0")
        return text

    def action_move(self, direction: str) -> None:
        model, key = self.model, self.selected
        if model is None or key is None:
            return
        g = model.graph
        target: str | None = None
        if direction == "up":
            preds = sorted(g.predecessors(key), key=lambda n: (n not in model.critical, n))
            target = preds[0] if preds else None
        elif direction == "down":
            succs = sorted(g.successors(key), key=lambda n: (n not in model.critical, n))
            target = succs[0] if succs else None
        else:
            level = model.levels[model.level_of.get(key, 0)]
            shown = model.shown_nodes(key)
            row = [n for n in level if n in shown] or level
            i = row.index(key) if key in row else 0
            j = i + (1 if direction == "right" else -1)
            target = row[j] if 0 <= j < len(row) else None
        if target is not None:
            self.selected = target
            self.redraw(force=True)

    def action_detail(self) -> None:
        if self.selected:
            self.necro.open_detail(self.selected)

    def action_back(self) -> None:
        self.app.pop_screen()
