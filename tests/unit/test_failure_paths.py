"""Adversarial tests of the engine's failure paths: "nothing lost, nothing doubled".

Every failure path (launch error, slot error, runner crash, hung runner, registry error, double
completion, cancel/pause races, shutdown, restart) must leave each task in a true state, release
its slot and pool capacity exactly once, keep the counters exact, and never let one task run twice
at the same time.

The engine runs for real (DispatcherCore + MemoryRegistry + a recording FakeLauncher). Tests never
assert on timing: they wait for the engine to *settle* (see :func:`settle`, which inspects the
engine from its own thread through its ``call`` command) and then check invariants.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.engine.api_bridge import EngineApiHandler
from necrocode.dispatcher.engine.diagnostics import EngineDiagnostics
from necrocode.dispatcher.errors import DispatcherError, RegistryError, RunnerLaunchError
from necrocode.dispatcher.launchers.base import RunnerExit, StopResult
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolType,
    Runner,
    RunnerState,
    Slot,
    Task,
    Taskset,
    TaskState,
)
from necrocode.dispatcher.registry import MemoryRegistry, open_registry
from necrocode.dispatcher.repo_pool import RepoPoolManager  # type: ignore[attr-defined]
from necrocode.dispatcher.snapshot import PendingReason
from support import wait_until

# --------------------------------------------------------------------------------------------
# fakes
# --------------------------------------------------------------------------------------------


class Recorder(FakeLauncher):
    """A FakeLauncher that checks, at every launch, what must hold when a runner starts.

    - no other live runner of the same task (a task never runs twice at the same time);
    - the registry shows the task RUNNING with this runner's id (no runner for a task the
      registry does not show RUNNING);
    - live runners per pool and in total stay within the limits.

    It also keeps a timeline (launch / stop-begin / stopped / exit) and can make stops fail or
    wait on a gate, and finish runners on its own (``auto_exit``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.registry: Any = None
        self.pool_limits: dict[str, int] = {}
        self.global_limit: int | None = None
        self.violations: list[str] = []
        self.timeline: list[tuple[str, str, str]] = []
        self.stop_failures = 0  # next stops that raise before stopping anything
        self.stop_gate: threading.Event | None = None
        self.stop_entered = threading.Event()
        self.auto_exit: Callable[[Task, int], int | None] | None = None
        self.max_live = 0
        self.launch_failures = 0  # launch() calls that raised RunnerLaunchError
        self._auto_q: list[tuple[str, int]] = []
        self._auto_cv = threading.Condition()
        self._auto_thread: threading.Thread | None = None

    def live(self) -> list[Any]:
        with self._cond:
            alive = set(self.running())
            return [lch for lch in self.launches if lch.runner.runner_id in alive]

    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        with self._cond:
            alive = set(self.running())
            twins = [lch.runner.runner_id for lch in self.launches
                     if lch.task.key == task.key and lch.runner.runner_id in alive]
            if twins:
                self.violations.append(f"{task.key} launched while {twins} still alive")
            if self.registry is not None:
                cur = raw(self.registry).get_task(task.key)
                if cur.state is not TaskState.RUNNING or cur.runner_id != task.runner_id:
                    self.violations.append(
                        f"{task.key} launched while the registry shows {cur.state.value} "
                        f"runner {cur.runner_id} (launching {task.runner_id})")
            try:
                runner = super().launch(task, slot, pool, attempt=attempt)
            except RunnerLaunchError:
                self.launch_failures += 1
                raise
            live = self.live()
            self.max_live = max(self.max_live, len(live))
            if self.global_limit is not None and len(live) > self.global_limit:
                self.violations.append(f"{len(live)} live runners > global {self.global_limit}")
            limit = self.pool_limits.get(pool.name)
            in_pool = sum(1 for lch in live if lch.pool.name == pool.name)
            if limit is not None and in_pool > limit:
                self.violations.append(f"{in_pool} live runners in {pool.name} > {limit}")
            self.timeline.append(("launch", task.key, runner.runner_id))
        if self.auto_exit is not None:
            code = self.auto_exit(task, attempt)
            if code is not None:
                self._queue_exit(runner.runner_id, code)
        return runner

    def stop(self, runner: Runner, grace: float | None = None) -> StopResult:
        with self._cond:
            self.timeline.append(("stop-begin", runner.task_key, runner.runner_id))
        self.stop_entered.set()
        if self.stop_gate is not None:
            assert self.stop_gate.wait(20), "stop gate never opened"
        with self._cond:
            if self.stop_failures > 0:
                self.stop_failures -= 1
                self.timeline.append(("stop-failed", runner.task_key, runner.runner_id))
                raise RuntimeError("platform unreachable: could not stop the runner")
        result = super().stop(runner, grace)
        with self._cond:
            self.timeline.append(("stopped", runner.task_key, runner.runner_id))
        return result

    def _end(self, runner_id: str, exit_: RunnerExit) -> None:
        with self._cond:
            key = self._runners[runner_id].task_key if runner_id in self._runners else "?"
            self.timeline.append(("exit", key, runner_id))
        super()._end(runner_id, exit_)

    # --- automatic exits, from another thread (concurrent completions) ---------------------
    def _queue_exit(self, runner_id: str, code: int) -> None:
        with self._auto_cv:
            if self._auto_thread is None:
                self._auto_thread = threading.Thread(target=self._auto_loop, daemon=True)
                self._auto_thread.start()
            self._auto_q.append((runner_id, code))
            self._auto_cv.notify()

    def _auto_loop(self) -> None:
        while True:
            with self._auto_cv:
                self._auto_cv.wait_for(lambda: bool(self._auto_q), 30)
                if not self._auto_q:
                    return
                rid, code = self._auto_q.pop(0)
            self.finish(rid, code)


class CountingRepoPool(RepoPoolManager):  # type: ignore[misc]
    """RepoPoolManager that counts allocations and (ignored) releases."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allocated = 0
        self.released = 0
        self.ignored_releases = 0
        self.count_lock = threading.Lock()

    def allocate_slot(self, task: Task, start: Any = None) -> Any:
        slot = super().allocate_slot(task, start)
        if isinstance(slot, Slot):
            with self.count_lock:
                self.allocated += 1
        return slot

    def release_slot(self, slot_id: str) -> bool:
        ok = super().release_slot(slot_id)
        with self.count_lock:
            if ok:
                self.released += 1
            else:
                self.ignored_releases += 1
        return bool(ok)


class FlakyRegistry(MemoryRegistry):
    """A MemoryRegistry whose writes fail when ``fault(method, key, to_state, kwargs)`` says so.

    ``fault`` returns None (work normally), "before" (raise without writing: a locked database)
    or "after" (write, then raise: the commit happened but its answer was lost).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fault: Callable[[str, str | None, TaskState | None, dict[str, Any]],
                             str | None] | None = None
        self.faults: list[tuple[str, str | None, str]] = []
        self._flock = threading.Lock()

    def _check(self, method: str, key: str | None, to: TaskState | None,
               kwargs: dict[str, Any]) -> str | None:
        fault = self.fault
        if fault is None:
            return None
        with self._flock:
            mode = fault(method, key, to, kwargs)
            if mode is not None:
                self.faults.append((method, key, mode))
            return mode

    def transition(self, key: str, to_state: TaskState, **kwargs: Any) -> Task:
        mode = self._check("transition", key, to_state, kwargs)
        if mode == "before":
            raise RegistryError("database is locked")
        task = super().transition(key, to_state, **kwargs)
        if mode == "after":
            raise RegistryError("connection reset after commit")
        return task

    def update_task(self, key: str, **kwargs: Any) -> Task:
        mode = self._check("update_task", key, None, kwargs)
        if mode == "before":
            raise RegistryError("database is locked")
        task = super().update_task(key, **kwargs)
        if mode == "after":
            raise RegistryError("connection reset after commit")
        return task

    def record_event(self, event: Any) -> Any:
        if self._check("record_event", event.task_key, None, {"event": event}) == "before":
            raise RegistryError("database is locked")
        return super().record_event(event)

    def record_events(self, events: Any) -> None:
        events = list(events)
        if self._check("record_events", None, None, {"events": events}) == "before":
            raise RegistryError("database is locked")
        super().record_events(events)


class _Raw:
    """The registry's own methods, without the faults of a FlakyRegistry (test checks only)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def __getattr__(self, name: str) -> Any:
        method = getattr(MemoryRegistry, name)
        return lambda *args, **kwargs: method(self._registry, *args, **kwargs)


def raw(registry: Any) -> Any:
    """Unfaulted access to ``registry`` (a FlakyRegistry's faults are bypassed)."""
    return _Raw(registry) if isinstance(registry, FlakyRegistry) else registry


def nth_faults(plan: dict[int, str], match: Callable[..., bool]) -> Callable[..., str | None]:
    """A fault function: the n-th matching call (1-based) fails as ``plan[n]`` says."""
    seen = [0]

    def fault(method: str, key: str | None, to: TaskState | None,
              kwargs: dict[str, Any]) -> str | None:
        if not match(method, key, to, kwargs):
            return None
        seen[0] += 1
        return plan.get(seen[0])

    return fault


# --------------------------------------------------------------------------------------------
# harness
# --------------------------------------------------------------------------------------------




def make_config(tmp_path: Path, **overrides: Any) -> DispatcherConfig:
    # liveness "log": silent fake runners are judged by heartbeat_timeout (local-process pools
    # otherwise count a live process as a sign of life)
    pools = overrides.pop("agent_pools", None) or [
        AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2,
                  config={"liveness": "log"})]
    base: dict[str, Any] = dict(
        registry_path=":memory:", state_dir=str(tmp_path / "state"), poll_interval=0.2,
        max_global_concurrency=10, heartbeat_timeout=30.0, retry_max_attempts=3,
        retry_backoff_base=0.02, retry_jitter=0.0, api_enabled=False, runner_stop_grace=0.2,
        snapshot_max_rate=1000.0, deadlock_check_interval=0.5,
        agent_pools=pools, skill_mapping=overrides.pop("skill_mapping", None)
        or {"default": [p.name for p in pools]},
    )
    base.update(overrides)
    return DispatcherConfig(**base)


class H:
    """One DispatcherCore over a (flaky) MemoryRegistry, a Recorder and a counting repo pool."""

    def __init__(self, tmp_path: Path, *, registry: Any = None,
                 launcher: Recorder | None = None, **overrides: Any) -> None:
        self.tmp_path = tmp_path
        self.registry = registry if registry is not None else FlakyRegistry()
        self.launcher = launcher if launcher is not None else Recorder()
        self.launcher.registry = self.registry
        self.config = make_config(tmp_path, **overrides)
        for pool in self.config.agent_pools:
            self.launcher.pool_limits[pool.name] = pool.max_concurrency
        self.launcher.global_limit = self.config.max_global_concurrency
        self.core = DispatcherCore(self.config, registry=self.registry,
                                   launchers={PoolType.LOCAL_PROCESS: self.launcher})
        self.slots = CountingRepoPool(self.core.state_dir, self.config.slots_per_repo)
        self.core.repo_pool = self.slots
        self.exact_assignments = True  # every launch of the launcher is this engine's
        self._launch_base = (len(self.launcher.launches), self.launcher.launch_failures)

    def restart(self, *, leave_running: bool, lose: int = 0, rng: random.Random | None = None
                ) -> None:
        """Stop this engine and start a new one on the same registry, launcher and state dir.

        ``leave_running``: live runners stay and are offered for adoption, except ``lose`` of
        them (picked by ``rng``), which end while no dispatcher watches."""
        self.core.stop(timeout=5 if leave_running else 0.05, leave_running=leave_running)
        if leave_running:
            live = [lch.runner.runner_id for lch in self.launcher.live()]
            lost = set((rng or random.Random(0)).sample(live, min(lose, len(live))))
            for rid in live:
                if rid in lost:
                    self.launcher.crash(rid)
                else:
                    self.launcher.add_adoptable(self.launcher.runner(rid))
        self.core = DispatcherCore(self.config, registry=self.registry,
                                   launchers={PoolType.LOCAL_PROCESS: self.launcher})
        self.slots = CountingRepoPool(self.core.state_dir, self.config.slots_per_repo)
        self.core.repo_pool = self.slots
        self._launch_base = (len(self.launcher.launches), self.launcher.launch_failures)
        self.core.start()

    # --- driving ---------------------------------------------------------------------------
    def submit(self, *tasks: Task, name: str = "ts") -> list[str]:
        for t in tasks:
            t.taskset = name
        self.core.submit(Taskset(name=name, tasks=list(tasks)))
        return [f"{name}/{t.id}" for t in tasks]

    def task(self, key: str) -> Task:
        return raw(self.registry).get_task(key)

    def wait_state(self, key: str, *states: TaskState, timeout: float = 10.0) -> Task:
        return wait_until(lambda: self.task(key).state in states and self.task(key), timeout,
                          f"{key} in {[s.value for s in states]} (is {self.task(key).state})")

    def runner_of(self, key: str, index: int = -1, count: int = 1) -> str:
        launches = wait_until(lambda: len(self.launcher.launch_for(key)) >= count
                              and self.launcher.launch_for(key), 10, f"launch of {key}")
        return str(launches[index].runner.runner_id)

    def events(self, key: str | None = None) -> list[EventType]:
        return [e.event_type for e in raw(self.registry).get_events(task_key=key)]

    def pool(self, name: str = "local") -> Any:
        return self.core.pool_manager.get_pool_status(name)

    def settle(self, timeout: float = 15.0) -> list[str]:
        """Wait until the engine is idle: nothing launching, stopping, releasing or deferred,
        every registry change seen, and two looks in a row (an engine iteration apart) alike.

        Returns the invariant problems seen by the last look, in the same engine call (a
        backoff may end and a launch start right after it)."""
        last: Any = None
        deadline = time.monotonic() + timeout
        while True:
            look = self.core.diagnose(
                lambda d: (fp := self._fingerprint(d)) and (fp, self._problems(d)))
            if look and last and look[0] == last[0]:
                return list(look[1])
            last = look
            if time.monotonic() > deadline:
                raise AssertionError(f"engine did not settle: {self.core.diagnose(self._busy)}")
            time.sleep(0.002)

    def _busy(self, d: EngineDiagnostics) -> dict[str, Any]:
        busy = dict(d.busy)
        unseen = self.core.registry.current_seq() - d.monitor_seq
        if unseen:
            busy["unseen"] = unseen
        return busy

    def _fingerprint(self, d: EngineDiagnostics) -> Any:
        if self._busy(d):
            return None
        return (self.core.registry.current_seq(), len(self.launcher.launches),
                len(self.launcher.stops), d.runner_ids, d.queue_length, len(d.waiting_for_slot))

    # --- invariants ------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Invariants of a settled engine (checked on the engine thread once it is idle)."""
        return self.settle()

    def _problems(self, d: EngineDiagnostics) -> list[str]:
        c, lau = self.core, self.launcher
        out = list(lau.violations)
        live = lau.live()
        alive = {lch.runner.runner_id for lch in live}
        if alive != set(d.runner_ids):
            out.append(f"live fake runners {sorted(alive)} != engine runners "
                       f"{list(d.runner_ids)}")
        per_task = Counter(lch.task.key for lch in live)
        out += [f"{k} has {n} live runners" for k, n in per_task.items() if n > 1]
        total = 0
        for st in c.pool_manager.get_all_pool_status():
            mine = d.runners_by_pool.get(st.pool_name, 0)
            total += st.running
            if st.running != mine:
                holders = c.pool_manager.holders(st.pool_name)
                out.append(f"pool {st.pool_name} counts {st.running} running, {mine} runners "
                           f"(held by {holders}: " + ", ".join(
                               f"{k} {raw(self.registry).get_task(k).state.value}"
                               for k in holders) + ")")
            if st.running > st.max_concurrency:
                out.append(f"pool {st.pool_name} over its limit: {st.running}")
            if st.running == 0 and (st.cpu_in_use or st.memory_in_use):
                out.append(f"pool {st.pool_name} leaks cpu/memory {st.cpu_in_use}/"
                           f"{st.memory_in_use}")
        if c.pool_manager.global_running != total or total > c.config.max_global_concurrency:
            out.append(f"global running {c.pool_manager.global_running} (pools {total})")
        running = {t.key: t for t in raw(self.registry).list_tasks(state=TaskState.RUNNING)}
        by_key = {lch.task.key: lch.runner.runner_id for lch in live}
        committing = set(d.committing)  # exited 0, work being committed: RUNNING, slot held
        if committing & set(by_key):
            out.append(f"{sorted(committing & set(by_key))} commit while a runner is live")
        if set(running) != set(by_key) | committing:
            out.append(f"registry RUNNING {sorted(running)} != tasks with a live runner "
                       f"{sorted(by_key)} or committing {sorted(committing)}")
        for key, t in running.items():
            if key in by_key and t.runner_id != by_key[key]:
                out.append(f"{key}: registry runner {t.runner_id}, live runner {by_key[key]}")
        stray = set(d.claimed_paths) - set(by_key)  # paths are held only while capacity is
        if stray:
            out.append(f"paths claimed by {sorted(stray)} without a live runner")
        in_use = self.slots.in_use_count()
        if in_use != len(alive) + len(committing):
            out.append(f"{in_use} slots in use for {len(alive)} live runners and "
                       f"{len(committing)} commits ({self.slots.assignments()})")
        if self.slots.ignored_releases:
            out.append(f"{self.slots.ignored_releases} slot release(s) of a free slot")
        if self.exact_assignments:  # each assignment is one launch() call, failed or not
            launches = len(lau.launches) - self._launch_base[0]
            errors = lau.launch_failures - self._launch_base[1]
            if d.assigned != launches + errors:
                out.append(f"assigned {d.assigned} != {launches} launches + "
                           f"{errors} failed launch() calls")
            if d.launch_errors > errors:
                out.append(f"{d.launch_errors} launch errors counted, "
                           f"{errors} happened")
        counts = {s: n for s, n in raw(self.registry).count_tasks().items() if n}
        engine_counts = dict(d.state_counts)
        if counts != engine_counts:
            out.append(f"engine counts {engine_counts} != registry {counts}")
        return out

    def assert_sound(self) -> None:
        assert self.settle() == []

    def fresh_snapshot(self) -> Any:
        return self.core.refresh_snapshot()

    def assert_counters_match_registry(self) -> None:
        snap = self.fresh_snapshot()
        counts = raw(self.registry).count_tasks()
        c = snap.counters
        got = {TaskState.BLOCKED: c.blocked, TaskState.READY: c.ready,
               TaskState.RUNNING: c.running, TaskState.DONE: c.done, TaskState.FAILED: c.failed,
               TaskState.CANCELLED: c.cancelled}
        assert {s: n for s, n in got.items() if n} == {s: n for s, n in counts.items() if n}
        assert c.total == sum(counts.values())


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., H]]:
    made: list[H] = []

    def build(*, start: bool = True, **kwargs: Any) -> H:
        h = H(tmp_path, **kwargs)
        if start:
            h.core.start()
        made.append(h)
        return h

    yield build
    for h in made:
        if h.launcher.stop_gate is not None:
            h.launcher.stop_gate.set()
        h.core.stop(timeout=0.5)


def queued_view(h: H, key: str) -> Any:
    snap = h.fresh_snapshot()
    return next((q for q in snap.queued if q.key == key), None)


# --------------------------------------------------------------------------------------------
# launch errors
# --------------------------------------------------------------------------------------------


def test_retryable_launch_error_releases_once_and_waits_in_backoff(make: Callable[..., H]
                                                                   ) -> None:
    h = make(retry_backoff_base=60.0, retry_backoff_max=600.0)
    h.launcher.fail_next_launch("image pull failed")
    (key,) = h.submit(Task(id="x", title="X"))
    task = wait_until(lambda: (t := h.task(key)).attempts == 1 and t, 10, "a failed attempt")
    h.assert_sound()
    task = h.task(key)
    assert task.state is TaskState.READY
    assert task.next_attempt_at is not None and task.next_attempt_at > time.time() + 30
    assert task.runner_id is None
    assert h.launcher.launches == []
    assert h.slots.allocated == 1 and h.slots.released == 1
    assert h.pool().running == 0 and h.core.pool_manager.global_running == 0
    status = h.pool()
    assert status.recent_launch_errors == 1 and "image pull failed" in (status.last_error or "")
    view = queued_view(h, key)
    assert view is not None and view.pending.reason is PendingReason.RETRY_BACKOFF
    snap = h.fresh_snapshot()
    assert snap.counters.launch_errors == 1 and snap.counters.retried == 1
    assert snap.running == ()
    assert h.events(key).count(EventType.RUNNER_LAUNCH_FAILED) == 1
    # the operator skips the backoff: it runs now, on a fresh slot, and ends DONE
    assert "retries now" in h.core.retry(key)
    h.launcher.finish(h.runner_of(key), 0)
    done = h.wait_state(key, TaskState.DONE)
    assert done.attempts == 1
    h.assert_sound()
    assert h.slots.allocated == 2 and h.slots.released == 2
    assert h.pool().healthy


def test_non_retryable_launch_error_fails_at_once_releasing_everything(make: Callable[..., H]
                                                                      ) -> None:
    h = make()
    h.launcher.fail_next_launch("no such image", retryable=False)
    (key,) = h.submit(Task(id="x", title="X"))
    failed = h.wait_state(key, TaskState.FAILED)
    h.assert_sound()
    assert failed.attempts == 1 and "no such image" in (failed.last_error or "")
    assert h.slots.allocated == 1 and h.slots.released == 1
    kinds = h.events(key)
    assert kinds.count(EventType.TASK_FAILED) == 1 and EventType.TASK_RETRIED not in kinds
    assert h.pool().running == 0


def test_launch_errors_until_max_attempts_then_failed_and_pool_unhealthy(
        make: Callable[..., H]) -> None:
    h = make(retry_backoff_base=0.01)
    h.launcher.fail_next_launch("docker daemon down", count=3)
    (key,) = h.submit(Task(id="x", title="X"))
    failed = h.wait_state(key, TaskState.FAILED)
    h.assert_sound()
    assert failed.attempts == 3
    assert h.launcher.launches == []
    assert h.slots.allocated == 3 and h.slots.released == 3
    kinds = h.events(key)
    assert kinds.count(EventType.RUNNER_LAUNCH_FAILED) == 3
    assert kinds.count(EventType.TASK_RETRIED) == 2 and kinds.count(EventType.TASK_FAILED) == 1
    status = h.pool()
    assert status.running == 0 and status.recent_launch_errors == 3 and not status.healthy
    snap = h.fresh_snapshot()
    assert snap.counters.launch_errors == 3 and snap.counters.assigned == 3
    assert snap.counters.failed == 1 and snap.counters.running == 0


# --------------------------------------------------------------------------------------------
# workspace slots
# --------------------------------------------------------------------------------------------


def _git_repo(path: Path, *, commit: bool = True) -> Path:
    path.mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    if commit:
        (path / "README").write_text("hello\n")
        git("add", "README")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return path


def test_no_free_slot_waits_visibly_and_runs_when_the_slot_frees(make: Callable[..., H],
                                                                  tmp_path: Path) -> None:
    repo = str(_git_repo(tmp_path / "repo"))
    h = make(slots_per_repo=1)
    a, b = h.submit(Task(id="a", title="A", repo=repo, priority=5),
                    Task(id="b", title="B", repo=repo))
    first = h.runner_of(a)
    h.settle()
    assert h.launcher.launch_for(b) == []
    assert h.task(b).state is TaskState.READY and h.task(b).attempts == 0
    assert h.pool().running == 1  # b's capacity was given back
    view = queued_view(h, b)
    assert view is not None and view.pending.reason is PendingReason.NO_SLOT
    assert h.problems() == []
    h.launcher.finish(first, 0)
    h.launcher.finish(h.runner_of(b), 0)
    h.wait_state(b, TaskState.DONE)
    h.assert_sound()
    assert h.task(a).state is TaskState.DONE
    assert h.task(a).assigned_slot == h.task(b).assigned_slot
    assert h.task(b).attempts == 0


def test_bad_repository_fails_clearly_and_never_holds_capacity(make: Callable[..., H],
                                                              tmp_path: Path) -> None:
    h = make(retry_backoff_base=0.01)
    (key,) = h.submit(Task(id="x", title="X", repo=str(tmp_path / "no-such-repo")))
    failed = h.wait_state(key, TaskState.FAILED)
    h.assert_sound()
    assert h.launcher.launches == []
    assert failed.attempts == 3
    assert "git" in (failed.last_error or "") and "no-such-repo" in (failed.last_error or "")
    assert h.pool().running == 0 and h.slots.in_use_count() == 0


def test_non_retryable_workspace_error_fails_at_once(make: Callable[..., H],
                                                     tmp_path: Path) -> None:
    repo = str(_git_repo(tmp_path / "empty", commit=False))
    h = make(retry_backoff_base=0.01)
    (key,) = h.submit(Task(id="x", title="X", repo=repo))
    failed = h.wait_state(key, TaskState.FAILED)
    h.assert_sound()
    assert "no default branch" in (failed.last_error or "")
    assert failed.attempts == 1
    assert EventType.TASK_RETRIED not in h.events(key)


# --------------------------------------------------------------------------------------------
# registry errors
# --------------------------------------------------------------------------------------------


def _to(state: TaskState) -> Callable[..., bool]:
    return lambda method, key, to, kwargs: method == "transition" and to is state


def test_registry_error_on_ready_to_running_never_launches_and_retries(
        make: Callable[..., H]) -> None:
    registry = FlakyRegistry()
    # 1st: the transition with its event fails; 2nd: the retry without the event fails too
    registry.fault = nth_faults({1: "before", 2: "before"}, _to(TaskState.RUNNING))
    h = make(registry=registry)
    (key,) = h.submit(Task(id="x", title="X"))
    rid = h.runner_of(key)
    assert len(registry.faults) == 2
    assert len(h.launcher.launches) == 1  # no runner for the refused assignment
    h.assert_sound()
    assert h.task(key).attempts == 0  # a registry hiccup is not a failed attempt
    h.launcher.finish(rid, 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert h.slots.allocated == 2 and h.slots.released == 2
    kinds = h.events(key)
    assert kinds.count(EventType.TASK_ASSIGNED) == 1
    assert kinds.count(EventType.RUNNER_COMPLETED) == 1


def test_registry_answer_lost_after_ready_to_running_commit(make: Callable[..., H]) -> None:
    registry = FlakyRegistry()
    registry.fault = nth_faults({1: "after"}, _to(TaskState.RUNNING))
    h = make(registry=registry)
    (key,) = h.submit(Task(id="x", title="X"))
    wait_until(lambda: registry.faults, 10, "the fault")
    h.settle()
    assert h.problems() == []  # RUNNING in the registry => a live runner
    h.launcher.finish(h.runner_of(key), 0)
    h.wait_state(key, TaskState.DONE)


def test_event_write_failures_go_to_the_fallback_and_are_replayed(make: Callable[..., H],
                                                                  tmp_path: Path) -> None:
    registry = FlakyRegistry()
    # the assignment's event fails once (the state change is retried without it), and the
    # RunnerStarted batch fails once
    faults = {"transition": nth_faults({1: "before"}, _to(TaskState.RUNNING)),
              "record_events": nth_faults({1: "before"}, lambda *a: True)}
    registry.fault = lambda method, *rest: faults[method](method, *rest) \
        if method in faults else None
    h = make(registry=registry)
    (key,) = h.submit(Task(id="x", title="X"))
    h.launcher.finish(h.runner_of(key), 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert len(registry.faults) == 2
    assert h.core.events.fallback_writes >= 1
    h.core.stop(timeout=1)
    kinds = h.events(key)
    for kind in (EventType.TASK_ASSIGNED, EventType.RUNNER_STARTED, EventType.RUNNER_COMPLETED):
        assert kinds.count(kind) == 1, (kind, kinds)
    assert not (Path(h.config.state_dir or "") / "events-fallback.jsonl").exists()


@pytest.mark.parametrize("mode", ["before", "after"])
def test_registry_error_on_the_completion_write(make: Callable[..., H], mode: str) -> None:
    registry = FlakyRegistry()
    registry.fault = nth_faults({1: mode, 2: mode, 3: mode}, _to(TaskState.DONE))
    h = make(registry=registry)
    (key,) = h.submit(Task(id="x", title="X"))
    h.launcher.finish(h.runner_of(key), 0)
    done = h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert done.attempts == 0
    assert len(h.launcher.launches) == 1
    assert h.slots.released == 1
    h.assert_counters_match_registry()
    h.core.stop(timeout=1)  # records DispatcherStopped, which replays the fallback first
    assert h.events(key).count(EventType.RUNNER_COMPLETED) == 1


def test_fallback_is_replayed_while_the_engine_idles(make: Callable[..., H]) -> None:
    registry = FlakyRegistry()
    registry.fault = nth_faults({1: "before", 2: "before", 3: "before"}, _to(TaskState.DONE))
    h = make(registry=registry)
    (key,) = h.submit(Task(id="x", title="X"))
    h.launcher.finish(h.runner_of(key), 0)
    h.wait_state(key, TaskState.DONE)
    h.settle()
    assert h.core.events.has_fallback  # the RunnerCompleted event went to the fallback
    wait_until(lambda: EventType.RUNNER_COMPLETED in h.events(key), 5, "replayed event")


@pytest.mark.parametrize("mode", ["before", "after"])
def test_registry_error_on_the_failure_write_counts_one_attempt(make: Callable[..., H],
                                                                mode: str) -> None:
    registry = FlakyRegistry()
    registry.fault = nth_faults({1: mode, 2: mode},
                                lambda method, key, to, kw: method == "transition"
                                and to is TaskState.READY and kw.get("attempts") == 1)
    h = make(registry=registry)
    (key,) = h.submit(Task(id="x", title="X"))
    h.launcher.finish(h.runner_of(key), 7)
    second = h.runner_of(key, count=2)
    assert h.task(key).attempts == 1
    h.launcher.finish(second, 0)
    done = h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert done.attempts == 1
    kinds = h.events(key)
    assert kinds.count(EventType.TASK_RETRIED) == 1 and kinds.count(EventType.RUNNER_FAILED) == 1
    assert h.fresh_snapshot().counters.retried == 1


# --------------------------------------------------------------------------------------------
# crashes, hangs, fences
# --------------------------------------------------------------------------------------------


def test_crash_before_first_heartbeat_is_one_failed_attempt(make: Callable[..., H]) -> None:
    h = make(heartbeat_timeout=5.0)
    (key,) = h.submit(Task(id="x", title="X"))
    h.launcher.crash(h.runner_of(key), "signal 11")
    second = h.runner_of(key, count=2)
    assert h.task(key).attempts == 1
    h.launcher.finish(second, 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    kinds = h.events(key)
    assert kinds.count(EventType.RUNNER_FAILED) == 1 and kinds.count(EventType.TASK_RETRIED) == 1
    assert EventType.RUNNER_LOST not in kinds
    assert h.launcher.stops == []


def test_hung_runner_is_fenced_before_its_task_is_relaunched(make: Callable[..., H]) -> None:
    h = make(heartbeat_timeout=0.3)
    (key,) = h.submit(Task(id="x", title="X"))
    first = h.runner_of(key)
    h.launcher.hang(first)
    second = h.runner_of(key, count=2)
    h.launcher.finish(second, 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    tl = [(kind, rid) for kind, k, rid in h.launcher.timeline if k == key]
    assert tl.index(("stopped", first)) < tl.index(("launch", second))
    assert h.task(key).attempts == 1
    kinds = h.events(key)
    assert kinds.count(EventType.RUNNER_LOST) == 1
    snap = h.fresh_snapshot()
    assert snap.counters.heartbeat_timeouts == 1


def test_failed_fence_never_relaunches_while_the_old_runner_lives(make: Callable[..., H]) -> None:
    # regression: a stop() that raised was taken as "runner gone" (slot, capacity released and
    # the task relaunched while the old runner still ran)
    h = make(heartbeat_timeout=0.3, runner_stop_grace=0.05)
    (key,) = h.submit(Task(id="x", title="X"))
    first = h.runner_of(key)
    h.launcher.hang(first)
    h.launcher.stop_failures = 1  # the platform cannot be reached for the first stop
    second = h.runner_of(key, count=2)  # only once a stop has succeeded
    assert h.launcher.violations == []
    tl = [(kind, rid) for kind, k, rid in h.launcher.timeline if k == key]
    assert tl.index(("stop-failed", first)) < tl.index(("stopped", first)) \
        < tl.index(("launch", second))
    h.launcher.finish(second, 0)
    done = h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert done.attempts == 1
    assert h.slots.released == 2


def test_timeout_fence_of_a_sigterm_ignoring_runner(make: Callable[..., H]) -> None:
    h = make()
    (key,) = h.submit(Task(id="x", title="X", timeout=0.2, max_attempts=2))
    first = h.runner_of(key)
    h.launcher.hang(first)
    second = h.runner_of(key, count=2)
    h.launcher.hang(second)
    failed = h.wait_state(key, TaskState.FAILED)
    h.assert_sound()
    assert failed.attempts == 2
    assert h.events(key).count(EventType.RUNNER_TIMED_OUT) == 2
    tl = [(kind, rid) for kind, k, rid in h.launcher.timeline if k == key]
    assert tl.index(("stopped", first)) < tl.index(("launch", second))


# --------------------------------------------------------------------------------------------
# double completion
# --------------------------------------------------------------------------------------------


def test_api_report_then_platform_exit_finishes_once(make: Callable[..., H]) -> None:
    h = make()
    (key,) = h.submit(Task(id="x", title="X"))
    rid = h.runner_of(key)
    h.settle()
    api = EngineApiHandler(h.core)
    assert api.on_complete(rid, {"exit_code": 0})["ok"]
    h.launcher.finish(rid, 0)
    h.core.runner_exited(rid)  # a second watcher wake-up for the same exit
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert not api.on_complete(rid, {"exit_code": 0})["ok"]  # a late second report
    h.settle()
    kinds = h.events(key)
    assert kinds.count(EventType.RUNNER_COMPLETED) == 1
    assert EventType.RUNNER_FAILED not in kinds
    assert h.task(key).attempts == 0
    assert h.slots.released == 1
    snap = h.fresh_snapshot()
    assert snap.counters.done == 1 and snap.counters.assigned == 1
    assert sum(1 for f in snap.finished if f.key == key) == 1


def test_report_without_exit_is_fenced_then_done_once(make: Callable[..., H]) -> None:
    h = make(runner_stop_grace=0.1)
    (key,) = h.submit(Task(id="x", title="X"))
    rid = h.runner_of(key)
    h.settle()
    h.launcher.hang(rid)
    EngineApiHandler(h.core).on_complete(rid, {"exit_code": 0})
    EngineApiHandler(h.core).on_complete(rid, {"exit_code": 0})
    done = h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert rid in h.launcher.stops
    assert done.attempts == 0
    assert h.events(key).count(EventType.RUNNER_COMPLETED) == 1
    assert h.slots.released == 1 and h.pool().running == 0


def test_exit_racing_a_cancel_fence_settles_once(make: Callable[..., H]) -> None:
    h = make()
    (key,) = h.submit(Task(id="x", title="X"))
    rid = h.runner_of(key)
    h.settle()
    h.launcher.stop_gate = threading.Event()
    h.core.cancel(key)
    assert h.launcher.stop_entered.wait(5)
    h.launcher.finish(rid, 0)  # it exits on its own while being stopped
    h.launcher.stop_gate.set()
    h.wait_state(key, TaskState.CANCELLED, TaskState.DONE)
    h.assert_sound()
    kinds = h.events(key)
    assert kinds.count(EventType.RUNNER_COMPLETED) + kinds.count(EventType.TASK_CANCELLED) == 1
    assert h.slots.released == 1


# --------------------------------------------------------------------------------------------
# cancel / retry / pause races
# --------------------------------------------------------------------------------------------


def test_cancel_in_backoff_never_launches_and_retry_runs_it_fresh(make: Callable[..., H]) -> None:
    h = make(retry_backoff_base=0.3)
    (key,) = h.submit(Task(id="x", title="X"))
    h.launcher.finish(h.runner_of(key), 1)
    backoff = h.wait_state(key, TaskState.READY)
    wait_until(lambda: h.task(key).next_attempt_at, 5, "backoff")
    assert h.core.cancel(key).startswith(f"cancelled {key}")
    assert h.task(key).state is TaskState.CANCELLED
    wait_until(lambda: time.time() > (backoff.next_attempt_at or 0) + 0.2, 5, "backoff passed")
    h.settle()
    assert len(h.launcher.launch_for(key)) == 1
    h.assert_sound()
    with pytest.raises(DispatcherError):
        h.core.cancel(key)  # cancelling twice is refused
    h.core.retry(key)
    fresh = h.runner_of(key, count=2)
    assert h.task(key).attempts == 0
    h.launcher.finish(fresh, 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()


def test_retry_refused_while_a_cancel_fence_is_in_flight(make: Callable[..., H]) -> None:
    h = make()
    (key,) = h.submit(Task(id="x", title="X"))
    rid = h.runner_of(key)
    h.settle()
    h.launcher.stop_gate = threading.Event()
    h.core.cancel(key)
    assert h.launcher.stop_entered.wait(5)
    with pytest.raises(DispatcherError):
        h.core.retry(key)  # still RUNNING: its runner is being stopped
    assert "already being stopped" in h.core.cancel(key)
    h.launcher.stop_gate.set()
    h.wait_state(key, TaskState.CANCELLED)
    h.settle()
    h.core.retry(key)
    h.launcher.finish(h.runner_of(key, count=2), 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    tl = [(kind, r) for kind, k, r in h.launcher.timeline if k == key]
    assert tl.index(("stopped", rid)) < [i for i, (kind, _) in enumerate(tl)
                                         if kind == "launch"][1]


def test_cancel_during_a_lost_fence_wins(make: Callable[..., H]) -> None:
    h = make(heartbeat_timeout=0.3)
    (key,) = h.submit(Task(id="x", title="X"))
    first = h.runner_of(key)
    h.launcher.stop_gate = threading.Event()
    h.launcher.hang(first)
    assert h.launcher.stop_entered.wait(10)  # declared lost, being fenced
    h.core.cancel(key)
    h.launcher.stop_gate.set()
    h.wait_state(key, TaskState.CANCELLED, TaskState.READY, TaskState.FAILED)
    h.assert_sound()
    assert h.task(key).state is TaskState.CANCELLED
    assert len(h.launcher.launch_for(key)) == 1
    assert EventType.TASK_RETRIED not in h.events(key)


class GatedRecorder(Recorder):
    """Launches wait for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        self.entered.set()
        assert self.gate.wait(20), "launch gate never opened"
        return super().launch(task, slot, pool, attempt=attempt)


def test_pause_while_launching_lets_that_launch_finish_only(make: Callable[..., H]) -> None:
    launcher = GatedRecorder()
    h = make(launcher=launcher)
    try:
        (a,) = h.submit(Task(id="a", title="A"))
        assert launcher.entered.wait(10)
        assert h.core.pause() == "paused dispatching"
        (b,) = h.submit(Task(id="b", title="B"), name="other")
        launcher.gate.set()
        rid = h.runner_of(a)
        h.settle()
        assert h.task(a).state is TaskState.RUNNING
        assert h.launcher.launch_for(b) == []
        view = queued_view(h, b)
        assert view is not None and view.pending.reason is PendingReason.PAUSED
        assert h.problems() == []
        h.launcher.finish(rid, 0)
        h.wait_state(a, TaskState.DONE)
        h.settle()
        assert h.launcher.launch_for(b) == []
        h.core.resume()
        h.launcher.finish(h.runner_of(b), 0)
        h.wait_state(b, TaskState.DONE)
        h.assert_sound()
    finally:
        launcher.gate.set()


def test_cancel_while_launching_a_no_slot_launch(make: Callable[..., H], tmp_path: Path) -> None:
    repo = str(_git_repo(tmp_path / "repo"))
    launcher = GatedRecorder()
    h = make(launcher=launcher, slots_per_repo=1)
    try:
        a, b = h.submit(Task(id="a", title="A", repo=repo, priority=9),
                        Task(id="b", title="B", repo=repo))
        assert launcher.entered.wait(10)  # a holds the only slot, its launch waits on the gate
        wait_until(lambda: b in h.core.diagnose().waiting_for_slot, 10,
                   "b without slot")
        h.core.cancel(b)
        launcher.gate.set()
        h.wait_state(b, TaskState.CANCELLED)
        h.launcher.finish(h.runner_of(a), 0)
        h.wait_state(a, TaskState.DONE)
        h.assert_sound()
        assert h.launcher.launch_for(b) == []
    finally:
        launcher.gate.set()


# --------------------------------------------------------------------------------------------
# shutdown and restart
# --------------------------------------------------------------------------------------------


def test_stop_timeout_requeues_every_runner_without_spending_attempts(make: Callable[..., H]
                                                                     ) -> None:
    h = make(agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS,
                                    max_concurrency=4)])
    keys = h.submit(*[Task(id=f"t{i}", title=str(i)) for i in range(5)])
    live = h.launcher.wait_for_running(4)
    h.launcher.hang(live[0])  # one ignores SIGTERM
    h.settle()
    h.core.stop(timeout=0.1)
    assert h.launcher.running() == []
    for key in keys:
        t = h.task(key)
        assert t.state is TaskState.READY, key
        assert t.attempts == 0 and t.runner_id is None
    assert h.slots.in_use_count() == 0 and h.slots.released == h.slots.allocated == 4
    assert h.pool().running == 0
    requeued = [e for e in raw(h.registry).get_events()
                if e.event_type is EventType.TASK_REQUEUED]
    assert Counter(e.task_key for e in requeued) == Counter(lch.task.key for lch in
                                                            h.launcher.launches)
    assert EventType.DISPATCHER_STOPPED in h.events()


def test_stop_with_a_failing_requeue_write_leaves_no_task_running(make: Callable[..., H]
                                                                 ) -> None:
    registry = FlakyRegistry()
    h = make(registry=registry)
    (key,) = h.submit(Task(id="x", title="X"))
    h.runner_of(key)
    h.settle()
    # the registry is locked for a moment: the first 6 writes to READY fail (about 3 engine
    # iterations of tries); the engine must not end with the task still RUNNING
    registry.fault = nth_faults(dict.fromkeys(range(1, 7), "before"), _to(TaskState.READY))
    h.core.stop(timeout=0.1)
    assert h.launcher.running() == []
    assert h.task(key).state is TaskState.READY


def test_leave_running_then_restart_adopts_and_finishes_each_once(tmp_path: Path) -> None:
    launcher = Recorder()
    pools = [AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=4)]
    h1 = H(tmp_path, launcher=launcher, agent_pools=pools)
    h1.core.start()
    try:
        keys = h1.submit(*[Task(id=f"t{i}", title=str(i)) for i in range(4)])
        live = launcher.wait_for_running(4)
        h1.settle()
    finally:
        h1.core.stop(timeout=5, leave_running=True)
    assert sorted(launcher.running()) == sorted(live)
    assert all(h1.task(k).state is TaskState.RUNNING for k in keys)
    by_key = {launcher.runner(r).task_key: r for r in live}
    dead_key = keys[0]
    launcher.crash(by_key[dead_key])  # ended while no dispatcher watched
    for key in keys[1:]:
        launcher.add_adoptable(launcher.runner(by_key[key]))
    h2 = H(tmp_path, registry=h1.registry, launcher=launcher, agent_pools=pools)
    h2.exact_assignments = False
    h2.core.start()
    try:
        h2.settle()
        assert h2.problems() == []
        assert h2.pool().running == 4  # three adopted + the dead one relaunched
        relaunched = h2.runner_of(dead_key, count=2)
        assert h2.task(dead_key).attempts == 0
        for key in keys[1:]:
            launcher.finish(by_key[key], 0)
        launcher.finish(relaunched, 0)
        for key in keys:
            h2.wait_state(key, TaskState.DONE)
        h2.assert_sound()
        for key in keys:
            kinds = h2.events(key)
            assert kinds.count(EventType.RUNNER_COMPLETED) == 1, key
            assert len(launcher.launch_for(key)) == (2 if key == dead_key else 1)
        assert h2.events().count(EventType.RUNNER_ADOPTED) == 3
        h2.assert_counters_match_registry()
    finally:
        h2.core.stop(timeout=0.5)


def test_restart_stops_a_stray_runner_and_requeues_a_task_whose_runner_id_differs(
        tmp_path: Path) -> None:
    launcher = Recorder()
    h1 = H(tmp_path, launcher=launcher)
    h1.core.start()
    try:
        (key,) = h1.submit(Task(id="x", title="X"))
        rid = h1.runner_of(key)
        h1.settle()
    finally:
        h1.core.stop(timeout=5, leave_running=True)
    stray = launcher.runner(rid)
    # the platform reports the runner under another id (e.g. a stale record): it is not adopted
    # for the task, it is stopped, and the task runs again once
    stray2 = Runner(runner_id="r-stray-a1-000000", task_key=key, pool_name="local",
                    slot_id=stray.slot_id, state=RunnerState.RUNNING)
    launcher.crash(rid)
    launcher.add_adoptable(stray2)
    h2 = H(tmp_path, registry=h1.registry, launcher=launcher)
    h2.exact_assignments = False
    h2.core.start()
    try:
        assert "r-stray-a1-000000" in launcher.stops
        launcher.finish(h2.runner_of(key, count=2), 0)
        h2.wait_state(key, TaskState.DONE)
        h2.assert_sound()
    finally:
        h2.core.stop(timeout=0.5)


# --------------------------------------------------------------------------------------------
# many concurrent completions
# --------------------------------------------------------------------------------------------


def test_two_hundred_quick_runners_respect_every_limit_and_count_exactly(
        make: Callable[..., H]) -> None:
    pools = [AgentPool(name="a", type=PoolType.LOCAL_PROCESS, max_concurrency=8),
             AgentPool(name="b", type=PoolType.LOCAL_PROCESS, max_concurrency=2)]
    h = make(agent_pools=pools, skill_mapping={"a": ["a"], "b": ["b"], "default": ["a"]},
             max_global_concurrency=5, retry_backoff_base=0.001)
    failing = {f"ts/t{i}" for i in range(0, 200, 17)}  # their first runner exits 1
    seen: set[str] = set()
    seen_lock = threading.Lock()

    def exit_code(task: Task, attempt: int) -> int:
        with seen_lock:
            first = task.key not in seen
            seen.add(task.key)
        return 1 if task.key in failing and first else 0

    h.launcher.auto_exit = exit_code
    h.launcher.fail_next_launch("transient", count=3)
    keys = h.submit(*[Task(id=f"t{i}", title=str(i), required_skill="b" if i % 4 == 0 else "a")
                      for i in range(200)])
    wait_until(lambda: raw(h.registry).count_tasks().get(TaskState.DONE) == 200, 60,
               "200 DONE")
    h.assert_sound()
    assert h.launcher.violations == []
    assert h.launcher.max_live <= 5
    launches = len(h.launcher.launches)
    assert launches == 200 + len(failing)
    snap = h.fresh_snapshot()
    assert snap.counters.launch_errors == 3
    assert snap.counters.assigned == launches + 3
    assert snap.counters.retried == len(failing) + 3
    assert snap.counters.done == 200 and snap.counters.running == 0
    assert sum(h.task(k).attempts for k in keys) == len(failing) + 3
    assert h.slots.allocated == h.slots.released == launches + 3
    completed = Counter(e.task_key for e in raw(h.registry).get_events()
                        if e.event_type is EventType.RUNNER_COMPLETED)
    assert set(completed) == set(keys) and set(completed.values()) == {1}


# --------------------------------------------------------------------------------------------
# randomized interleavings
# --------------------------------------------------------------------------------------------

class HeartbeatPump:
    """Sends heartbeats (through the engine's API handler) for every live runner except the
    silenced ones, from its own thread, like wrapped runners do."""

    def __init__(self, h: H, interval: float = 0.05) -> None:
        self.h = h
        self.interval = interval
        self.silenced: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            core = self.h.core
            api = EngineApiHandler(core)
            for rid in self.h.launcher.running():
                if rid not in self.silenced:
                    try:
                        api.on_heartbeat(rid, {"progress": "working"})
                    except Exception:  # a restart swaps the engine under us
                        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


_OPS = ("submit", "finish", "fail", "crash", "hang", "cancel", "retry", "pause", "resume",
        "priority", "launch_error", "pool")
_RESTART_OPS = (*_OPS, "restart")


def _random_walk(h: H, rng: random.Random, steps: int, ops: tuple[str, ...] = _OPS,
                 pump: HeartbeatPump | None = None) -> None:
    lau = h.launcher
    n_sets = 0
    for step in range(steps):
        op = rng.choice(ops)
        live = [lch.runner.runner_id for lch in lau.live()]
        keys = [t.key for t in raw(h.registry).list_tasks()]
        try:
            if op == "submit" or not keys:
                n_sets += 1
                size = rng.randint(1, 4)
                tasks = []
                for i in range(size):
                    deps = [f"k{j}" for j in range(i) if rng.random() < 0.3]
                    tasks.append(Task(id=f"k{i}", title=f"{n_sets}.{i}", dependencies=deps,
                                      required_skill=rng.choice(["a", "b"]),
                                      priority=rng.randint(0, 3),
                                      timeout=0.4 if rng.random() < 0.2 else None))
                h.submit(*tasks, name=f"s{n_sets}")
            elif op == "silence" and live and pump is not None:
                pump.silenced.add(rng.choice(live))  # stops heartbeating: lost after the timeout
            elif op == "idle":
                time.sleep(rng.uniform(0.1, 0.4))  # let timers (heartbeat, timeout) run out
            elif op in ("finish", "fail", "crash", "hang") and live:
                rid = rng.choice(live)
                if op == "finish":
                    lau.finish(rid, 0)
                elif op == "fail":
                    lau.finish(rid, rng.choice([1, 2, 137]))
                elif op == "crash":
                    lau.crash(rid)
                else:
                    lau.hang(rid)
                    if pump is not None and rng.random() < 0.7:
                        pump.silenced.add(rid)  # hung and silent: lost after the timeout
            elif op == "cancel":
                h.core.cancel(rng.choice(keys))
            elif op == "retry":
                h.core.retry(rng.choice(keys))
            elif op == "pause":
                h.core.pause()
            elif op == "resume":
                h.core.resume()
            elif op == "priority":
                h.core.set_priority(rng.choice(keys), rng.randint(-2, 9))
            elif op == "launch_error":
                lau.fail_next_launch("random launch failure", retryable=rng.random() < 0.7)
            elif op == "pool":
                h.core.set_pool_enabled(rng.choice(["a", "b"]), rng.random() < 0.6)
            elif op == "restart":
                paused = h.core.paused
                h.restart(leave_running=rng.random() < 0.7, lose=rng.randint(0, 1), rng=rng)
                if paused:
                    h.core.pause()
        except (DispatcherError, KeyError):
            pass  # refusals (invalid transition, runner already gone) are fine
        problems = h.settle()
        assert problems == [], f"step {step} ({op}): {problems}"


@pytest.mark.parametrize("seed", [11, 12])
def test_random_interleavings_with_restarts(make: Callable[..., H], seed: int) -> None:
    pools = [AgentPool(name="a", type=PoolType.LOCAL_PROCESS, max_concurrency=3),
             AgentPool(name="b", type=PoolType.LOCAL_PROCESS, max_concurrency=2)]
    h = make(agent_pools=pools, skill_mapping={"a": ["a", "b"], "b": ["b"], "default": ["a"]},
             max_global_concurrency=4, retry_backoff_base=0.01, retry_max_attempts=4,
             runner_stop_grace=0.05)
    _random_walk(h, random.Random(seed), 50, _RESTART_OPS)
    h.core.resume()
    for pool in ("a", "b"):
        h.core.set_pool_enabled(pool, True)
    for _ in range(200):
        for rid in h.launcher.running():
            h.launcher.finish(rid, 0)
        assert h.settle() == []
        counts = raw(h.registry).count_tasks()
        if not (counts.get(TaskState.RUNNING) or counts.get(TaskState.READY)):
            break
    completed = Counter(e.task_key for e in raw(h.registry).get_events()
                        if e.event_type is EventType.RUNNER_COMPLETED)
    for task in raw(h.registry).list_tasks(state=TaskState.DONE):
        assert completed[task.key] == 1, task.key
    h.assert_counters_match_registry()


def test_random_interleavings_over_sqlite(make: Callable[..., H], tmp_path: Path) -> None:
    pools = [AgentPool(name="a", type=PoolType.LOCAL_PROCESS, max_concurrency=3),
             AgentPool(name="b", type=PoolType.LOCAL_PROCESS, max_concurrency=2)]
    registry = open_registry(tmp_path / "reg" / "registry.db")
    try:
        h = make(registry=registry, agent_pools=pools,
                 skill_mapping={"a": ["a", "b"], "b": ["b"], "default": ["a"]},
                 max_global_concurrency=4, retry_backoff_base=0.01, retry_max_attempts=4,
                 runner_stop_grace=0.05)
        _random_walk(h, random.Random(21), 40, _RESTART_OPS)
        h.assert_counters_match_registry()
        h.core.stop(timeout=0.5)
    finally:
        registry.close()


@pytest.mark.parametrize("seed", [31])
def test_random_interleavings_with_heartbeats_and_losses(make: Callable[..., H], seed: int
                                                         ) -> None:
    pools = [AgentPool(name="a", type=PoolType.LOCAL_PROCESS, max_concurrency=3,
                       config={"liveness": "log"}),
             AgentPool(name="b", type=PoolType.LOCAL_PROCESS, max_concurrency=2,
                       config={"liveness": "log"})]
    h = make(agent_pools=pools, skill_mapping={"a": ["a", "b"], "b": ["b"], "default": ["a"]},
             max_global_concurrency=4, retry_backoff_base=0.01, retry_max_attempts=5,
             runner_stop_grace=0.05, heartbeat_timeout=0.3)
    pump = HeartbeatPump(h)
    try:
        _random_walk(h, random.Random(seed), 50, (*_RESTART_OPS, "silence", "idle"), pump)
        # and at least one loss for sure: a runner that goes silent after the walk
        h.core.resume()
        for pool in ("a", "b"):
            h.core.set_pool_enabled(pool, True)
        with h.launcher._cond:
            h.launcher._fail_next.clear()  # launch failures the walk queued and nobody used
        for live in h.launcher.running():  # make room
            h.launcher.finish(live, 0)
        h.core.pause()  # nothing else takes the room before z
        (key,) = h.submit(Task(id="z", title="Z", required_skill="a", priority=100),
                          name="last")
        for live in h.launcher.running():
            h.launcher.finish(live, 0)
        h.core.resume()
        rid = h.runner_of(key)
        pump.silenced.add(rid)
        wait_until(lambda: EventType.RUNNER_LOST in h.events(key), 10, "the silent runner lost")

        def relaunched() -> bool:  # other runners finish, so z finds room again
            for other in h.launcher.running():
                if h.launcher.runner(other).task_key != key:
                    h.launcher.finish(other, 0)
            return len(h.launcher.launch_for(key)) >= 2

        wait_until(relaunched, 10, "z relaunched after its loss")
        h.launcher.finish(h.runner_of(key, count=2), 0)
        h.wait_state(key, TaskState.DONE)
        h.assert_sound()
    finally:
        pump.close()
    h.assert_counters_match_registry()


def _random_faults(rng: random.Random, rate: float) -> Callable[..., str | None]:
    lock = threading.Lock()

    def fault(method: str, key: str | None, to: TaskState | None,
              kwargs: dict[str, Any]) -> str | None:
        with lock:
            if rng.random() >= rate:
                return None
            # event writes can only fail before; state writes may also lose their answer
            return "before" if method.startswith("record") or rng.random() < 0.5 else "after"

    return fault


@pytest.mark.parametrize("seed,faults", [(1, False), (2, False), (4, True), (5, True)])
def test_random_interleavings_keep_every_invariant(make: Callable[..., H], seed: int,
                                                   faults: bool) -> None:
    pools = [AgentPool(name="a", type=PoolType.LOCAL_PROCESS, max_concurrency=3),
             AgentPool(name="b", type=PoolType.LOCAL_PROCESS, max_concurrency=2)]
    registry = FlakyRegistry()
    h = make(registry=registry, agent_pools=pools,
             skill_mapping={"a": ["a", "b"], "b": ["b"], "default": ["a"]},
             max_global_concurrency=4, retry_backoff_base=0.01, retry_max_attempts=4,
             runner_stop_grace=0.05)
    rng = random.Random(seed)
    if faults:  # the registry fails now and then: before a write, or after its commit
        registry.fault = _random_faults(random.Random(seed * 7), 0.08)
    _random_walk(h, rng, 70)
    registry.fault = None
    # wind down: everything enabled and resumed; live runners finish well until nothing runs
    h.core.resume()
    h.core.set_pool_enabled("a", True)
    h.core.set_pool_enabled("b", True)

    def wound_down() -> bool:
        h.settle()
        for rid in h.launcher.running():
            h.launcher.finish(rid, 0)
        h.settle()
        counts = raw(h.registry).count_tasks()
        return not (counts.get(TaskState.RUNNING) or counts.get(TaskState.READY)
                    or h.launcher.running())

    wait_until(wound_down, 30, "every task finished or blocked")
    h.settle()
    assert h.problems() == []
    snap = h.fresh_snapshot()
    assert snap.running == ()
    queued = {q.key: q for q in snap.queued}
    for task in raw(h.registry).list_tasks():
        if task.state.terminal:
            continue
        assert task.state is TaskState.BLOCKED, (task.key, task.state)
        view = queued.get(task.key)
        assert view is not None and view.pending.reason in (
            PendingReason.BLOCKED_BY_FAILURE, PendingReason.WAITING_DEPENDENCIES), task.key
        if view.pending.reason is PendingReason.WAITING_DEPENDENCIES:
            pytest.fail(f"{task.key} waits on dependencies although nothing runs: {view}")
    h.assert_counters_match_registry()


# --------------------------------------------------------------------------------------------
# outside writers, self-named runners, reports racing limits, shutdown during launch
# --------------------------------------------------------------------------------------------


def test_outside_reset_to_ready_fences_then_runs_it_again(make: Callable[..., H]) -> None:
    h = make()
    (key,) = h.submit(Task(id="x", title="X"))
    first = h.runner_of(key)
    h.settle()
    # another process (an older CLI, an operator's script) puts the task back to READY
    raw(h.registry).transition(key, TaskState.READY, expected=TaskState.RUNNING,
                              runner_id=None)
    h.core.wake()
    wait_until(lambda: first in h.launcher.stops, 10, "the orphaned runner fenced")
    h.settle()
    assert h.problems() == []
    second = h.runner_of(key, count=2)  # it must run again, after the fence
    h.launcher.finish(second, 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()


def test_outside_cancel_of_a_running_task_fences_and_releases(make: Callable[..., H]) -> None:
    h = make()
    (key,) = h.submit(Task(id="x", title="X"))
    first = h.runner_of(key)
    h.settle()
    raw(h.registry).transition(key, TaskState.CANCELLED, expected=TaskState.RUNNING,
                              runner_id=None)
    h.core.wake()
    wait_until(lambda: first in h.launcher.stops, 10, "the orphaned runner fenced")
    h.assert_sound()
    assert h.task(key).state is TaskState.CANCELLED
    assert h.pool().running == 0 and h.slots.released == 1
    assert len(h.launcher.launches) == 1


class SelfNaming(Recorder):
    """A launcher that names its runners itself (as a platform may)."""

    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        return super().launch(task.copy(runner_id=None), slot, pool, attempt=attempt)


@pytest.mark.parametrize("fail", [False, True])
def test_self_named_runner_is_recorded_even_if_that_write_fails(make: Callable[..., H],
                                                               fail: bool) -> None:
    registry = FlakyRegistry()
    launcher = SelfNaming()
    h = make(registry=registry, launcher=launcher)
    launcher.registry = None  # the registry names the engine's id until the rename lands
    if fail:
        registry.fault = nth_faults({1: "before"}, lambda method, key, to, kw:
                                    method == "update_task" and "runner_id" in kw)
    (key,) = h.submit(Task(id="x", title="X"))
    rid = h.runner_of(key)
    h.settle()
    assert h.problems() == []
    assert list(h.core.diagnose().runner_ids) == [rid]
    assert h.task(key).runner_id == rid
    assert h.pool().running == 1
    launcher.finish(rid, 0)
    h.wait_state(key, TaskState.DONE)
    h.assert_sound()
    assert h.pool().running == 0


def test_reported_success_wins_over_a_timeout_during_the_exit_grace(make: Callable[..., H]
                                                                    ) -> None:
    h = make(runner_stop_grace=1.5)
    (key,) = h.submit(Task(id="x", title="X", timeout=0.6, max_attempts=1))
    rid = h.runner_of(key)
    h.settle()
    h.launcher.hang(rid)
    EngineApiHandler(h.core).on_complete(rid, {"exit_code": 0})  # well before the timeout
    final = h.wait_state(key, TaskState.DONE, TaskState.FAILED, timeout=15)
    h.assert_sound()
    assert final.state is TaskState.DONE, final.last_error


def test_stop_while_launching_requeues_without_an_attempt(make: Callable[..., H]) -> None:
    launcher = GatedRecorder()
    h = make(launcher=launcher)
    (key,) = h.submit(Task(id="x", title="X"))
    assert launcher.entered.wait(10)
    stopper = threading.Thread(target=h.core.stop, kwargs={"timeout": 0.1})
    stopper.start()
    wait_until(lambda: h.core.snapshot().state in ("draining", "stopping"), 5, "draining")
    time.sleep(0.2)  # past the drain deadline while the launch still hangs
    launcher.gate.set()
    stopper.join(20)
    assert not stopper.is_alive()
    assert launcher.running() == []
    t = h.task(key)
    assert t.state is TaskState.READY and t.attempts == 0 and t.runner_id is None
    assert h.slots.in_use_count() == 0 and h.pool().running == 0


def test_leave_running_while_launching_then_adopt(tmp_path: Path) -> None:
    launcher = GatedRecorder()
    h1 = H(tmp_path, launcher=launcher)
    h1.core.start()
    (key,) = h1.submit(Task(id="x", title="X"))
    assert launcher.entered.wait(10)
    stopper = threading.Thread(target=h1.core.stop, kwargs={"timeout": 5, "leave_running": True})
    stopper.start()
    wait_until(lambda: h1.core.snapshot().state in ("draining", "stopping"), 5, "draining")
    launcher.gate.set()
    stopper.join(20)
    assert not stopper.is_alive()
    (rid,) = launcher.running()
    assert h1.task(key).state is TaskState.RUNNING and h1.task(key).runner_id == rid
    launcher.add_adoptable(launcher.runner(rid))
    h2 = H(tmp_path, registry=h1.registry, launcher=launcher)
    h2.exact_assignments = False
    h2.core.start()
    try:
        h2.settle()
        assert h2.problems() == []
        launcher.finish(rid, 0)
        h2.wait_state(key, TaskState.DONE)
        h2.assert_sound()
        assert len(launcher.launches) == 1
        assert h2.events(key).count(EventType.RUNNER_COMPLETED) == 1
    finally:
        h2.core.stop(timeout=0.5)


def test_the_same_core_can_start_again_after_stop(make: Callable[..., H]) -> None:
    h = make()
    (a,) = h.submit(Task(id="a", title="A"))
    h.runner_of(a)
    h.core.stop(timeout=0.1)
    assert h.task(a).state is TaskState.READY
    h.core.start()
    (b,) = h.submit(Task(id="b", title="B"), name="two")
    h.launcher.finish(h.runner_of(a, count=2), 0)
    h.launcher.finish(h.runner_of(b), 0)
    h.wait_state(a, TaskState.DONE)
    h.wait_state(b, TaskState.DONE)
    h.assert_sound()
    h.assert_counters_match_registry()
    assert h.pool().running == 0
