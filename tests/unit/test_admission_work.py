"""Admission and the work of tasks, on a virtual clock: declared paths keep overlapping tasks
apart (claims follow capacity), a start conflict holds a task until an operator acts."""

from __future__ import annotations

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.engine.admission import Admission
from necrocode.dispatcher.engine.taskbook import TaskBook, ViewChanges
from necrocode.dispatcher.models import AgentPool, PoolType, Task, TaskState
from necrocode.dispatcher.pool_manager import AgentPoolManager
from necrocode.dispatcher.scheduler import Scheduler
from necrocode.dispatcher.task_queue import TaskQueue

NOW = 1_000.0


def admission(concurrency: int = 4) -> tuple[Admission, TaskBook]:
    cfg = DispatcherConfig(agent_pools=[AgentPool(name="p", type=PoolType.LOCAL_PROCESS,
                                                  max_concurrency=concurrency)],
                           skill_mapping={"default": ["p"]}, max_global_concurrency=10)
    views = ViewChanges()
    book = TaskBook(views, NOW)
    running: set[str] = set()
    adm = Admission(TaskQueue(), Scheduler(cfg.scheduling_policy, cfg), AgentPoolManager(cfg),
                    book, views, running.__contains__)
    return adm, book


def task(i: str, paths: tuple[str, ...] = (), priority: int = 0, repo: str = "/r") -> Task:
    return Task(id=i, taskset="ts", title=i, paths=paths, priority=priority, repo=repo,
                state=TaskState.READY, created_at=NOW)


def offer(adm: Admission, book: TaskBook, *tasks: Task) -> None:
    for t in tasks:
        book.apply(t)
        adm.place(t, NOW)


def test_two_tasks_of_one_round_with_overlapping_paths_do_not_both_start() -> None:
    adm, book = admission()
    a, b = task("a", ("src/api/**",), 2), task("b", ("src/api/x.py",), 1)
    c = task("c", ("src/api/x.py",), 0, repo="/other")  # another repository: no overlap
    offer(adm, book, a, b, c)
    started = [t.key for t, _ in adm.round(NOW)]
    assert started == ["ts/a", "ts/c"]
    wait = adm.path_wait_of("ts/b")
    assert wait is not None and wait.reason == "waits for ts/a: both touch src/api/x.py"
    assert "ts/b" not in adm.queue and adm.round(NOW) == []  # no scan of it per round
    pool = adm.pools.pools["p"]
    adm.runner_ended(pool.name, a, 1.0)  # a's capacity, and its paths, come back
    assert adm.path_wait_of("ts/b") is None and [t.key for t, _ in adm.round(NOW)] == ["ts/b"]
    assert set(adm.claimed_paths()) == {"ts/b", "ts/c"}


def test_tasks_without_paths_and_a_launch_that_failed() -> None:
    adm, book = admission()
    x, y = task("x"), task("y")
    offer(adm, book, x, y)
    assert len(adm.round(NOW)) == 2 and adm.claimed_paths() == {}
    p, q = task("p", ("docs",)), task("q", ("docs/a.md",))
    offer(adm, book, p)
    (decided, pool), = adm.round(NOW)
    adm.give_back(pool.name, decided)  # its launch did not happen
    offer(adm, book, q)
    assert [t.key for t, _ in adm.round(NOW)] == ["ts/q"]


def test_a_start_conflict_holds_the_task_until_released() -> None:
    adm, book = admission()
    z = task("z")
    offer(adm, book, z)
    (decided, pool), = adm.round(NOW)
    adm.give_back(pool.name, decided)
    assert adm.hold_conflict(z, "dependencies ts/x and ts/y conflict in f") is True
    assert adm.hold_conflict(z, "dependencies ts/x and ts/y conflict in f") is False  # seen
    adm.slot_may_have_freed()
    adm.place(z, NOW)  # its echo, or a priority change: still held
    assert "ts/z" not in adm.queue and adm.conflict_of("ts/z") is not None
    assert adm.release_conflict("ts/z") and "ts/z" in adm.queue
    assert adm.conflict_of("ts/z") is None and adm.release_conflict("ts/z") is False
    adm.hold_conflict(z, "another reason")
    gone = z.copy(state=TaskState.CANCELLED)
    book.apply(gone)
    adm.place(gone, NOW)
    assert adm.conflict_of("ts/z") is None
