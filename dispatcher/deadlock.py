"""DeadlockDetector: tasks that can never run.

Two kinds (R13): dependency **cycles** (tasks waiting on each other), and tasks **blocked for
good** because a dependency, directly or further up, FAILED or was CANCELLED. Each finding names
every task involved, the root, and a suggested resolution.
"""

from __future__ import annotations

import importlib
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import DispatcherConfig
from .errors import DeadlockDetectedError
from .graph import is_acyclic
from .models import Task, TaskState, task_key
from .snapshot import DeadlockView

if TYPE_CHECKING:  # networkx is imported where a graph is built (see detect): about 20 MB
    import networkx as nx  # and 0.2 s that a start without failures or cycles never needs

log = logging.getLogger(__name__)

__all__ = ["DeadlockDetector", "DeadlockEntry", "DeadlockReport"]

_MAX_CYCLES = 100  # simple_cycles can be exponential; a report of 100 cycles is plenty


@dataclass(frozen=True)
class DeadlockEntry:
    """One finding: a cycle, or the tasks blocked for good behind one failed root."""

    kind: str  # "cycle" | "failed_dependency"
    tasks: tuple[str, ...]  # cycle: in cycle order; failed_dependency: the blocked tasks
    root: str | None  # failed_dependency: the FAILED/CANCELLED task; cycle: None
    suggestion: str

    def to_view(self) -> DeadlockView:
        return DeadlockView(self.kind, self.tasks, self.root, self.suggestion)

    def __str__(self) -> str:
        if self.kind == "cycle":
            return f"cycle {' -> '.join([*self.tasks, self.tasks[0]])}: {self.suggestion}"
        return f"{', '.join(self.tasks)} blocked by {self.root}: {self.suggestion}"


@dataclass(frozen=True)
class DeadlockReport:
    """What :meth:`DeadlockDetector.detect` found."""

    cycles: tuple[DeadlockEntry, ...] = ()
    blocked_by_failure: tuple[DeadlockEntry, ...] = ()
    _blocked_roots: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    @property
    def has_cycles(self) -> bool:
        return bool(self.cycles)

    @property
    def entries(self) -> tuple[DeadlockEntry, ...]:
        return self.cycles + self.blocked_by_failure

    def roots_of(self, key: str) -> tuple[str, ...]:
        """The FAILED/CANCELLED roots that block task ``key`` for good (empty if none)."""
        return self._blocked_roots.get(key, ())

    def cycle_of(self, key: str) -> tuple[str, ...] | None:
        """The first cycle containing ``key``."""
        for entry in self.cycles:
            if key in entry.tasks:
                return entry.tasks
        return None

    def to_views(self) -> tuple[DeadlockView, ...]:
        """Snapshot views of every finding."""
        return tuple(e.to_view() for e in self.entries)

    def __bool__(self) -> bool:
        return bool(self.cycles or self.blocked_by_failure)


def _dep_key(task: Task, dep: str) -> str:
    return dep if "/" in dep else task_key(task.taskset, dep)


def _find_cycles(g: nx.DiGraph) -> list[list[str]]:
    import networkx as nx  # noqa: PLC0415 - see the import at the top

    try:
        graph_mod = importlib.import_module(f"{__package__}.graph")  # when present
    except ImportError:
        graph_mod = None
    find_cycles = getattr(graph_mod, "find_cycles", None)
    if find_cycles is None:
        return [list(c) for c in itertools.islice(nx.simple_cycles(g), _MAX_CYCLES)]
    cycles = [list(c) for c in find_cycles(g)]
    # One cycle per knot may leave out tasks of that knot (two loops sharing a task): add
    # cycles until every task that is on some cycle is named.
    covered = {k for c in cycles for k in c}
    for component in nx.strongly_connected_components(g):
        missing = set(component) - covered
        if len(component) < 2 or not missing:
            continue
        sub = g.subgraph(component)
        for cycle in itertools.islice(nx.simple_cycles(sub), _MAX_CYCLES):
            if missing & set(cycle):
                cycles.append(list(cycle))
                missing -= set(cycle)
                covered |= set(cycle)
            if not missing:
                break
    return cycles


#: States of a dependency that blocks its dependents for good.
_ROOT_STATES = frozenset({TaskState.FAILED, TaskState.CANCELLED})


class DeadlockDetector:
    """Finds dependency cycles and tasks blocked for good by a failed dependency."""

    def __init__(self, config: DispatcherConfig | None = None) -> None:
        self.config = config or DispatcherConfig()

    def build_graph(self, tasks: Iterable[Task]) -> nx.DiGraph:
        """Edges dependency -> dependent over the given tasks (unknown dependencies skipped)."""
        import networkx as nx  # noqa: PLC0415 - see the import at the top

        g = nx.DiGraph()
        by_key = {t.key: t for t in tasks}
        for key, task in by_key.items():
            g.add_node(key, task=task)
        for key, task in by_key.items():
            for dep in task.dependencies:
                dk = _dep_key(task, dep)
                if dk in by_key:
                    g.add_edge(dk, key)
        return g

    def detect(self, tasks: Iterable[Task]) -> DeadlockReport:
        """Every cycle and every task blocked for good, without raising."""
        tasks = list(tasks)
        if not any(t.state in _ROOT_STATES for t in tasks) and is_acyclic(tasks):
            return DeadlockReport()  # the common case, without a graph of every task
        import networkx as nx  # noqa: PLC0415 - see the import at the top

        g = self.build_graph(tasks)
        cycles = []
        for cycle in _find_cycles(g):
            ordered = _rotate(cycle)
            cycles.append(
                DeadlockEntry(
                    "cycle",
                    tuple(ordered),
                    None,
                    f"remove one of the dependencies {_edges(ordered)} from the taskset "
                    "and submit it again, or cancel one of these tasks",
                )
            )
        blocked: list[DeadlockEntry] = []
        roots_of: dict[str, list[str]] = {}
        for key in sorted(g.nodes):
            task: Task = g.nodes[key]["task"]
            if task.state not in (TaskState.FAILED, TaskState.CANCELLED):
                continue
            stuck = sorted(
                k for k in nx.descendants(g, key) if not g.nodes[k]["task"].state.terminal
            )
            if not stuck:
                continue
            for k in stuck:
                roots_of.setdefault(k, []).append(key)
            what = "failed" if task.state == TaskState.FAILED else "cancelled"
            blocked.append(
                DeadlockEntry(
                    "failed_dependency",
                    tuple(stuck),
                    key,
                    f"retry {key} (the {what} root) or cancel {', '.join(stuck)}",
                )
            )
        if cycles:
            log.warning("dependency cycle(s): %s", "; ".join(str(c) for c in cycles))
        return DeadlockReport(
            tuple(cycles), tuple(blocked), {k: tuple(v) for k, v in roots_of.items()}
        )

    def check(self, tasks: Iterable[Task]) -> DeadlockReport:
        """Like :meth:`detect`, but raise DeadlockDetectedError naming every task of every cycle."""
        report = self.detect(tasks)
        if report.cycles:
            raise DeadlockDetectedError([list(c.tasks) for c in report.cycles])
        return report

    # seed-style alias
    def detect_deadlock(self, tasks: Iterable[Task]) -> list[list[str]]:
        """The cycles only, as lists of task keys."""
        return [list(c.tasks) for c in self.detect(tasks).cycles]


def _rotate(cycle: list[str]) -> list[str]:
    """Start a cycle at its smallest key, so reports are stable."""
    if not cycle:
        return cycle
    i = cycle.index(min(cycle))
    return cycle[i:] + cycle[:i]


def _edges(cycle: list[str]) -> str:
    pairs = zip(cycle, cycle[1:] + cycle[:1], strict=True)
    return ", ".join(f"{b} on {a}" for a, b in pairs)
