"""One behaviour suite for every TaskRegistry implementation (memory, SQLite, NecroCode files).

Where the NecroCode format cannot do what the others do, the test says so by ``kind``: a
dependency on an id that is not in the taskset is refused at submit (the original's format has
no such dependency, and a file with one is refused when read).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.errors import InvalidTransitionError, RegistryError, TaskNotFoundError
from necrocode.dispatcher.models import (
    ALLOWED_TRANSITIONS,
    EventType,
    Resources,
    Task,
    TaskEvent,
    Taskset,
    TaskState,
    Usage,
)
from necrocode.dispatcher.registry import (
    MemoryRegistry,
    NecroCodeRegistry,
    SQLiteRegistry,
    TaskRegistry,
    open_registry,
)

S = TaskState
KINDS = ["memory", "sqlite", "necrocode"]


def make_registry(kind: str, folder: Path) -> TaskRegistry:
    if kind == "memory":
        return MemoryRegistry()
    if kind == "necrocode":
        return NecroCodeRegistry(folder / "necrocode")
    return SQLiteRegistry(folder / "registry.db")


@pytest.fixture(params=KINDS)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskRegistry]:
    reg = make_registry(request.param, tmp_path)
    yield reg
    reg.close()


@pytest.fixture
def task_factory() -> Callable[..., Task]:
    def make(task_id: str, **overrides: Any) -> Task:
        overrides.setdefault("title", f"task {task_id}")
        return Task(id=task_id, **overrides)

    return make


def submit(registry: TaskRegistry, name: str, *tasks: Task, **kw: Any) -> Any:
    return registry.submit_taskset(Taskset(name=name, tasks=list(tasks), **kw))


def states(registry: TaskRegistry, taskset: str | None = None) -> dict[str, TaskState]:
    return {t.key: t.state for t in registry.list_tasks(taskset=taskset)}


def diamond(registry: TaskRegistry, task_factory: Callable[..., Task]) -> None:
    """a -> b, a -> c, (b, c) -> d."""
    submit(
        registry,
        "dia",
        task_factory("a"),
        task_factory("b", dependencies=["a"]),
        task_factory("c", dependencies=["a"]),
        task_factory("d", dependencies=["b", "c"]),
    )


def finish(registry: TaskRegistry, key: str) -> None:
    registry.transition(key, S.RUNNING, expected=S.READY)
    registry.transition(key, S.DONE, expected=S.RUNNING)


# --- submit -------------------------------------------------------------------------------------
def test_submit_creates_ready_and_blocked(registry: TaskRegistry, task_factory: Any) -> None:
    result = submit(
        registry, "chat", task_factory("1.1"), task_factory("1.2", dependencies=["1.1"])
    )
    assert result.created == ["chat/1.1", "chat/1.2"]
    assert result.ready == ["chat/1.1"]
    assert gc.isenabled()  # paused while planning the submit, restored after
    assert states(registry) == {"chat/1.1": S.READY, "chat/1.2": S.BLOCKED}
    ready = registry.get_task("chat/1.1")
    assert ready.ready_at is not None and ready.taskset == "chat" and ready.tenant == "chat"
    assert registry.get_task("chat/1.2").ready_at is None
    created = registry.get_events(event_types=[EventType.TASK_CREATED])
    assert [e.task_key for e in created] == ["chat/1.1", "chat/1.2"]
    assert [e.details["state"] for e in created] == ["ready", "blocked"]


def test_submit_tenant_defaults_to_taskset_tenant(
    registry: TaskRegistry, task_factory: Any
) -> None:
    submit(registry, "a", task_factory("1"), task_factory("2", tenant="team-b"), tenant="team-a")
    submit(registry, "b", task_factory("1"))
    assert registry.get_task("a/1").tenant == "team-a"
    assert registry.get_task("a/2").tenant == "team-b"
    assert registry.get_task("b/1").tenant == "b"


def test_submit_keeps_all_fields(registry: TaskRegistry, task_factory: Any) -> None:
    task = task_factory(
        "x", description="d", required_skill="python", priority=3,
        resources=Resources(cpu=2.5, memory_mb=2048), command=["echo", "hi"], timeout=60.0,
        max_attempts=5, metadata={"k": [1, 2]}, repo="/r", optional=True,
        estimated_duration=12.5, agent="codex", agent_options={"model": "m"},
        max_cost_usd=1.5, max_tokens=1000, max_turns=20,
    )
    submit(registry, "t", task)
    got = registry.get_task("t/x")
    for name in ("title", "description", "required_skill", "priority", "resources", "command",
                 "timeout", "max_attempts", "metadata", "repo", "optional",
                 "estimated_duration", "agent", "agent_options", "max_cost_usd", "max_tokens",
                 "max_turns"):
        assert getattr(got, name) == getattr(task, name), name


def test_usage_is_stored_and_shown(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("x"))
    assert registry.get_task("t/x").usage is None
    usage = Usage(1200, 300, 100, 0.042, 7)
    registry.update_task("t/x", usage=usage)
    got = registry.get_task("t/x")
    assert got.usage == usage
    assert got.to_dict()["usage"] == {"input_tokens": 1200, "output_tokens": 300,
                                      "cached_tokens": 100, "cost_usd": 0.042, "turns": 7}
    registry.update_task("t/x", usage=(usage + usage).to_dict(), agent_summary="done")
    assert registry.get_task("t/x").usage == usage + usage  # a dict is taken too
    assert registry.get_task("t/x").agent_summary == "done"


def test_resubmit_keeps_state_attempts_and_history(
    registry: TaskRegistry, task_factory: Any
) -> None:
    submit(registry, "t", task_factory("1"), task_factory("2"))
    registry.transition("t/1", S.RUNNING, attempts=1, runner_id="r-1")
    before = len(registry.get_events(task_key="t/1"))
    result = submit(registry, "t", task_factory("1", title="renamed"), task_factory("2"))
    assert result.created == [] and result.updated == ["t/1"] and result.unchanged == ["t/2"]
    got = registry.get_task("t/1")
    assert (got.state, got.attempts, got.runner_id, got.title) == (S.RUNNING, 1, "r-1", "renamed")
    events = registry.get_events(task_key="t/1")
    assert len(events) == before + 1
    assert events[-1].event_type is EventType.TASK_UPDATED
    assert events[-1].details["fields"] == ["title"]


def test_resubmit_with_new_dependencies_recomputes_ready_blocked(
    registry: TaskRegistry, task_factory: Any
) -> None:
    submit(
        registry, "t", task_factory("1"), task_factory("2"), task_factory("3", dependencies=["2"])
    )
    result = submit(
        registry, "t",
        task_factory("1", dependencies=["2"]),  # READY -> BLOCKED
        task_factory("2"),
        task_factory("3"),  # BLOCKED -> READY
    )
    assert sorted(result.updated) == ["t/1", "t/3"]
    assert states(registry) == {"t/1": S.BLOCKED, "t/2": S.READY, "t/3": S.READY}
    kinds = [e.event_type for e in registry.get_events(task_key="t/1")]
    assert kinds[-1] is EventType.TASK_BLOCKED
    assert registry.get_events(task_key="t/3")[-1].event_type is EventType.TASK_READY
    # the dependency table follows: finishing 2 unblocks 1, not 3 (which no longer waits)
    finish(registry, "t/2")
    assert registry.get_task("t/1").state is S.READY


def test_submit_new_done_task_keeps_done_and_frees_dependents(
    registry: TaskRegistry, task_factory: Any
) -> None:
    # a checked Kiro box arrives as DONE
    submit(registry, "k", task_factory("1", state=S.DONE), task_factory("2", dependencies=["1"]))
    assert states(registry) == {"k/1": S.DONE, "k/2": S.READY}


def test_submit_added_task_to_existing_taskset(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("1"))
    finish(registry, "t/1")
    result = submit(registry, "t", task_factory("1"), task_factory("2", dependencies=["1"]))
    assert result.created == ["t/2"] and result.ready == ["t/2"]


def test_submit_refuses_duplicate_ids_and_writes_nothing(
    registry: TaskRegistry, task_factory: Any
) -> None:
    seq = registry.current_seq()
    with pytest.raises(RegistryError, match="'1' appears twice"):
        submit(registry, "t", task_factory("1"), task_factory("1"))
    assert registry.list_tasks() == [] and registry.current_seq() == seq
    assert registry.list_tasksets() == []


def test_tasksets_listed_and_read_in_submit_order(
    registry: TaskRegistry, task_factory: Any
) -> None:
    submit(registry, "b", task_factory("2"), task_factory("10"), task_factory("1"), repo="/r")
    submit(registry, "a", task_factory("1"))
    assert [t.name for t in registry.list_tasksets()] == ["a", "b"]
    got = registry.get_taskset("b")
    assert got is not None and got.repo == "/r"
    assert [t.id for t in got.tasks] == ["2", "10", "1"]
    assert registry.get_taskset("missing") is None


# --- transitions ----------------------------------------------------------------------------
# How to bring a fresh READY task into each state through allowed transitions.
PATHS = {
    S.READY: [],
    S.BLOCKED: [S.BLOCKED],
    S.RUNNING: [S.RUNNING],
    S.DONE: [S.RUNNING, S.DONE],
    S.FAILED: [S.RUNNING, S.FAILED],
    S.CANCELLED: [S.CANCELLED],
}
PAIRS = [(a, b) for a in S for b in S]


@pytest.mark.parametrize(
    ("current", "target"), PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS]
)
def test_transition_table(
    registry: TaskRegistry, task_factory: Any, current: TaskState, target: TaskState
) -> None:
    submit(registry, "t", task_factory("1"))
    for step in PATHS[current]:
        registry.transition("t/1", step)
    seq, n_events = registry.current_seq(), len(registry.get_events())
    event = TaskEvent(EventType.TASK_UPDATED, message="probe")
    if target in ALLOWED_TRANSITIONS[current]:
        got = registry.transition("t/1", target, expected=current, event=event)
        assert got.state is target and registry.get_task("t/1").state is target
        assert registry.current_seq() > seq
        assert registry.get_events(task_key="t/1")[-1].message == "probe"
    else:
        with pytest.raises(InvalidTransitionError) as info:
            registry.transition("t/1", target, event=event)
        err = info.value
        assert (err.key, err.current, err.target) == ("t/1", current.value, target.value)
        assert "t/1" in str(err) and current.value in str(err) and target.value in str(err)
        # nothing written: no state change, no event, no sequence number taken
        assert registry.get_task("t/1").state is current
        assert len(registry.get_events()) == n_events and registry.current_seq() == seq


def test_cas_conflict_with_expected(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("1"))
    registry.transition("t/1", S.RUNNING, expected=S.READY)
    with pytest.raises(InvalidTransitionError, match="expected it to be ready"):
        registry.transition("t/1", S.RUNNING, expected=S.READY)  # the loser of a race
    with pytest.raises(InvalidTransitionError):
        registry.transition("t/1", S.DONE, expected=[S.READY, S.BLOCKED])
    got = registry.transition("t/1", S.DONE, expected=[S.READY, S.RUNNING])
    assert got.state is S.DONE


def test_transition_updates_persist_fields(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("1"))
    registry.transition(
        "t/1", S.RUNNING, runner_id="r-7", assigned_slot="slot-2", reserved_branch="necro/t-1",
        attempts=1, started_at=123.0,
    )
    registry.transition(
        "t/1", S.READY, attempts=2, next_attempt_at=999.5, last_error="exit 3",
        artifacts=["out.txt"], runner_id=None,
    )
    got = registry.get_task("t/1")
    assert (got.attempts, got.next_attempt_at, got.last_error) == (2, 999.5, "exit 3")
    assert (got.assigned_slot, got.reserved_branch, got.runner_id) == ("slot-2", "necro/t-1", None)
    assert got.artifacts == ["out.txt"] and got.started_at == 123.0
    assert got.ready_at is not None and got.ready_at >= got.created_at


def test_entering_ready_stamps_ready_at_unless_given(
    registry: TaskRegistry, task_factory: Any
) -> None:
    submit(registry, "t", task_factory("1"))
    registry.transition("t/1", S.BLOCKED)
    assert registry.transition("t/1", S.READY, ready_at=5.0).ready_at == 5.0
    registry.transition("t/1", S.BLOCKED)
    assert registry.transition("t/1", S.READY).ready_at > 5.0  # type: ignore[operator]


def test_update_task_fields_and_refusals(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("1"))
    seq = registry.current_seq()
    got = registry.update_task(
        "t/1", metadata={"n": 1}, event=TaskEvent(EventType.TASK_UPDATED, message="meta")
    )
    assert got.metadata == {"n": 1} and registry.get_task("t/1").metadata == {"n": 1}
    assert registry.current_seq() > seq
    assert registry.get_events(task_key="t/1")[-1].message == "meta"
    with pytest.raises(RegistryError, match="transition"):
        registry.update_task("t/1", state=S.DONE)
    with pytest.raises(RegistryError, match="colour"):
        registry.update_task("t/1", colour="red")
    with pytest.raises(RegistryError, match="colour"):
        registry.transition("t/1", S.RUNNING, colour="red")
    assert registry.get_task("t/1").state is S.READY


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.get_task("t/nope"),
        lambda r: r.transition("t/nope", S.RUNNING),
        lambda r: r.update_task("t/nope", priority=1),
        lambda r: r.set_priority("t/nope", 1),
    ],
    ids=["get", "transition", "update", "priority"],
)
def test_unknown_key(registry: TaskRegistry, call: Callable[[TaskRegistry], Any]) -> None:
    with pytest.raises(TaskNotFoundError, match="t/nope"):
        call(registry)


def test_failing_transition_writes_no_event(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("1"))
    before = registry.get_events()
    with pytest.raises(InvalidTransitionError):
        registry.transition(
            "t/1", S.DONE, event=TaskEvent(EventType.TASK_COMPLETED, message="should not exist")
        )
    assert registry.get_events() == before


def test_transition_event_bound_to_task(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("1"))
    registry.transition(
        "t/1", S.RUNNING,
        event=TaskEvent(EventType.TASK_ASSIGNED, runner_id="r", slot_id="s", pool="local",
                        details={"attempt": 1}),
    )
    (event,) = registry.get_events(event_types=["TaskAssigned"])
    got = (event.task_key, event.runner_id, event.slot_id, event.pool)
    assert got == ("t/1", "r", "s", "local")
    assert event.details == {"attempt": 1} and event.seq is not None


# --- dependencies -------------------------------------------------------------------------------
def test_done_unblocks_dependents_only_when_all_done(
    registry: TaskRegistry, task_factory: Any
) -> None:
    diamond(registry, task_factory)
    assert states(registry) == {
        "dia/a": S.READY, "dia/b": S.BLOCKED, "dia/c": S.BLOCKED, "dia/d": S.BLOCKED,
    }
    finish(registry, "dia/a")
    assert states(registry)["dia/b"] is S.READY and states(registry)["dia/c"] is S.READY
    ready_events = registry.get_events(event_types=[EventType.TASK_READY])
    assert sorted(e.task_key for e in ready_events) == ["dia/b", "dia/c"]  # type: ignore[type-var]
    finish(registry, "dia/b")
    assert states(registry)["dia/d"] is S.BLOCKED
    finish(registry, "dia/c")
    d = registry.get_task("dia/d")
    assert d.state is S.READY and d.ready_at is not None
    last = registry.get_events(task_key="dia/d")[-1]
    assert last.event_type is EventType.TASK_READY and "dia/c" in last.message


def test_failed_dependency_keeps_dependent_blocked(
    registry: TaskRegistry, task_factory: Any
) -> None:
    diamond(registry, task_factory)
    registry.transition("dia/a", S.RUNNING)
    registry.transition("dia/a", S.FAILED)
    assert states(registry)["dia/b"] is S.BLOCKED


def test_missing_dependency_never_unblocks(registry: TaskRegistry, task_factory: Any) -> None:
    if isinstance(registry, NecroCodeRegistry):  # its format cannot keep one: refused
        with pytest.raises(RegistryError, match="'ghost', not a task of the taskset"):
            submit(registry, "t", task_factory("1"), task_factory("2", dependencies=["ghost"]))
        assert registry.list_tasks() == [] and registry.list_tasksets() == []
        return
    submit(registry, "t", task_factory("1"), task_factory("2", dependencies=["1", "ghost"]))
    finish(registry, "t/1")
    assert registry.get_task("t/2").state is S.BLOCKED


def test_cross_taskset_dependency_by_key(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "base", task_factory("1"))
    submit(registry, "app", task_factory("1", dependencies=["base/1"]))
    assert registry.get_task("app/1").state is S.BLOCKED
    finish(registry, "base/1")
    assert registry.get_task("app/1").state is S.READY


# --- change feed ----------------------------------------------------------------------------
def test_changes_since_is_incremental_and_ordered(
    registry: TaskRegistry, task_factory: Any
) -> None:
    submit(registry, "t", *[task_factory(str(i)) for i in range(6)])
    first = registry.changes_since(0)
    assert sorted(t.key for t in first.tasks) == [f"t/{i}" for i in range(6)]
    assert first.seq == registry.current_seq()
    assert registry.changes_since(first.seq).tasks == []
    registry.transition("t/3", S.RUNNING)
    registry.set_priority("t/1", 9)
    registry.transition("t/3", S.DONE)  # changed twice: listed once, at its latest change
    batch = registry.changes_since(first.seq)
    assert [t.key for t in batch.tasks] == ["t/1", "t/3"]
    assert batch.tasks[1].state is S.DONE and batch.tasks[0].priority == 9
    assert batch.seq == registry.current_seq() > first.seq


def test_changes_since_may_leave_out_the_versions_the_caller_holds(
    registry: TaskRegistry, task_factory: Any
) -> None:
    """``known``: the caller's own write's echo may be left out (the sequence moves past it);
    a later change of the same task by anyone else is in the feed."""
    submit(registry, "t", *[task_factory(str(i)) for i in range(3)])
    seq = registry.changes_since(0).seq
    mine = registry.transition("t/1", S.RUNNING)
    held = {mine.key: (mine.state.value, mine.updated_at)}

    def known(key: str, state: str, updated_at: float | None) -> bool:
        return held.get(key) == (state, updated_at)

    registry.set_priority("t/2", 5)
    batch = registry.changes_since(seq, known=known)
    assert "t/2" in [t.key for t in batch.tasks] and batch.seq == registry.current_seq()
    assert all(t.key != "t/1" or t.state is S.RUNNING for t in batch.tasks)
    if isinstance(registry, SQLiteRegistry):  # the engine's registry: the echo is not decoded
        assert [t.key for t in batch.tasks] == ["t/2"]
    registry.transition("t/1", S.DONE)  # someone else moved it on: a version we do not hold
    after = registry.changes_since(batch.seq, known=known)
    assert [(t.key, t.state) for t in after.tasks] == [("t/1", S.DONE)]


def test_changes_since_pages_with_limit(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", *[task_factory(str(i)) for i in range(7)])
    seen: list[str] = []
    seq = 0
    while True:
        batch = registry.changes_since(seq, limit=3)
        if not batch.tasks:
            break
        assert len(batch.tasks) <= 3 and batch.seq > seq
        seen += [t.key for t in batch.tasks]
        seq = batch.seq
    assert seen == [f"t/{i}" for i in range(7)]
    assert seq == registry.current_seq()
    assert registry.changes_since(0, limit=0).tasks == []


def test_current_seq_grows_with_every_write(registry: TaskRegistry, task_factory: Any) -> None:
    s0 = registry.current_seq()
    submit(registry, "t", task_factory("1"))
    s1 = registry.current_seq()
    registry.record_event(TaskEvent(EventType.DISPATCHER_STARTED))
    s2 = registry.current_seq()
    registry.update_task("t/1", title="x")
    s3 = registry.current_seq()
    assert s0 < s1 < s2 < s3


# --- queries --------------------------------------------------------------------------------
@pytest.fixture
def populated(registry: TaskRegistry, task_factory: Any) -> TaskRegistry:
    submit(
        registry, "a",
        task_factory("1", required_skill="python", priority=1),
        task_factory("2", required_skill="python", priority=5),
        task_factory("3", required_skill="db", priority=5, tenant="team-x"),
        task_factory("4", required_skill="db", dependencies=["1"]),
    )
    submit(registry, "b", task_factory("1", required_skill="python", priority=3))
    registry.transition("a/1", S.RUNNING)
    return registry


def test_list_filters(populated: TaskRegistry) -> None:
    def keys(**kw: Any) -> list[str]:
        return [t.key for t in populated.list_tasks(**kw)]

    assert keys() == ["a/1", "a/2", "a/3", "a/4", "b/1"]
    assert keys(state=S.READY) == ["a/2", "a/3", "b/1"]
    assert keys(state=[S.RUNNING, S.BLOCKED]) == ["a/1", "a/4"]
    assert keys(skill="python") == ["a/1", "a/2", "b/1"]
    assert keys(taskset="b") == ["b/1"]
    assert keys(tenant="team-x") == ["a/3"]
    assert keys(tenant="a", skill="db") == ["a/4"]
    assert keys(state=S.DONE) == []


def test_list_sort_by_priority_then_ready_at(populated: TaskRegistry) -> None:
    populated.transition("a/2", S.BLOCKED)
    populated.transition("a/2", S.READY)  # ready later than a/3, same priority
    order = [t.key for t in populated.list_tasks(state=S.READY, order_by="priority")]
    assert order == ["a/3", "a/2", "b/1"]
    everything = [t.key for t in populated.list_tasks(order_by="priority")]
    assert everything[-1] == "a/4"  # never ready: after the others of priority 0


def test_list_sort_by_updated_and_bad_order(populated: TaskRegistry) -> None:
    populated.set_priority("a/4", 1)
    assert populated.list_tasks(order_by="updated")[0].key == "a/4"
    with pytest.raises(RegistryError, match="priority"):
        populated.list_tasks(order_by="colour")


def test_list_pagination(populated: TaskRegistry) -> None:
    full = [t.key for t in populated.list_tasks(order_by="priority")]
    pages = [
        [t.key for t in populated.list_tasks(order_by="priority", limit=2, offset=o)]
        for o in (0, 2, 4)
    ]
    assert pages[0] + pages[1] + pages[2] == full
    assert [len(p) for p in pages] == [2, 2, 1]
    assert populated.list_tasks(offset=3) == populated.list_tasks()[3:]


def test_count_tasks(populated: TaskRegistry) -> None:
    counts = populated.count_tasks()
    assert set(counts) == set(S)
    assert counts[S.READY] == 3 and counts[S.RUNNING] == 1 and counts[S.BLOCKED] == 1
    assert counts[S.DONE] == 0
    assert populated.count_tasks(taskset="b") == {**dict.fromkeys(S, 0), S.READY: 1}


def test_get_tasks_leaves_missing_out(populated: TaskRegistry) -> None:
    got = populated.get_tasks(["b/1", "nope/1", "a/2"])
    assert list(got) == ["b/1", "a/2"]


def test_returned_tasks_are_copies(populated: TaskRegistry) -> None:
    task = populated.get_task("a/2")
    task.metadata["x"] = 1
    task.dependencies.append("zzz")
    task.priority = 100
    again = populated.get_task("a/2")
    assert again.metadata == {} and again.dependencies == [] and again.priority == 5


# --- priority ---------------------------------------------------------------------------------
def test_set_priority_persisted_and_evented(registry: TaskRegistry, task_factory: Any) -> None:
    submit(registry, "t", task_factory("1", priority=2))
    got = registry.set_priority("t/1", 7)
    assert got.priority == 7 and registry.get_task("t/1").priority == 7
    (event,) = registry.get_events(event_types=[EventType.PRIORITY_CHANGED])
    assert event.task_key == "t/1" and event.details == {"old": 2, "new": 7}


# --- events -----------------------------------------------------------------------------------
def test_events_by_task_time_type_and_seq(registry: TaskRegistry) -> None:
    recorded = [
        registry.record_event(TaskEvent(EventType.RUNNER_STARTED, "t/1", timestamp=100.0)),
        registry.record_event(TaskEvent(EventType.RUNNER_FAILED, "t/1", timestamp=200.0,
                                        duration=3.5, details={"exit_code": 2})),
        registry.record_event(TaskEvent(EventType.RUNNER_STARTED, "t/2", timestamp=300.0)),
    ]
    registry.record_events(
        [TaskEvent(EventType.DISPATCHER_PAUSED, timestamp=400.0),
         TaskEvent(EventType.DISPATCHER_RESUMED, timestamp=500.0)]
    )
    seqs = [e.seq for e in recorded]
    assert all(s is not None for s in seqs) and seqs == sorted(seqs)  # type: ignore[type-var]

    def stamps(**kw: Any) -> list[float]:
        return [e.timestamp for e in registry.get_events(**kw)]

    assert stamps() == [100.0, 200.0, 300.0, 400.0, 500.0]
    assert stamps(task_key="t/1") == [100.0, 200.0]
    assert stamps(since=200.0, until=400.0) == [200.0, 300.0]  # [since, until)
    assert stamps(event_types=[EventType.RUNNER_STARTED]) == [100.0, 300.0]
    assert stamps(event_types=["DispatcherPaused", EventType.RUNNER_FAILED]) == [200.0, 400.0]
    assert stamps(after_seq=recorded[1].seq) == [300.0, 400.0, 500.0]
    assert stamps(newest_first=True, limit=2) == [500.0, 400.0]
    failed = registry.get_events(event_types=[EventType.RUNNER_FAILED])[0]
    assert failed.duration == 3.5 and failed.details == {"exit_code": 2}
    assert failed == recorded[1]


# --- open_registry --------------------------------------------------------------------------
def test_open_registry_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_registry(":memory:"), MemoryRegistry)
    nested = tmp_path / "deep" / "er" / "reg.db"
    reg = open_registry(nested)
    assert isinstance(reg, SQLiteRegistry) and nested.exists()
    reg.close()
    monkeypatch.setenv("NECROCODE_REGISTRY", str(tmp_path / "env" / "r.db"))
    reg = open_registry()
    assert isinstance(reg, SQLiteRegistry) and reg.path == tmp_path / "env" / "r.db"
    reg.close()
    assert isinstance(MemoryRegistry(), TaskRegistry)


# --- property: the change feed replays to the final state -----------------------------------
@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_change_feed_replays_to_final_state(
    kind: str, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    reg = make_registry(kind, tmp_path_factory.mktemp("feed"))
    try:
        ids = [str(i) for i in range(6)]
        deps = {"2": ["0"], "3": ["0", "1"], "5": ["4"]}
        submit(reg, "p", *[Task(id=i, dependencies=deps.get(i, [])) for i in ids])
        mirror: dict[str, dict[str, Any]] = {}
        cursor = 0
        page = data.draw(st.sampled_from([None, 1, 2, 5]), label="page size")

        def poll() -> None:
            nonlocal cursor
            while True:
                batch = reg.changes_since(cursor, limit=page)
                for t in batch.tasks:
                    mirror[t.key] = t.to_dict()
                assert batch.seq >= cursor
                cursor = batch.seq
                if not batch.tasks:
                    return

        for _ in range(data.draw(st.integers(0, 25), label="steps")):
            key = f"p/{data.draw(st.sampled_from(ids), label='task')}"
            current = reg.get_task(key).state
            action = data.draw(st.sampled_from(["move", "priority", "poll"]), label="action")
            if action == "poll":
                poll()
            elif action == "priority":
                reg.set_priority(key, data.draw(st.integers(-5, 5), label="priority"))
            elif ALLOWED_TRANSITIONS[current]:
                target = data.draw(st.sampled_from(sorted(ALLOWED_TRANSITIONS[current])))
                reg.transition(key, target, expected=current)
        poll()
        assert mirror == {t.key: t.to_dict() for t in reg.list_tasks()}
    finally:
        reg.close()


# --- batched transitions ------------------------------------------------------------------------
def test_transition_many_applies_in_order_and_answers_refusals_in_place(
    registry: TaskRegistry, task_factory: Any
) -> None:
    from necrocode.dispatcher.registry import TransitionRequest

    diamond(registry, task_factory)
    submit(registry, "t", task_factory("1"), task_factory("2"))
    seq = registry.current_seq()
    results = registry.transition_many([  # type: ignore[attr-defined]
        TransitionRequest("t/1", S.RUNNING, expected=S.READY, updates={"runner_id": "r1"},
                          event=TaskEvent(EventType.TASK_ASSIGNED, runner_id="r1")),
        TransitionRequest("t/2", S.DONE, expected=S.RUNNING),  # refused: t/2 is READY
        TransitionRequest("t/nope", S.RUNNING),  # refused: unknown
        TransitionRequest("dia/a", S.RUNNING, expected=S.READY),
        TransitionRequest("dia/a", S.DONE, expected=S.RUNNING,  # sees the request before it
                          event=TaskEvent(EventType.RUNNER_COMPLETED, message="exit 0")),
        TransitionRequest("t/1", S.DONE, expected=S.RUNNING, updates={"last_error": None}),
    ])
    assert [type(r).__name__ for r in results] == [
        "Task", "InvalidTransitionError", "TaskNotFoundError", "Task", "Task", "Task"]
    first = results[0]
    assert isinstance(first, Task) and first.state is S.RUNNING and first.runner_id == "r1"
    assert registry.get_task("t/1").state is S.DONE and registry.get_task("t/1").runner_id == "r1"
    assert registry.get_task("t/2").state is S.READY
    assert states(registry, "dia") == {
        "dia/a": S.DONE, "dia/b": S.READY, "dia/c": S.READY, "dia/d": S.BLOCKED}
    # the same events as one transition() each: assignment, completion, dependents' TaskReady
    kinds = [(e.task_key, e.event_type) for e in registry.get_events(after_seq=seq)]
    assert kinds == [("t/1", EventType.TASK_ASSIGNED), ("dia/a", EventType.RUNNER_COMPLETED),
                     ("dia/b", EventType.TASK_READY), ("dia/c", EventType.TASK_READY)]
    changed = {t.key for t in registry.changes_since(seq).tasks}
    assert changed == {"t/1", "dia/a", "dia/b", "dia/c"}
    assert registry.transition_many([]) == []  # type: ignore[attr-defined]


def test_transition_many_with_a_bad_field_writes_nothing(
    registry: TaskRegistry, task_factory: Any
) -> None:
    from necrocode.dispatcher.registry import TransitionRequest

    submit(registry, "t", task_factory("1"), task_factory("2"))
    seq = registry.current_seq()
    with pytest.raises(RegistryError, match="state"):
        registry.transition_many([  # type: ignore[attr-defined]
            TransitionRequest("t/1", S.RUNNING),
            TransitionRequest("t/2", S.RUNNING, updates={"state": "done"}),
        ])
    assert registry.current_seq() == seq and states(registry, "t") == {
        "t/1": S.READY, "t/2": S.READY}


# --- work of a task (R21) -----------------------------------------------------------------------
def test_work_fields_are_stored_and_kept_by_a_resubmit(
    registry: TaskRegistry, task_factory: Any
) -> None:
    submit(registry, "w", task_factory("1", paths=("src/api/**", "docs/*.md")))
    assert registry.get_task("w/1").paths == ("src/api/**", "docs/*.md")
    registry.transition("w/1", S.RUNNING, expected=S.READY)
    work = {"branch": "feature/task-w-1", "base": "a" * 40, "head": "b" * 40, "commits": 2,
            "files_changed": ["src/api/x.py", "docs/a.md"], "landed": None, "gate_failed": None}
    got = registry.transition("w/1", S.DONE, expected=S.RUNNING, **work)
    assert got.files_changed == ("src/api/x.py", "docs/a.md")  # stored as a tuple
    registry.update_task("w/1", landed="necrocode/w", gate_failed=None)
    # a resubmit changes the definition (paths) and keeps the recorded work
    submit(registry, "w", task_factory("1", paths=["src/**"]))
    stored = registry.get_task("w/1")
    assert stored.paths == ("src/**",)
    assert (stored.branch, stored.base, stored.head, stored.commits, stored.landed) == (
        "feature/task-w-1", "a" * 40, "b" * 40, 2, "necrocode/w")
    assert stored.files_changed == ("src/api/x.py", "docs/a.md")
    as_json = stored.to_dict()
    assert as_json["files_changed"] == ("src/api/x.py", "docs/a.md")
    assert Task.from_dict({**as_json, "files_changed": list(as_json["files_changed"])}) == stored
    fields = registry.get_events(task_key="w/1", event_types=[EventType.TASK_UPDATED])[-1]
    assert fields.details["fields"] == ["paths"]
