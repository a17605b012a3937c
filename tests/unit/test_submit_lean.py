"""A submit's quick paths give what the general ones give: a task of common keys built without
the general checks, the cycle check of a file listed in dependency order, and the created
tasks' rows written from the submitted tasks without a copy
(the SQLite registry) against the copies the in-memory registry stores."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.agents.checks import task_agent_fields
from necrocode.dispatcher.errors import TasksetError
from necrocode.dispatcher.graph import build_graph, find_cycles
from necrocode.dispatcher.models import Task, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry, SQLiteRegistry
from necrocode.dispatcher.taskset_task import Collector, parse_task, prototype
from necrocode.dispatcher.taskset_validate import validate_taskset
from necrocode.dispatcher.yaml_source import YamlDocument

INHERITED = task_agent_fields({}, {}, (), lambda *a: None)


def random_taskset(rng: random.Random, n: int) -> Taskset:
    tasks = []
    for i in range(n):
        picks = rng.sample(range(n), k=min(n, rng.randint(0, 3)))
        deps = [str(j) for j in picks if j != i or rng.random() < 0.1]
        tasks.append(Task(id=str(i), title=f"t{i}", taskset="s", dependencies=deps))
    order = list(range(n))
    if rng.random() < 0.5:  # in dependency order or not
        rng.shuffle(order)
    return Taskset(name="s", tasks=[tasks[i] for i in order])


def test_the_cycle_check_agrees_with_find_cycles() -> None:
    rng = random.Random(7)
    for _ in range(400):
        taskset = random_taskset(rng, rng.randint(1, 12))
        for t in taskset.tasks:  # only edges backwards in the list, sometimes
            if rng.random() < 0.5:
                before = {x.id for x in taskset.tasks[: taskset.tasks.index(t)]}
                t.dependencies = [d for d in t.dependencies if d in before]
        cycles = find_cycles(build_graph(taskset.tasks))  # self-dependencies included
        if cycles:
            with pytest.raises(TasksetError):
                validate_taskset(taskset)
        else:
            validate_taskset(taskset)


def stored(registry: SQLiteRegistry | MemoryRegistry) -> list[dict[str, object]]:
    taskset = registry.get_taskset("s")
    assert taskset is not None
    return [{f.name: getattr(t, f.name) for f in dataclasses.fields(t)}
            for t in taskset.tasks]


def test_created_rows_are_the_stored_copies(tmp_path: Path) -> None:
    tasks = [
        Task(id="a", title="A", taskset="old", tenant="old"),  # tenant defaulted: the new one
        Task(id="b", title="B", dependencies=["a"], tenant="team"),
        Task(id="c", title="C", state=TaskState.DONE),  # finished at the submit's time
        Task(id="d", title="D", state=TaskState.DONE, finished_at=5.0, ready_at=3.0),
        Task(id="e", title="E", state=TaskState.CANCELLED, dependencies=["c"]),
        Task(id="f", title="F", dependencies=["c", "d"], metadata={"k": [1]}),
    ]
    before = [dataclasses.replace(t) for t in tasks]
    sqlite, memory = SQLiteRegistry(tmp_path / "r.db"), MemoryRegistry()
    for registry in (sqlite, memory):
        registry.submit_taskset(Taskset(name="s", tenant="", tasks=tasks))
    assert tasks == before  # the submitted tasks are not changed
    a, b = stored(sqlite), stored(memory)
    for row in a + b:
        assert isinstance(row["created_at"], float)
        row["created_at"] = row["updated_at"] = 0.0  # one submit's time each
        for key in ("ready_at", "finished_at"):
            if row[key] not in (None, 3.0, 5.0):
                row[key] = "now"
    assert a == b
    by_id = {row["id"]: row for row in a}
    assert by_id["a"]["tenant"] == "s" and by_id["b"]["tenant"] == "team"
    assert by_id["c"]["finished_at"] == "now" and by_id["d"]["finished_at"] == 5.0
    assert by_id["f"]["state"] is TaskState.READY and by_id["f"]["ready_at"] == "now"
    assert by_id["b"]["state"] is TaskState.BLOCKED and by_id["e"]["state"] is TaskState.CANCELLED
    sqlite.close()


VALUES = st.one_of(st.none(), st.sampled_from(["", "x", "1.1", "a/b", " x", "..", "task 1"]),
                   st.integers(-2, 2), st.sampled_from([10**9, 7, True, 1.5, -1]),
                   st.lists(st.sampled_from(["a", "b", "", 1, None]), max_size=3))
PLAIN = st.fixed_dictionaries({"id": st.sampled_from(["x", "1.1"]), "title": st.just("T")})
ITEMS = st.tuples(st.one_of(PLAIN, st.just({})), st.dictionaries(st.sampled_from(
    ["id", "title", "description", "skill", "tenant", "priority", "estimate", "depends_on"]),
    VALUES, max_size=4)).map(lambda pair: {**pair[0], **pair[1]})


@settings(max_examples=1000, deadline=None)
@given(ITEMS)
def test_the_quick_lane_builds_what_the_general_checks_build(item: dict[str, Any]) -> None:
    taskset = Taskset(name="s", tenant="t", repo="/r")
    doc = YamlDocument({"tasks": [item]})
    fields = [f.name for f in dataclasses.fields(Task) if f.name not in ("created_at",
                                                                        "updated_at")]
    out = []
    for proto in (prototype(taskset), None):
        problems = Collector("f", lambda path: "f")
        task = parse_task(item, ("tasks", 0), doc, problems, taskset, None, {}, INHERITED,
                          proto)
        out.append((None if task is None else [getattr(task, f) for f in fields],
                    problems.problems))
    assert out[0] == out[1]
