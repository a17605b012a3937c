"""Task and Resources are slots dataclasses: no per-instance ``__dict__``, copies that carry
every field, and the usual ways of copying and storing a task keep working."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
from necrocode.dispatcher.models import Resources, Task, TaskState, Usage, shallow_copy
from necrocode.dispatcher.registry._common import clone


def full_task() -> Task:
    return Task(id="1.2", title="t", taskset="s", dependencies=["1.1"], priority=3,
                resources=Resources(2.0, 1024), command=["true"], metadata={"k": [1]},
                paths=("src/*",), usage=Usage(1, 2), agent_options={"model": "m"},
                state=TaskState.RUNNING, attempts=2, from_base=True)


def test_no_instance_dict() -> None:
    task = full_task()
    assert not hasattr(task, "__dict__")
    assert not hasattr(task.resources, "__dict__")
    with pytest.raises(AttributeError):
        task.no_such_field = 1  # type: ignore[attr-defined]


def test_shallow_copy_carries_every_field_and_shares_containers() -> None:
    task = full_task()
    new = shallow_copy(task)
    assert new is not task and new == task
    for f in dataclasses.fields(Task):
        assert getattr(new, f.name) is getattr(task, f.name), f.name


def test_clone_copies_containers_and_applies_changes() -> None:
    task = full_task()
    new = clone(task, priority=9)
    assert new.priority == 9 and task.priority == 3
    assert new.dependencies == task.dependencies and new.dependencies is not task.dependencies
    assert new.metadata is not task.metadata and new.resources is not task.resources
    assert new.command is not task.command
    assert dataclasses.replace(new, priority=3) == task


def test_copy_pickle_and_replace_keep_working() -> None:
    task = full_task()
    assert copy.copy(task) == task
    assert copy.deepcopy(task) == task
    assert pickle.loads(pickle.dumps(task)) == task
    assert task.copy(title="u").title == "u"
    assert Task.from_dict(task.to_dict()) == task


def test_keys_are_shared_strings() -> None:
    from necrocode.dispatcher.models import task_key

    a, b = Task(id="x", taskset="s"), Task(id="x", taskset="s")
    assert a.key == "s/x" and a.key is b.key is task_key("s", "x")
