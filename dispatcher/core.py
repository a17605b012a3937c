"""DispatcherCore: the engine loop that ties the Dispatcher's components together.

One engine thread alone mutates scheduling state (queue, pool counters, runner table, retry
timers). Everything else — the console, the HTTP API, launcher watcher threads, signal handlers —
posts :class:`~.engine_state.Command` objects to a thread-safe queue and reads frozen
:class:`~.snapshot.Snapshot` objects. The loop sleeps on its command queue until the nearest
deadline (next registry poll, next retry, next liveness check), so a submit, a completion, a
heartbeat or a control command wakes it at once.

The parts: runner lifecycle (exits, failures and retries, fencing) in :mod:`.engine_runners`,
launches in :mod:`.engine_launch`, restart reconciliation in :mod:`.engine_reconcile`, API and
launcher setup and the shutdown drain in :mod:`.engine_lifecycle`, control verbs in
:mod:`.engine_control`, snapshot assembly in :mod:`.engine_snapshot`, its publication (with the
deadlock check and throughput) in :mod:`.engine_publish`, the API handler and the state files in
:mod:`.engine_api`, shared state in :mod:`.engine_state`.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from .config import DispatcherConfig
from .deadlock import DeadlockDetector
from .engine.admission import Admission
from .engine.commands import (
    Command,
    CompletionReport,
    Control,
    EngineCall,
    FenceOutcome,
    Heartbeat,
    LaunchFinished,
    PlatformAnswer,
    PlatformHealth,
    RunnerExited,
    SlotReleased,
    StopConfirmed,
    StopEngine,
    StopUnconfirmed,
    Wake,
)
from .engine.event_log import EventLog
from .engine.fencer import Fencer
from .engine.launch_plane import LaunchParts, LaunchPlane
from .engine.reconciler import Reconciler
from .engine.runner_table import RunnerDirectory, RunnerRecord, RunnerTable
from .engine.settler import Settler
from .engine.taskbook import TaskBook, ViewChanges
from .engine.workspaces import Workspaces
from .engine_api import (
    read_dispatcher_info,
    remove_dispatcher_info,
)
from .engine_control import ControlMixin
from .engine_lifecycle import LifecycleMixin
from .engine_publish import PublishMixin
from .engine_reconcile import ReconcileMixin
from .engine_snapshot import SnapshotBuilder
from .errors import DispatcherError, DispatcherStateError
from .events import EventRecorder
from .launchers.base import RunnerLauncher
from .metrics import MetricsCollector
from .models import AgentPool, EventType, PoolType, Task, TaskEvent, Taskset, TaskState
from .pool_manager import AgentPoolManager
from .registry.base import SubmitResult, TaskRegistry
from .retry import RetryManager
from .runner_monitor import RunnerMonitor
from .scheduler import Scheduler
from .task_monitor import TaskMonitor
from .task_queue import TaskQueue

logger = logging.getLogger(__name__)

CONTROL_TIMEOUT = 5.0  # seconds a control call waits for the engine's answer
PLATFORM_CHECK_INTERVAL = 1.0  # seconds between liveness checks of every runner
MAX_CONSECUTIVE_ERRORS = 50  # failed iterations in a row that end the engine


def _validated(config: DispatcherConfig) -> DispatcherConfig:
    """``config`` if valid, else ConfigError listing every problem (as for a config file).

    Two deviations for configs built in code (fast test setups): a ``retry_backoff_base``
    between 0 and 1 (a shrinking backoff) is accepted, and a ``heartbeat_interval`` not shorter
    than ``heartbeat_timeout`` is a warning (wrapped runners would be lost between heartbeats).
    """
    from .config_loader import validate_config
    from .errors import ConfigError

    problems = []
    for p in validate_config(config):
        base = config.retry_backoff_base
        if p.key == "dispatcher.retry_backoff_base" and isinstance(base, int | float) \
                and not isinstance(base, bool) and 0 < base < 1:
            continue
        if p.key == "dispatcher.heartbeat_interval" and "shorter than" in p.message:
            logger.warning("%s", p.message)
            continue
        problems.append(p)
    if problems:
        raise ConfigError(problems, "invalid configuration given to DispatcherCore")
    return config


def _with_default_pools(config: DispatcherConfig) -> DispatcherConfig:
    if config.agent_pools:
        return config
    logger.info("no agent_pools configured: using one local-process pool 'local' of %d runners",
                4)
    return replace(config, agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS,
                                                  max_concurrency=4)],
                   skill_mapping=config.skill_mapping or {"default": ["local"]})


class DispatcherCore(ControlMixin, PublishMixin, LifecycleMixin, ReconcileMixin):
    """The Dispatcher's main controller (seed API: ``start()``, ``stop(timeout)``,
    ``get_status()``), with thread-safe control methods and frozen snapshots.

    ``registry`` defaults to the one the config names; ``launchers`` maps a pool type (or a pool
    name) to its launcher (default: built at start for the configured pool types); ``metrics``
    defaults to a new MetricsCollector.
    """

    def __init__(
        self,
        config: DispatcherConfig | None = None,
        *,
        registry: TaskRegistry | None = None,
        launchers: dict[Any, RunnerLauncher] | None = None,
        metrics: MetricsCollector | None = None,
    ) -> None:
        self.config = _with_default_pools(_validated(config or DispatcherConfig()))
        self._owns_registry = registry is None
        if registry is None:
            from .registry import open_registry

            registry = open_registry(self.config.resolved_registry_path())
        self.registry = registry
        self.registry_label = str(getattr(registry, "path", None)
                                  or self.config.resolved_registry_path())
        self.state_dir = self.config.resolved_state_dir()
        self.runs_dir = self.state_dir / "runs"
        self.events = EventRecorder(registry, self.state_dir)
        self.task_monitor = TaskMonitor(self.config, registry)
        self.queue = TaskQueue()
        self.pool_manager = AgentPoolManager(self.config)
        self.scheduler = Scheduler(self.config.scheduling_policy, self.config)
        self.retry_manager = RetryManager(self.config)
        self.runner_monitor = RunnerMonitor(self.config.heartbeat_timeout)
        self.deadlock_detector = DeadlockDetector(self.config)
        self._repo_pool: Any = None
        self.metrics = metrics if metrics is not None else MetricsCollector(self.config)
        self._given_launchers = dict(launchers or {})
        self._launchers = {}
        self.api_url: str | None = None
        self._api_server: Any = None
        self._secret: bytes = b""
        self.admin_token: str | None = None

        self._commands: queue_mod.SimpleQueue[Command] = queue_mod.SimpleQueue()
        self._directory = RunnerDirectory()
        self._runners = RunnerTable(self.runner_monitor, self._directory)
        self._fencer = Fencer(self.config.runner_stop_grace, self._post)
        self._deadlocks = ()
        self._deadlocked_keys = set()
        self._reported_cycles: set[frozenset[str]] = set()
        self._state = "stopped"
        self._registry_dirty = True
        self._engine_thread = None
        self._views = ViewChanges()
        self._event_log = EventLog(self.events)
        self._settler = Settler(self.config, self._event_log, self.retry_manager, self.metrics,
                                on_written=self._after_write,
                                on_refused=self._registry_changed)
        self._book = TaskBook(self._views, time.time())
        self._admission = Admission(self.queue, self.scheduler, self.pool_manager, self._book,
                                    self._views, self._has_runner)
        self._workspaces = Workspaces(lambda: self.repo_pool, self._post)
        self._reconciler = Reconciler()
        self._launches = LaunchPlane(
            LaunchParts(registry=registry, recorder=self.events, events=self._event_log,
                        admission=self._admission, settler=self._settler, runners=self._runners,
                        directory=self._directory, workspaces=self._workspaces,
                        book=self._book, views=self._views, metrics=self.metrics,
                        runs_dir=self.runs_dir),
            self._post, self._launcher_for, note=self._after_write,
            registry_changed=self._registry_changed, fence=self._fence)
        self._next_poll = 0.0
        self._next_platform_check = 0.0
        self._next_deadlock_check = 0.0
        self._deadlock_dirty = True
        self._next_snapshot_at = 0.0
        self._next_replay = 0.0
        self._drain_deadline: float | None = None
        self._leave_running = False
        self._stop_requested = False
        self._crash: BaseException | None = None
        self._control_lock = threading.RLock()
        self._snap_cond = threading.Condition()
        self._builder = SnapshotBuilder(self)
        self._snapshot = self._initial_snapshot()

    # --- properties ------------------------------------------------------------------------
    @property
    def repo_pool(self) -> Any:
        """The Repo Pool Manager (built on first use: it creates the workspace folders)."""
        if self._repo_pool is None:
            from .repo_pool import RepoPoolManager

            self._repo_pool = RepoPoolManager(self.state_dir, self.config.slots_per_repo)
        return self._repo_pool

    @repo_pool.setter
    def repo_pool(self, value: Any) -> None:
        self._repo_pool = value

    @property
    def is_running(self) -> bool:
        """True while the engine thread runs."""
        thread = self._engine_thread
        return thread is not None and thread.is_alive()

    @property
    def paused(self) -> bool:
        return self._admission.paused

    @property
    def runner_directory(self) -> RunnerDirectory:
        """Which runner ids are launching, running or being stopped (thread-safe)."""
        return self._directory

    @property
    def launchers(self) -> dict[Any, RunnerLauncher]:
        return dict(self._launchers)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the API, reconcile RUNNING tasks, then the engine thread. Returns at once."""
        if self.is_running:
            raise DispatcherStateError("the dispatcher is already running; stop() it first")
        other = read_dispatcher_info(self.state_dir)
        if other is not None and other.get("pid") != _pid():
            raise DispatcherStateError(
                f"another dispatcher (pid {other.get('pid')}) runs on this state dir "
                f"({self.state_dir}) at {other.get('url')}; stop it first, or use another "
                "registry")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._state = "starting"
        self._stop_requested = False
        self._leave_running = False
        self._drain_deadline = None
        self._crash = None
        self.events.replay()
        if self.config.api_enabled:
            self._start_api()
        self._setup_launchers()
        self._builder.start_events_at(self.registry.current_seq())
        self._fencer.start()
        self._workspaces.start()
        self._reconcile()
        self._start_health_checks()
        self._launches.start()
        self._event_log.record(TaskEvent(
            event_type=EventType.DISPATCHER_STARTED,
            message=f"dispatcher started (pid {_pid()}, policy "
                    f"{getattr(self.config.scheduling_policy, 'value', '')}, "
                    f"api {self.api_url or 'off'})",
            details={"pid": _pid(), "api_url": self.api_url}))
        self.metrics.bind(snapshot_source=self.snapshot)  # scrapes read snapshots only
        self._state = "running"
        now = time.time()  # first look at the registry before the thread: a true first snapshot
        for task in self.task_monitor.poll_changes():
            self._apply_change(task, now)
        self._publish(now, force=True)
        self._registry_dirty = True
        self._engine_thread = threading.Thread(target=self._run, name="necrocode-engine",
                                               daemon=True)
        self._engine_thread.start()
        logger.info("dispatcher started: registry %s, state dir %s", self.registry_label,
                    self.state_dir)

    def stop(self, timeout: float | None = None, *, leave_running: bool = False) -> None:
        """Graceful shutdown: take no new tasks, wait up to ``timeout`` seconds (default
        ``graceful_shutdown_timeout``) for running runners, then stop the rest and put their
        tasks back to READY without spending an attempt. ``leave_running=True`` leaves the
        runners alive for the next start to adopt."""
        if timeout is None:
            timeout = self.config.graceful_shutdown_timeout
        thread = self._engine_thread
        if thread is not None and thread.is_alive():
            self._post(StopEngine(float(timeout), leave_running))
            # wait for the drain, the fences and a little more
            thread.join(float(timeout) + self.config.runner_stop_grace + 30.0)
            if thread.is_alive():
                logger.error("engine thread did not stop in time")
        self._engine_thread = None
        self._teardown()

    def _teardown(self) -> None:
        self._stop_health_checks()
        self._launches.shutdown()
        self._fencer.shutdown()
        self._workspaces.shutdown()
        if self._api_server is not None:
            try:
                self._api_server.stop()
            except Exception:
                logger.exception("API server stop failed")
            self._api_server = None
        if not self._leave_running:  # kept otherwise: the next start reuses the API port
            remove_dispatcher_info(self.state_dir)
        for launcher in {id(v): v for v in self._launchers.values()}.values():
            try:
                launcher.close()
            except Exception:
                logger.exception("launcher close failed")
        self._state = "stopped"
        self._publish(time.time(), force=True)
        if self._owns_registry:
            try:
                self.registry.close()
            except Exception:
                logger.debug("registry close failed", exc_info=True)

    # --- commands --------------------------------------------------------------------------
    def _post(self, command: Command) -> None:
        self._commands.put(command)

    def _registry_changed(self) -> None:
        """Someone else moved a task: poll the registry at the next iteration."""
        self._registry_dirty = True

    def _wake(self) -> None:
        self._post(Wake())

    def _on_runner_exit(self, runner_id: str) -> None:
        """Launcher watcher threads call this when a runner's process ended."""
        self._post(RunnerExited(runner_id))

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
        try:
            result: Any = None
            match cmd:
                case Wake():
                    self._registry_dirty = True
                case RunnerExited(runner_id=rid):
                    self._runners.flag_exit(rid)
                case Heartbeat(runner_id=rid, progress=progress):
                    rec = self._runners.get(rid)
                    if rec is not None and rid not in self._fencer \
                            and self._runners.heartbeat(rid, progress, time.time()):
                        self._views.touch(rec.key)
                case CompletionReport(runner_id=rid, report=report):
                    self._on_report(rid, dict(report))
                case SlotReleased(key=key):
                    self._workspaces.released(key)
                    self._admission.slot_may_have_freed()
                case LaunchFinished(key=key, outcome=outcome):
                    self._launches.finished(key, outcome)
                case StopConfirmed():
                    self._fenced(cmd)
                case StopUnconfirmed():
                    self._stop_unconfirmed(cmd)
                case PlatformAnswer():
                    self._platform_answered(cmd)
                case PlatformHealth(pool=pool, ok=ok, message=message):
                    self._set_platform_health(pool, ok, message)
                case StopEngine(timeout=timeout, leave_running=leave):
                    self._begin_drain(timeout, leave)
                case Control(verb=verb, args=args):
                    result = self._do_control(verb, dict(args))
                case EngineCall(fn=fn):
                    result = fn()
            if reply is not None:
                reply.set_result(result)
        except Exception as exc:
            if reply is not None:
                reply.set_exception(exc)
            else:
                logger.exception("engine command %s failed", type(cmd).__name__)

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
                if self._drain_finished():
                    break
        except BaseException as exc:  # keep the process sane: log, then stop cleanly
            self._crash = exc
            logger.exception("engine loop crashed")
        finally:
            self._finish_loop()

    def _next_deadline(self, now: float) -> float:
        if self._registry_dirty or self._runners.has_flagged or (
                self._admission.wants_round and self._state == "running"):
            return now
        deadline = self._next_poll
        backoff = self._admission.next_backoff_end()
        if backoff is not None:
            deadline = min(deadline, backoff)
        if self._runners:
            deadline = min(deadline, self._next_platform_check)
        if self._views.dirty:
            deadline = min(deadline, self._next_snapshot_at)
        if self._drain_deadline is not None:
            deadline = min(deadline, self._drain_deadline)
        ask = self._reconciler.next_ask()
        if ask is not None:  # platforms of unknown tasks to ask again
            deadline = min(deadline, ask)
        if self._launches.has_unsure:  # assignments to ask the registry about again
            deadline = min(deadline, now + 0.5)
        retry_at = self._settler.next_deferred_at()
        if retry_at is not None:  # settlement writes to try again
            deadline = min(deadline, retry_at)
        if self.events.has_fallback:
            deadline = min(deadline, self._next_replay or now + 1.0)
        deadline = min(deadline, self._next_deadlock_check, self._book.throughput.next_roll())
        return deadline

    def _iterate(self, now: float) -> None:
        if self._book.throughput.roll(now):
            self._views.mark()
        self._settler.retry_deferred(now)
        if self._launches.has_unsure:
            self._launches.resolve_unsure(self._has_runner)
        if len(self._reconciler):
            self._ask_again(now)
        if self.events.has_fallback:  # replayed a second after the registry refused, then
            if not self._next_replay:  # every second until it takes them
                self._next_replay = now + 1.0
            elif now >= self._next_replay:
                self.events.replay()
                self._next_replay = now + 1.0 if self.events.has_fallback else 0.0
                self._views.mark()
        else:
            self._next_replay = 0.0
        if self._registry_dirty or now >= self._next_poll:
            self._registry_dirty = False
            self._next_poll = now + max(0.05, float(self.config.poll_interval))
            for task in self.task_monitor.poll_changes():
                self._apply_change(task, now)
        self._admission.release_due(now)
        if self._runners.has_flagged:
            self._check_exits(self._runners.take_flagged())
        if self._runners and now >= self._next_platform_check:
            self._next_platform_check = now + min(
                PLATFORM_CHECK_INTERVAL, max(0.05, self.config.heartbeat_timeout / 4))
            self._check_exits(self._runners.ids())
            self._check_liveness(now)
        if self._state == "running" and self._admission.wants_round:
            self._schedule_round(now)
        self._event_log.flush()
        if now >= self._next_deadlock_check:
            self._next_deadlock_check = now + max(0.5, self.config.deadlock_check_interval)
            self._check_deadlocks()
        if self._drain_deadline is not None:
            self._drain_step(now)
        self._publish(now)

    def _apply_change(self, task: Task, now: float) -> None:
        """A task changed in the registry (our write's echo, or another process's)."""
        key = task.key
        self._note_task(task)
        if key in self._reconciler:  # its runner may still run: only a platform answer settles
            return
        if key in self._launches:
            # READY: its compare-and-set has not landed yet (a refusal comes back from the
            # worker); RUNNING: ours. Anything else: someone settled it while it launches.
            if task.state not in (TaskState.READY, TaskState.RUNNING):
                self._launches.request_stop(
                    key, FenceOutcome.ORPHAN,
                    f"task moved to {task.state.value} outside the dispatcher",
                    only_if_unset=True)
            return
        rec = self._runners.for_task(key)
        if rec is not None:
            if task.state is not TaskState.RUNNING and rec.runner_id not in self._fencer:
                # someone else settled the task while its runner runs: stop the runner
                self._fence(rec, FenceOutcome.ORPHAN,
                            f"task moved to {task.state.value} outside the dispatcher")
            return
        self._admission.place(task, now)

    def _schedule_round(self, now: float) -> None:
        started = time.perf_counter()
        decisions = self._admission.round(now)
        for task, pool in decisions:
            self._launches.launch(task, pool, now)
        if decisions:
            self.metrics.observe_round(time.perf_counter() - started)

    # --- public control surface ------------------------------------------------------------
    def control(self, verb: str, payload: dict[str, Any] | None = None) -> str:
        """Apply a control verb (pause, resume, priority, retry, cancel, pool)."""
        payload = dict(payload or {})
        if threading.current_thread() is self._engine_thread:
            return self._do_control(verb, payload)
        if not self.is_running:
            with self._control_lock:
                return self._do_control(verb, payload)
        reply: Future[str] = Future()
        self._post(Control(verb, payload, reply))
        try:
            return reply.result(timeout=CONTROL_TIMEOUT)
        except TimeoutError:
            raise DispatcherError(
                f"the engine did not answer {verb!r} within {CONTROL_TIMEOUT:g}s") from None

    def pause(self) -> str:
        """Stop starting new runners (running ones continue)."""
        return self.control("pause")

    def resume(self) -> str:
        """Start dispatching again."""
        return self.control("resume")

    def set_priority(self, task_key: str, priority: int) -> str:
        """Change a task's priority (persisted)."""
        return self.control("priority", {"task": task_key, "priority": priority})

    def retry(self, task_key: str) -> str:
        """Retry a FAILED or CANCELLED task now (or the failed roots of a blocked one)."""
        return self.control("retry", {"task": task_key})

    def cancel(self, task_key: str) -> str:
        """Cancel a task; a running one has its runner stopped first."""
        return self.control("cancel", {"task": task_key})

    def set_pool_enabled(self, pool_name: str, enabled: bool) -> str:
        """Enable or drain a pool at run time."""
        return self.control("pool", {"pool": pool_name, "enabled": enabled})

    def submit(self, taskset: Taskset) -> SubmitResult:
        """Validate and write a taskset, then wake the engine."""
        from .tasksets import validate_taskset

        validate_taskset(taskset, self.registry, self.config)
        result = self.registry.submit_taskset(taskset)
        self._wake()
        return result

    def request_stop(self, timeout: float = 0.0, *, leave_running: bool = False) -> None:
        """Ask the engine to drain without waiting for it (e.g. a second Ctrl-C: ``timeout``
        0 stops the running runners now); :meth:`stop` waits."""
        self._post(StopEngine(float(timeout), leave_running))

    def heartbeat(self, runner_id: str, progress: str | None = None) -> None:
        """A runner's sign of life (thread-safe; the HTTP API calls this)."""
        self._post(Heartbeat(runner_id, progress))

    def report_completion(self, runner_id: str, report: dict[str, Any]) -> None:
        """A runner's completion report (thread-safe; the HTTP API calls this)."""
        self._post(CompletionReport(runner_id, dict(report)))

    def wake(self) -> None:
        """Ask the engine to poll the registry now (after writes made around it)."""
        self._wake()

    def runner_records(self) -> list[RunnerRecord]:
        """The live runner records (read-only use; for tests and diagnostics)."""
        return list(self._runners)

    def close(self) -> None:
        """Stop if running, and close the registry this object opened itself."""
        if self.is_running:
            self.stop()
        elif self._owns_registry:
            try:
                self.registry.close()
            except Exception:
                logger.debug("registry close failed", exc_info=True)

    def __enter__(self) -> DispatcherCore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pid() -> int:
    import os

    return os.getpid()


__all__ = ["DispatcherCore"]
