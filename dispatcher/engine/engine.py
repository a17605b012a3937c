"""Engine: the thread that drives the components, and the only one that touches their state.

Other threads post :mod:`~.commands` to its queue and read snapshots. The loop sleeps on that
queue until the nearest deadline (next registry poll, next retry, next liveness check, next task
timeout), so a submit, a completion, a heartbeat or a control command wakes it at once. One
iteration: retry failed writes, poll the registry for changes, release ended backoffs, finish
runners that exited, judge the others, run a scheduling round, flush batched events, check for
deadlocks, step the drain, publish a snapshot.
"""

from __future__ import annotations

import gc
import logging
import os
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..agents.prompt import DependencyResult, dependency_results
from ..api.connections import ConnectionLimits
from ..errors import DispatcherError, RegistryLostError
from ..launchers.base import LaunchEnvironment, RunnerLauncher
from ..leader import LeaderElector
from ..models import AgentPool, EventType, Task, TaskEvent, TaskState
from ..task_monitor import TaskMonitor
from .api_bridge import ApiService
from .commands import (
    Command,
    CompletionReport,
    Control,
    EngineCall,
    FenceOutcome,
    Heartbeat,
    LandFinished,
    LaunchFinished,
    LeadershipGained,
    LeadershipLost,
    PlatformAnswer,
    PlatformHealth,
    RunnerExited,
    SlotReleased,
    StopConfirmed,
    StopEngine,
    StopUnconfirmed,
    Wake,
    WorkCommitted,
)
from .controls import Controls
from .diagnostics import EngineDiagnostics, diagnose
from .drain import Drain
from .launch_plane import LaunchParts, LaunchPlane
from .ownership import Ownership
from .parts import Seed, build_parts
from .platforms import Platforms
from .publisher import Publisher, initial_snapshot
from .restart import Restart
from .runner_table import RunnerRecord
from .snapshot_builder import SnapshotSources
from .supervisor import Supervisor
from .workspaces import SlotProvider

if TYPE_CHECKING:
    from ..core import DispatcherCore

logger = logging.getLogger(__name__)

PLATFORM_CHECK_INTERVAL = 1.0  # seconds between liveness checks of every runner
MAX_CONSECUTIVE_ERRORS = 50  # failed iterations in a row that end the engine


class Engine:
    """The components of one Dispatcher and the thread that drives them."""

    def __init__(self, seed: Seed, monitor: TaskMonitor, registry_label: str,
                 repo_pool: Callable[[], SlotProvider],
                 given_launchers: dict[Any, RunnerLauncher],
                 elector: LeaderElector | None = None) -> None:
        self._commands: queue_mod.SimpleQueue[Command] = queue_mod.SimpleQueue()
        self.ownership = Ownership(elector, self.post)
        self.parts = p = build_parts(seed, self.post, repo_pool, self.has_runner,
                                     on_written=self.after_write,
                                     on_refused=self.registry_changed)
        self._monitor = monitor
        self.platforms = Platforms(seed.pools.pools, p.admission, given_launchers, self.post)
        self.launches = LaunchPlane(
            LaunchParts(registry=seed.registry, recorder=seed.recorder, events=p.events,
                        admission=p.admission, settler=p.settler, runners=p.runners,
                        directory=p.directory, workspaces=p.workspaces, book=p.book,
                        views=p.views, metrics=seed.metrics, runs_dir=seed.runs_dir,
                        work=seed.config.work, agents=p.agents, usage=p.usage),
            self.post, self.platforms.launcher_for, note=self.after_write,
            registry_changed=self.registry_changed, fence=self._fence,
            may_act=self.ownership.may_act)
        self.supervisor = Supervisor(p, self.launches, p.admission.place)
        self.restart = Restart(p, self.platforms, self.post, self.has_runner, self.note,
                               self._fence)
        self.controls = Controls(p, self.launches, self._fence, self.after_write,
                                 self.ownership)
        self.drain = Drain(p, self.launches, self._fence)
        self.api = ApiService(seed.config.api_host, seed.config.api_port,
                              seed.config.resolved_state_dir(), ConnectionLimits(
                                  seed.config.api_max_connections,
                                  seed.config.api_max_connections_per_client,
                                  seed.config.api_read_timeout))
        self.publisher = Publisher(
            SnapshotSources(config=seed.config, registry=seed.registry,
                            registry_label=registry_label, book=p.book, views=p.views,
                            admission=p.admission, runners=p.runners, launches=self.launches,
                            reconciler=p.reconciler, settler=p.settler, deadlocks=p.deadlocks,
                            health=p.health, ownership=self.ownership, usage=p.usage, work=p.work,
                            landings=p.landings),
            seed.metrics, initial_snapshot(seed.config, seed.registry, registry_label,
                                           seed.pools))
        self.state = "stopped"
        self.crash: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._registry_dirty = True
        self._next_poll = 0.0
        self._next_platform_check = 0.0
        self._next_replay = 0.0

    # --- what other components ask ---------------------------------------------------------
    def post(self, command: Command) -> None:
        """Hand a command to the engine thread (any thread)."""
        self._commands.put(command)

    def has_runner(self, key: str) -> bool:
        """The task has a live runner, one being launched, or one not known gone."""
        p = self.parts
        return p.runners.has_task(key) or key in self.launches or key in p.reconciler \
            or key in p.work

    def note(self, task: Task) -> None:
        """The newest version of a task: into the TaskBook; the deadlock watch and the usage
        ledger hear of it."""
        change = self.parts.book.apply(task)
        self.parts.deadlocks.note(change)
        self.parts.usage.note(change)

    def after_write(self, task: Task) -> None:
        """A task this engine wrote: noted, and its echo polled."""
        self.note(task)
        self._registry_dirty = True

    def registry_changed(self) -> None:
        """Someone else moved a task: poll the registry at the next iteration."""
        self._registry_dirty = True

    def _fence(self, rec: RunnerRecord, outcome: FenceOutcome, reason: str) -> None:
        self.supervisor.fence(rec, outcome, reason)

    @property
    def paused(self) -> bool:
        return self.parts.admission.paused

    # --- start and stop --------------------------------------------------------------------
    def start(self, core: DispatcherCore) -> None:
        """The API, the launchers, the workers, reconcile, then the thread. Returns at once."""
        seed = self.parts.seed
        self.state = "starting"
        self.drain.reset()
        self.crash = None
        seed.recorder.replay()
        if not self.ownership.elected:
            self.restart.expect()  # heartbeats of the runners it will adopt: keep going
        if seed.config.api_enabled:
            self.api.start(core, self.publisher.builder.src.registry_label)
        self.platforms.setup(self._launch_env())
        self.publisher.builder.start_events_at(seed.registry.current_seq())
        self.parts.fencer.start()
        self.parts.workspaces.start()
        self.parts.work.start()
        self.parts.landings.start()
        if self.ownership.elected:  # a standby until the Lease is ours: then reconcile
            self.state = "standby"
            self.ownership.start()
        else:
            self.restart.reconcile()
        self.platforms.start_checks()
        self.launches.start()
        pid = os.getpid()
        self.parts.events.record(TaskEvent(
            event_type=EventType.DISPATCHER_STARTED,
            message=f"dispatcher started (pid {pid}, policy "
                    f"{getattr(seed.config.scheduling_policy, 'value', '')}, "
                    f"api {self.api.url or 'off'})",
            details={"pid": pid, "api_url": self.api.url}))
        seed.metrics.bind(snapshot_source=self.publisher.snapshot)  # scrapes read snapshots
        if not self.ownership.elected:
            self.state = "running"
        now = time.time()  # first look at the registry before the thread: a true first snapshot
        for task in self._monitor.poll_changes():
            self._apply_change(task, now)
        self._publish(now, force=True)
        # what the start built (every task, view and index) joins the collector's oldest
        # generation at once, so young collections stop walking it (a big queue's start)
        gc.freeze()
        gc.unfreeze()
        self._registry_dirty = True
        self.thread = threading.Thread(target=self._run, name="necrocode-engine", daemon=True)
        self.thread.start()

    def _launch_env(self) -> LaunchEnvironment:
        config = self.parts.config
        registry = self.parts.registry

        def dependencies(task: Task) -> tuple[DependencyResult, ...]:
            """What a task's dependencies left, for its prompt (launch workers: a registry
            read, thread-safe)."""
            keys = [f"{task.taskset}/{dep}" for dep in task.dependencies]
            return dependency_results(task, registry.get_tasks(keys)) if keys else ()

        return LaunchEnvironment(
            api_url=self.api.url, token_for=self.api.token_for, runs_dir=self.parts.seed.runs_dir,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_timeout=config.heartbeat_timeout,
            stop_grace=config.runner_stop_grace,
            on_exit=lambda runner_id: self.post(RunnerExited(runner_id)),
            prompt_template=config.agent_prompt_template, dependency_results=dependencies,
            log_max_bytes=config.output_log_max_bytes)

    def teardown(self) -> None:
        """After the thread ended: workers, API server and launchers stop; a Lease held is
        handed over at once."""
        self.ownership.stop()
        self.platforms.stop_checks()
        self.launches.shutdown()
        self.parts.fencer.shutdown()
        self.parts.workspaces.shutdown()
        self.parts.work.shutdown()
        self.parts.landings.shutdown()
        self.parts.agents.close()
        self.api.stop()
        self.platforms.close()
        self.state = "stopped"
        self._publish(time.time(), force=True)

    # --- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        errors = 0
        try:
            while True:
                try:
                    now = time.time()
                    timeout = max(0.0, self._next_deadline(now) - now)
                    for cmd in self._take_commands(timeout):
                        self._handle(cmd)
                    self._iterate(time.time())
                    errors = 0
                except RegistryLostError:
                    raise  # going on would dispatch from an empty registry
                except Exception:
                    # one bad iteration (a registry hiccup, a bug in a plug-in policy) must not
                    # kill the engine; a persistent failure still ends it
                    errors += 1
                    if errors >= MAX_CONSECUTIVE_ERRORS:
                        raise
                    logger.exception("engine iteration failed (%d in a row); continuing",
                                     errors)
                    self._registry_dirty = True
                    time.sleep(min(2.0, 0.05 * errors))
                if self.drain.finished():
                    break
        except DispatcherError as exc:  # a stop the engine chose: its message says why
            self.crash = exc
            logger.error("the engine stopped: %s", exc)
        except BaseException as exc:  # keep the process sane: log, then stop cleanly
            self.crash = exc
            logger.exception("engine loop crashed")
        finally:
            self._finish()

    def _finish(self) -> None:
        left = len(self.parts.runners)
        try:
            self.parts.events.record(TaskEvent(
                event_type=EventType.DISPATCHER_STOPPED,
                message="dispatcher stopped" + (
                    f"; {left} runner(s) left running for the next start to adopt"
                    if left else "") + (f" after an engine error: {self.crash}"
                                        if self.crash else ""),
                details={"left_running": left}))
        except Exception:
            logger.exception("could not record DispatcherStopped")
        self.state = "stopped"
        self._publish(time.time(), force=True)

    def _take_commands(self, timeout: float) -> list[Command]:
        try:
            first = self._commands.get(timeout=timeout) if timeout > 0 \
                else self._commands.get_nowait()
        except queue_mod.Empty:
            return []
        out = [first]
        while True:
            try:
                out.append(self._commands.get_nowait())
            except queue_mod.Empty:
                return out

    def _handle(self, cmd: Command) -> None:
        reply: Future[Any] | None = getattr(cmd, "reply", None)
        p = self.parts
        try:
            result: Any = None
            match cmd:
                case Wake():
                    self._registry_dirty = True
                case RunnerExited(runner_id=rid):
                    p.runners.flag_exit(rid)
                case Heartbeat(runner_id=rid, progress=progress, usage=usage):
                    self.supervisor.heartbeat(rid, progress, usage)
                case CompletionReport(runner_id=rid, report=report):
                    self.supervisor.report(rid, dict(report))
                case SlotReleased(key=key):
                    p.workspaces.released(key)
                    p.admission.slot_may_have_freed()
                case LaunchFinished(key=key, outcome=outcome):
                    self.launches.finished(key, outcome)
                case WorkCommitted():
                    self.supervisor.work_committed(cmd)
                case LandFinished():
                    p.landings.finished(cmd)
                case StopConfirmed():
                    self.supervisor.fenced(cmd)
                case StopUnconfirmed():
                    self.supervisor.stop_unconfirmed(cmd)
                case PlatformAnswer():
                    self.restart.answered(cmd)
                case PlatformHealth(pool=pool, ok=ok, message=message):
                    self.platforms.set_health(pool, ok, message)
                case LeadershipGained():
                    self._take_over()
                case LeadershipLost(reason=reason):
                    self._stand_down(reason)
                case StopEngine(timeout=timeout, leave_running=leave):
                    self.drain.begin(timeout, leave)
                case Control(verb=verb, args=args):
                    result = self.controls.apply(verb, dict(args))
                case EngineCall(fn=fn):
                    result = fn()
            if reply is not None:
                reply.set_result(result)
        except Exception as exc:
            if reply is not None:
                reply.set_exception(exc)
            else:
                logger.exception("engine command %s failed", type(cmd).__name__)

    def _next_deadline(self, now: float) -> float:
        p = self.parts
        if self._registry_dirty or p.runners.has_flagged or (
                p.admission.wants_round and self._dispatching):
            return now
        times = [self._next_poll, p.deadlocks.next_check(), p.book.throughput.next_roll()]
        if len(p.runners):
            times.append(self._next_platform_check)
        times += [t for t in (p.admission.next_backoff_end(), self.publisher.due(),
                              self.drain.deadline, p.reconciler.next_ask(),
                              p.settler.next_deferred_at(), self.supervisor.next_timeout())
                  if t is not None]
        if self.launches.has_unsure:  # assignments to ask the registry about again
            times.append(now + 0.5)
        if p.seed.recorder.has_fallback:
            times.append(self._next_replay or now + 1.0)
        return min(times)

    @property
    def _dispatching(self) -> bool:
        return self.state == "running" and not self.drain.requested \
            and self.ownership.may_act()

    # --- leadership (ha:) ------------------------------------------------------------------
    def _take_over(self) -> None:
        """The Lease is ours: adopt what the previous leader left running, then dispatch."""
        if self.drain.requested:
            return
        if self.ownership.take_over(self.parts, self.restart.reconcile):
            self.state = "running"
            self._registry_dirty = True

    def _stand_down(self, reason: str) -> None:
        """The Lease is lost: act no more (see :meth:`Ownership.stand_down`)."""
        if self.ownership.stand_down(self.parts, reason):
            self.state = "standby"

    def _iterate(self, now: float) -> None:
        p = self.parts
        if p.book.throughput.roll(now):
            p.views.mark()
        p.settler.retry_deferred(now)
        if self.launches.has_unsure:
            self.launches.resolve_unsure(self.has_runner)
        if len(p.reconciler):
            self.restart.ask_again(now)
        self._replay_fallback(now)
        if self._registry_dirty or now >= self._next_poll:
            self._registry_dirty = False
            self._next_poll = now + max(0.05, float(p.config.poll_interval))
            for task in self._monitor.poll_changes(self.launches.own_echo):
                self._apply_change(task, now)
        p.admission.release_due(now)
        if len(p.runners):
            for update in p.agents.updates():  # coding agents: progress, usage, budgets
                self.supervisor.agent_progress(update, now)
        if p.runners.has_flagged:
            self.supervisor.check_exits(p.runners.take_flagged())
        due = self.supervisor.next_timeout()
        if len(p.runners) and (now >= self._next_platform_check
                               or (due is not None and now >= due)):
            self._next_platform_check = now + min(
                PLATFORM_CHECK_INTERVAL, max(0.05, p.config.heartbeat_timeout / 4))
            self.supervisor.check_exits(p.runners.ids())
            self.supervisor.check_liveness(now)
        if self._dispatching and p.admission.wants_round:
            self._schedule_round(now)
        p.events.flush()
        p.deadlocks.check(now, p.book)
        if self.drain.requested:
            self.drain.step(now)
        self._publish(now)

    def _replay_fallback(self, now: float) -> None:
        """Events the registry refused are replayed a second later, then every second."""
        recorder = self.parts.seed.recorder
        if not recorder.has_fallback:
            self._next_replay = 0.0
        elif not self._next_replay:
            self._next_replay = now + 1.0
        elif now >= self._next_replay:
            recorder.replay()
            self._next_replay = now + 1.0 if recorder.has_fallback else 0.0
            self.parts.views.mark()

    def _apply_change(self, task: Task, now: float) -> None:
        """A task changed in the registry (our write's echo, or another process's)."""
        p = self.parts
        key = task.key
        self.note(task)
        if key in p.reconciler:  # its runner may still run: only a platform answer settles
            return
        if key in self.launches:
            # READY: its compare-and-set has not landed yet (a refusal comes back from the
            # worker); RUNNING: ours. Anything else: someone settled it while it launches.
            if task.state not in (TaskState.READY, TaskState.RUNNING):
                self.launches.request_stop(
                    key, FenceOutcome.ORPHAN,
                    f"task moved to {task.state.value} outside the dispatcher",
                    only_if_unset=True)
            return
        rec = p.runners.for_task(key)
        if rec is not None:
            if task.state is not TaskState.RUNNING and rec.runner_id not in p.fencer:
                # someone else settled the task while its runner runs: stop the runner
                self._fence(rec, FenceOutcome.ORPHAN,
                            f"task moved to {task.state.value} outside the dispatcher")
            return
        p.admission.place(task, now)

    def _schedule_round(self, now: float) -> None:
        started = time.perf_counter()
        decisions = self.parts.admission.round(now)
        for task, pool in decisions:
            self.launches.launch(task, pool, now)
        for task, why in self.parts.admission.take_invalid():  # each fails alone, visibly
            self.parts.settler.attempt_failed(task, TaskState.READY, None, "invalid_task",
                                              f"cannot be scheduled: {why}", retryable=False)
        if decisions:
            self.parts.metrics.observe_round(time.perf_counter() - started)

    def publish_now(self) -> None:
        """Publish a snapshot at once (engine thread)."""
        self._publish(time.time(), force=True)

    def _publish(self, now: float, *, force: bool = False) -> None:
        state = self.state
        if self.drain.requested and state == "running":
            state = "stopping" if self.drain.stopping else "draining"
        elif state == "running" and self.paused:
            state = "paused"
        self.publisher.publish(now, state, self.api.url, force=force)

    # --- diagnostics -----------------------------------------------------------------------
    def diagnostics(self) -> EngineDiagnostics:
        """A consistent look at the components (engine thread)."""
        return diagnose(self.parts, self.launches, self._monitor.seq, self._registry_dirty)

    def pool_of(self, pool_name: str) -> AgentPool | None:
        return self.parts.seed.pools.pools.get(pool_name)

