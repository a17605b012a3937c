"""GroupCommit: concurrent launch workers' READY -> RUNNING writes share transactions, and each
worker still gets its own answer (its task, its refusal, or the registry's error)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from necrocode.dispatcher.engine.group_commit import GroupCommit
from necrocode.dispatcher.errors import InvalidTransitionError, RegistryError
from necrocode.dispatcher.events import EventRecorder
from necrocode.dispatcher.models import EventType, Task, TaskEvent, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.registry._common import TransitionRequest


class Gated(MemoryRegistry):
    """Holds the first write until ``gate`` is set, so the other workers queue up behind it;
    counts the writes, and fails ``transition_many`` while ``broken``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.singles = 0
        self.broken = False

    def _hold(self) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.gate.wait(10)

    def transition(self, *args: Any, **kwargs: Any) -> Task:
        self._hold()
        self.singles += 1
        return super().transition(*args, **kwargs)

    def transition_many(self, requests: Any) -> Any:
        self._hold()
        if self.broken:
            raise RegistryError("database is locked")
        self.batches.append(len(requests))
        return super().transition_many(requests)


def request(key: str) -> TransitionRequest:
    event = TaskEvent(event_type=EventType.TASK_ASSIGNED, task_key=key, message="assigned")
    return TransitionRequest(key, TaskState.RUNNING, TaskState.READY, event,
                             {"runner_id": f"r-{key}"})


def run_workers(reg: Gated, keys: list[str]) -> dict[str, Any]:
    commits = GroupCommit(EventRecorder(reg))
    answers: dict[str, Any] = {}

    def work(key: str) -> None:
        try:
            answers[key] = commits.transition(request(key))
        except Exception as exc:  # the worker's own answer, checked below
            answers[key] = exc

    first = threading.Thread(target=work, args=(keys[0],))
    first.start()
    assert reg.entered.wait(10)  # the first worker leads and is held in its write
    rest = [threading.Thread(target=work, args=(k,)) for k in keys[1:]]
    for t in rest:
        t.start()
    while commits.waiting < len(rest):
        threading.Event().wait(0.005)
    reg.gate.set()
    for t in [first, *rest]:
        t.join(10)
    return answers


@pytest.fixture
def reg() -> Gated:
    r = Gated()
    r.submit_taskset(Taskset(name="ts", tasks=[Task(id=i, title=i) for i in "abcde"]))
    return r


def test_workers_waiting_behind_a_write_share_the_next_transaction(reg: Gated) -> None:
    answers = run_workers(reg, [f"ts/{i}" for i in "abcde"])
    assert reg.singles == 1 and reg.batches == [4]  # the leader's own, then all the others
    for key, task in answers.items():
        assert isinstance(task, Task) and task.state is TaskState.RUNNING
        assert task.runner_id == f"r-{key}"
    assigned = [e.task_key for e in reg.get_events() if e.event_type is EventType.TASK_ASSIGNED]
    assert sorted(assigned) == [f"ts/{i}" for i in "abcde"]  # one event each


def test_a_refusal_is_answered_to_its_worker_alone(reg: Gated) -> None:
    MemoryRegistry.transition(reg, "ts/c", TaskState.CANCELLED, expected=TaskState.READY)
    answers = run_workers(reg, [f"ts/{i}" for i in "abcde"])
    assert isinstance(answers["ts/c"], InvalidTransitionError)
    assert all(isinstance(answers[f"ts/{i}"], Task) for i in "abde")


def test_a_batch_the_registry_cannot_take_is_written_one_by_one(reg: Gated) -> None:
    reg.broken = True
    answers = run_workers(reg, [f"ts/{i}" for i in "abcde"])
    assert reg.batches == [] and reg.singles == 5
    assert all(isinstance(a, Task) and a.state is TaskState.RUNNING for a in answers.values())
