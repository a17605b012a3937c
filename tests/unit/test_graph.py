"""Dependency graph: cycles, levels, critical path, ancestry and exports."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher import graph as G
from necrocode.dispatcher.errors import DeadlockDetectedError
from necrocode.dispatcher.models import Task, TaskState


def t(id: str, *deps: str, **kw: object) -> Task:
    return Task(id=id, title=f"task {id}", taskset="s", dependencies=list(deps), **kw)  # type: ignore[arg-type]


@pytest.fixture
def diamond() -> list[Task]:
    #   1 -> 2 -> 4
    #   1 -> 3 -> 4      3 is slow
    return [t("1", estimated_duration=2), t("2", "1", estimated_duration=1),
            t("3", "1", estimated_duration=10), t("4", "2", "3", metadata={"estimate": "1m"})]


def test_build_graph_edges_go_from_dependency_to_dependent(diamond: list[Task]) -> None:
    g = G.build_graph(diamond)
    assert set(g.edges) == {("s/1", "s/2"), ("s/1", "s/3"), ("s/2", "s/4"), ("s/3", "s/4")}
    assert g.nodes["s/1"]["task"] is diamond[0]


def test_missing_dependency_is_a_marked_node() -> None:
    g = G.build_graph([t("1", "0")])
    assert g.nodes["s/0"]["missing"] is True
    assert "(missing)" in G.render_text(g)


def test_levels_and_execution_order(diamond: list[Task]) -> None:
    g = G.build_graph(diamond)
    assert G.levels(g) == [["s/1"], ["s/2", "s/3"], ["s/4"]]
    assert G.execution_order(g) == G.levels(g)
    assert G.render_levels(g) == "1: s/1\n2: s/2, s/3\n3: s/4\n"


def test_levels_sort_numbers_naturally() -> None:
    g = G.build_graph([t("1.10"), t("1.9"), t("1.2")])
    assert G.levels(g) == [["s/1.2", "s/1.9", "s/1.10"]]


def test_critical_path_by_estimated_duration(diamond: list[Task]) -> None:
    path, total = G.critical_path(G.build_graph(diamond))
    assert path == ["s/1", "s/3", "s/4"]
    assert total == 2 + 10 + 60


def test_critical_path_defaults_to_one_per_task() -> None:
    path, total = G.critical_path(G.build_graph([t("a"), t("b", "a"), t("c")]))
    assert (path, total) == (["s/a", "s/b"], 2.0)
    assert G.critical_path(G.build_graph([])) == ([], 0.0)


@pytest.mark.parametrize(("value", "seconds"), [
    (30, 30.0),  # a number is seconds
    ("45", 45.0),  # so is a bare string number
    ("90s", 90.0),
    ("10m", 600.0),
    ("1.5h", 5400.0),
    ("soon", None),  # unreadable: ignored
    (True, None),
])
def test_parse_duration(value: object, seconds: float | None) -> None:
    assert G.parse_duration(value) == seconds


def test_ancestors_and_descendants(diamond: list[Task]) -> None:
    g = G.build_graph(diamond)
    assert G.ancestors(g, "s/4") == {"s/1", "s/2", "s/3"}
    assert G.descendants(g, "s/2") == {"s/4"}
    assert G.ancestors(g, "nope") == set()


def test_cycles_are_found_once_each_with_their_path() -> None:
    g = G.build_graph([t("a", "c"), t("b", "a"), t("c", "b"), t("d", "d"), t("e")])
    cycles = G.find_cycles(g)
    assert cycles == [["s/a", "s/b", "s/c"], ["s/d"]]
    assert G.cycle_text(cycles[0]) == "s/a -> s/b -> s/c -> s/a"
    with pytest.raises(DeadlockDetectedError) as info:
        G.levels(g)
    assert info.value.cycles == cycles
    assert G.render_text(g).startswith("dependency cycles:\n  s/a -> s/b -> s/c -> s/a\n")


def test_to_dot(diamond: list[Task]) -> None:
    diamond[0].state = TaskState.DONE
    diamond[1].title = 'say "hi"'
    dot = G.to_dot(G.build_graph(diamond), name="s")
    assert dot.startswith('digraph "s" {')
    assert '"s/1" [label="1 task 1\\n[done]", fillcolor="#a8e6a3"];' in dot
    assert 'say \\"hi\\"' in dot
    assert '"s/3" -> "s/4";' in dot
    assert dot.rstrip().endswith("}")


def test_to_mermaid(diamond: list[Task]) -> None:
    diamond[2].state = TaskState.FAILED
    text = G.to_mermaid(G.build_graph(diamond))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  t2["3 task 3"]:::failed' in lines
    assert "  t0 --> t1" in lines and "  t2 --> t3" in lines
    assert any(line.startswith("  classDef failed fill:") for line in lines)


def test_render_text(diamond: list[Task]) -> None:
    text = G.render_text(G.build_graph(diamond))
    assert text.splitlines()[0] == "level 1"
    assert "s/4  task 4  <- s/2, s/3" in text
    assert text.rstrip().endswith("critical path (72s): s/1 -> s/3 -> s/4")


@st.composite
def dags(draw: st.DrawFn) -> list[Task]:
    n = draw(st.integers(min_value=1, max_value=25))
    tasks = []
    for i in range(n):
        deps = draw(st.sets(st.integers(min_value=0, max_value=max(0, i - 1)), max_size=3))
        deps = {d for d in deps if d < i}
        seconds = draw(st.integers(min_value=0, max_value=50))
        tasks.append(t(str(i), *[str(d) for d in sorted(deps)], estimated_duration=seconds))
    return tasks


@settings(max_examples=60, deadline=None)
@given(dags())
def test_levels_and_critical_path_properties(tasks: list[Task]) -> None:
    g = G.build_graph(tasks)
    level_of = {k: i for i, level in enumerate(G.levels(g)) for k in level}
    assert set(level_of) == set(g.nodes)
    assert all(level_of[u] < level_of[v] for u, v in g.edges)  # dependencies come first
    path, total = G.critical_path(g)
    assert all(g.has_edge(a, b) for a, b in zip(path, path[1:], strict=False))
    assert total == sum(G.estimated_duration(g.nodes[k]["task"]) for k in path)
    longest: dict[str, float] = {}
    for k in (n for level in G.levels(g) for n in level):  # brute force longest chain
        own = G.estimated_duration(g.nodes[k]["task"])
        longest[k] = own + max((longest[p] for p in g.predecessors(k)), default=0.0)
    assert total == max(longest.values())


def test_natural_key_sorts_by_taskset_then_id() -> None:
    """QA: sig2/a and sig2/b sorted before sig/a."""
    from necrocode.dispatcher.graph import natural_key

    keys = ["sig2/b", "sig/a", "sig2/a", "sig/10", "sig/9", "s/1.10", "s/1.9", "sig10/a"]
    assert sorted(keys, key=natural_key) == [
        "s/1.9", "s/1.10", "sig/9", "sig/10", "sig/a", "sig2/a", "sig2/b", "sig10/a"]
