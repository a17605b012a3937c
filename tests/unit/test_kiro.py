"""Kiro tasks.md import: checkboxes, numbering, optional items, details, dependencies."""

from __future__ import annotations

from pathlib import Path

import pytest
from necrocode.dispatcher.errors import TasksetError
from necrocode.dispatcher.graph import build_graph, find_cycles
from necrocode.dispatcher.models import TaskState
from necrocode.dispatcher.registry.kiro import load_kiro_file, parse_kiro
from necrocode.dispatcher.registry.memory import MemoryRegistry

PLAN = """\
# Implementation Plan

- [x] 1. Set up the project structure
  - Create the package layout
  - _Requirements: 1.1, 1.2_

- [ ] 2. Implement the data models
  - [ ] 2.1 Create the User model
    - Validation rules
    - _Requirements: 2.1_
  - [ ]* 2.2 Write unit tests for the models
  - [-] 2.3. Create the Message model
- [ ] 3. Wire the API
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / ".kiro" / "specs" / "chat-app" / "tasks.md"
    path.parent.mkdir(parents=True)
    path.write_text(PLAN)
    return path


def test_mapping(spec: Path) -> None:
    taskset = load_kiro_file(spec)
    assert taskset.name == "chat-app"  # the spec folder
    tasks = {t.id: t for t in taskset.tasks}
    assert list(tasks) == ["1", "2", "2.1", "2.2", "2.3", "3"]
    assert tasks["1"].state is TaskState.DONE
    assert tasks["2.3"].state is TaskState.READY  # [-] in progress is not done
    assert tasks["2.1"].title == "Create the User model"
    assert tasks["2.3"].title == "Create the Message model"  # trailing dot of "2.3." dropped
    assert tasks["2.2"].optional is True and tasks["2.1"].optional is False
    assert tasks["1"].description == "Create the package layout\nRequirements: 1.1, 1.2"
    assert tasks["1"].metadata["requirements"] == ["1.1", "1.2"]
    assert tasks["2.1"].metadata["kiro_line"] == 8


def test_sequential_dependencies(spec: Path) -> None:
    deps = {t.id: t.dependencies for t in load_kiro_file(spec).tasks}
    assert deps == {
        "1": [],
        "2": ["1", "2.1", "2.3"],  # after the step before it, and its required sub-tasks
        "2.1": ["1"],  # a first sub-task waits for what its parent waits for
        "2.2": ["2.1"],  # optional: still ordered
        "2.3": ["2.1"],  # nothing depends on the optional 2.2
        "3": ["2"],
    }
    assert find_cycles(build_graph(load_kiro_file(spec).tasks)) == []


def test_parallel_mode_only_links_parents_to_sub_tasks(spec: Path) -> None:
    deps = {t.id: t.dependencies for t in load_kiro_file(spec, sequential=False).tasks}
    assert deps == {"1": [], "2": ["2.1", "2.3"], "2.1": [], "2.2": [], "2.3": [], "3": []}


def test_taskset_name_override_and_stem(tmp_path: Path) -> None:
    path = tmp_path / "plan.md"
    path.write_text("- [ ] 1. Only\n")
    assert load_kiro_file(path).name == "plan"
    assert load_kiro_file(path, taskset_name="mine").name == "mine"


def test_unnumbered_items_and_nested_numbers() -> None:
    taskset = parse_kiro("- [ ] Write docs\n- [x] 1 First\n  - [ ] 1.1.1 Deep\n", "s")
    tasks = {t.id: t for t in taskset.tasks}
    assert set(tasks) == {"line1", "1", "1.1.1"}
    assert tasks["1"].dependencies == ["line1", "1.1.1"]  # 1.1.1's parent is 1 (no 1.1)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(TasksetError, match="Kiro tasks file not found"):
        load_kiro_file(tmp_path / "nope.md")
    with pytest.raises(TasksetError, match="no checkbox items found"):
        parse_kiro("# just a heading\n", "s")
    with pytest.raises(TasksetError) as info:
        parse_kiro("- [ ] 1. a\n- [ ] 1. b\n", "s", source="t.md")
    assert str(info.value.problems[0]) == (
        "t.md:2: tasks[1]: number 1 used twice (first at line 1) (renumber one of them)")


def test_submit_keeps_done_and_unblocks(spec: Path) -> None:
    registry = MemoryRegistry()
    registry.submit_taskset(load_kiro_file(spec))
    state = {t.id: t.state for t in registry.list_tasks()}
    assert state["1"] is TaskState.DONE
    assert state["2.1"] is TaskState.READY
    assert state["2.3"] is TaskState.BLOCKED
    assert state["3"] is TaskState.BLOCKED
