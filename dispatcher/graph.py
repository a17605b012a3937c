"""The dependency graph of tasks (networkx): cycles, levels, critical path and exports.

Nodes are task keys (``taskset/id``) with the task in the ``task`` attribute; an edge goes from a
dependency to its dependent, so the graph reads in execution order. A dependency that names no
known task becomes a node with ``task=None`` and ``missing=True``.

This is the seed's ``graph_visualizer``: :func:`to_dot` and :func:`to_mermaid` export the graph,
:func:`levels` (also :func:`execution_order`) groups it into levels that can run in parallel, and
:func:`critical_path` finds the longest chain by estimated duration.

networkx is imported by the functions that build or walk a graph, not with this module:
checking a taskset (:func:`is_acyclic`) never needs it, and its import is a good part of
``necroui submit``'s start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DeadlockDetectedError
from .models import Task, TaskState, task_key

if TYPE_CHECKING:
    import networkx as nx

#: Colours of task states in the exports (fill colour).
STATE_COLOURS: dict[str, str] = {
    TaskState.BLOCKED.value: "#d0d0d0",
    TaskState.READY.value: "#fff3b0",
    TaskState.RUNNING.value: "#9ecbff",
    TaskState.DONE.value: "#a8e6a3",
    TaskState.FAILED.value: "#ff9e9e",
    TaskState.CANCELLED.value: "#bfbfbf",
    "missing": "#ffffff",
}

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def build_graph(tasks: Iterable[Task]) -> nx.DiGraph:
    """Graph of ``tasks``: node = task key (attr ``task``), edge dependency -> dependent."""
    import networkx as nx  # noqa: PLC0415 - see the module docstring
    g: nx.DiGraph = nx.DiGraph()
    tasks = list(tasks)
    for task in tasks:
        g.add_node(task.key, task=task, missing=False)
    for task in tasks:
        for dep in task.dependencies:
            dep_key = dep if "/" in dep else task_key(task.taskset, dep)
            if dep_key not in g:
                g.add_node(dep_key, task=None, missing=True)
            g.add_edge(dep_key, task.key)
    return g


def is_acyclic(tasks: Sequence[Task]) -> bool:
    """Whether the dependency edges among ``tasks`` have no cycle (dependencies outside them
    ignored): Kahn's algorithm on plain dicts, several times faster and smaller than building
    the graph, for the common case; :func:`find_cycles` names the cycles when there are.

    Only tasks with dependencies are looked at: every task of a cycle depends on another task
    of it, so tasks without any (a queue of 100,000 independent tasks) cannot be in one, and a
    dependency on them is met already."""
    with_deps: dict[str, Task] = {f"{t.taskset}/{t.id}": t for t in tasks if t.dependencies}
    waiting: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    for key, task in with_deps.items():
        count = 0
        for dep in task.dependencies:
            dep_key = dep if "/" in dep else f"{task.taskset}/{dep}"
            if dep_key in with_deps:
                dependents.setdefault(dep_key, []).append(key)
                count += 1
        waiting[key] = count
    todo = [k for k, n in waiting.items() if n == 0]
    done = 0
    while todo:
        key = todo.pop()
        done += 1
        for dependent in dependents.get(key, ()):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                todo.append(dependent)
    return done == len(waiting)


def find_cycles(g: nx.DiGraph) -> list[list[str]]:
    """One cycle per strongly connected knot, each as its keys in order (starting at the least).

    Costs O(V + E): it does not enumerate every elementary cycle.
    """
    import networkx as nx  # noqa: PLC0415 - see the module docstring
    cycles: list[list[str]] = []
    for component in nx.strongly_connected_components(g):
        if len(component) == 1:
            (node,) = component
            if g.has_edge(node, node):
                cycles.append([node])
            continue
        sub = g.subgraph(component)
        start = min(component)
        edges = nx.find_cycle(sub, source=start)
        path = [u for u, _v in edges]
        i = path.index(min(path))
        cycles.append(path[i:] + path[:i])
    return sorted(cycles)


def cycle_text(cycle: list[str]) -> str:
    """``a -> b -> a``."""
    return " -> ".join([*cycle, cycle[0]])


def levels(g: nx.DiGraph) -> list[list[str]]:
    """Topological generations: every task of a level depends only on earlier levels.

    Raises DeadlockDetectedError when the graph has a cycle.
    """
    import networkx as nx  # noqa: PLC0415 - see the module docstring
    try:
        return [sorted(gen, key=natural_key) for gen in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible as exc:
        raise DeadlockDetectedError(find_cycles(g)) from exc


def execution_order(g: nx.DiGraph) -> list[list[str]]:
    """The execution order grouped in levels (same as :func:`levels`)."""
    return levels(g)


def estimated_duration(task: Task | None) -> float:
    """Seconds a task is expected to take: ``estimated_duration``, else ``metadata['estimate']``
    (a number of seconds or a string such as ``"90s"``, ``"10m"``, ``"2h"``), else 1."""
    if task is None:
        return 0.0
    if task.estimated_duration is not None:
        return float(task.estimated_duration)
    parsed = parse_duration(task.metadata.get("estimate"))
    return parsed if parsed is not None else 1.0


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like ``"45"``, ``"30s"``, ``"10m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value.lower())
        if m:
            return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1.0)
    return None


def critical_path(
    g: nx.DiGraph, duration: Callable[[Task | None], float] = estimated_duration
) -> tuple[list[str], float]:
    """The longest chain of dependent tasks by total duration, and that total (seconds)."""
    if g.number_of_nodes() == 0:
        return [], 0.0
    order = [n for level in levels(g) for n in level]
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for node in order:
        own = duration(g.nodes[node].get("task"))
        parents = list(g.predecessors(node))
        if parents:
            p = max(parents, key=lambda x: (best[x], x))
            best[node], prev[node] = best[p] + own, p
        else:
            best[node], prev[node] = own, None
    end = max(order, key=lambda n: (best[n], n))
    path: list[str] = []
    cursor: str | None = end
    while cursor is not None:
        path.append(cursor)
        cursor = prev[cursor]
    return list(reversed(path)), best[end]


def ancestors(g: nx.DiGraph, key: str) -> set[str]:
    """Every task ``key`` depends on, directly or not."""
    import networkx as nx  # noqa: PLC0415 - see the module docstring
    return set(nx.ancestors(g, key)) if key in g else set()


def descendants(g: nx.DiGraph, key: str) -> set[str]:
    """Every task that depends on ``key``, directly or not."""
    import networkx as nx  # noqa: PLC0415 - see the module docstring
    return set(nx.descendants(g, key)) if key in g else set()


# --- exports ---------------------------------------------------------------------------------


def _state(g: nx.DiGraph, node: str) -> str:
    task = g.nodes[node].get("task")
    return task.state.value if task is not None else "missing"


def _label(g: nx.DiGraph, node: str) -> str:
    task = g.nodes[node].get("task")
    if task is None:
        return f"{node} (missing)"
    return f"{task.id} {task.title}".strip()


def natural_key(key: str) -> list[Any]:
    """Sort key that puts ``1.10`` after ``1.9`` and ``t10`` after ``t9``.

    A task key sorts by taskset, then by id (split on the first ``/``), so every task of
    ``sig`` comes before those of ``sig2``.
    """
    return [[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", part)]
            for part in key.split("/", 1)]


def _nodes(g: nx.DiGraph) -> list[str]:
    return sorted(g.nodes, key=natural_key)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def to_dot(g: nx.DiGraph, name: str = "tasks") -> str:
    """Graphviz DOT text, nodes filled by state (``dot -Tsvg`` renders it)."""
    lines = [f"digraph {_dot_quote(name)} {{", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for node in _nodes(g):
        state = _state(g, node)
        label = _dot_quote(_label(g, node))[:-1] + f'\\n[{state}]"'
        lines.append(f'  {_dot_quote(node)} [label={label}, fillcolor="{STATE_COLOURS[state]}"];')
    for u, v in sorted(g.edges, key=lambda e: (natural_key(e[0]), natural_key(e[1]))):
        lines.append(f"  {_dot_quote(u)} -> {_dot_quote(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(g: nx.DiGraph) -> str:
    """Mermaid flowchart text (renders in GitHub Markdown inside a ```mermaid block)."""
    ids = {node: f"t{i}" for i, node in enumerate(_nodes(g))}
    lines = ["flowchart LR"]
    for node, nid in ids.items():
        lines.append(f'  {nid}["{_mermaid_text(_label(g, node))}"]:::{_state(g, node)}')
    for u, v in sorted(g.edges, key=lambda e: (natural_key(e[0]), natural_key(e[1]))):
        lines.append(f"  {ids[u]} --> {ids[v]}")
    for state, colour in STATE_COLOURS.items():
        lines.append(f"  classDef {state} fill:{colour},stroke:#555")
    return "\n".join(lines) + "\n"


def render_text(g: nx.DiGraph) -> str:
    """Plain text by level: state, key, title and what each task waits on; then the
    critical path. Cycles are listed instead when there are any."""
    cycles = find_cycles(g)
    if cycles:
        return "dependency cycles:\n" + "".join(f"  {cycle_text(c)}\n" for c in cycles)
    out: list[str] = []
    width = max((len(n) for n in g.nodes), default=0)
    for i, level in enumerate(levels(g), start=1):
        out.append(f"level {i}")
        for node in level:
            task = g.nodes[node].get("task")
            title = task.title if task is not None else "(missing)"
            deps = sorted(g.predecessors(node), key=natural_key)
            after = f"  <- {', '.join(deps)}" if deps else ""
            out.append(f"  [{_state(g, node):9}] {node:{width}}  {title}{after}")
    path, total = critical_path(g)
    if path:
        out.append(f"critical path ({total:g}s): {' -> '.join(path)}")
    return "\n".join(out) + "\n"


def render_levels(g: nx.DiGraph) -> str:
    """One line per level: ``1: a, b``."""
    return "".join(f"{i}: {', '.join(level)}\n" for i, level in enumerate(levels(g), start=1))
