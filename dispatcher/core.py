"""DispatcherCore: the seed's facade over the engine's components.

``start()``, ``stop(timeout)``, ``get_status()`` and the control verbs, plus the seed's
component attributes (``task_monitor``, ``queue``, ``scheduler``, ``pool_manager``,
``runner_monitor``, ``retry_manager``, ``deadlock_detector``, ``events``, ``metrics``). Behind
it, the engine thread drives components that each own their state (:mod:`.engine`):

==================  =====================================================================
TaskBook            newest task per key, counts, what changed (``engine/taskbook.py``)
Admission           queue, policy, pools, backoff timers, pause (``engine/admission.py``)
LaunchPlane         slot, READY->RUNNING, launch in a worker (``engine/launch_plane.py``)
RunnerTable         live runners, signs of life, verdicts (``engine/runner_table.py``)
Fencer              stops; only a confirmed stop completes a fence (``engine/fencer.py``)
Settler             how a run ends; **where a retry is decided** (``engine/settler.py``)
Reconciler          restart plan: adopt, settle, requeue, unknown (``engine/reconciler.py``)
Publisher           frozen snapshots for other threads (``engine/publisher.py``)
==================  =====================================================================

Other threads never touch engine state: they call the thread-safe methods here, which post
commands (:mod:`.engine.commands`), and read snapshots.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, TypeVar

from .config import DispatcherConfig
from .deadlock import DeadlockDetector
from .engine.commands import (
    CompletionReport,
    Control,
    EngineCall,
    Heartbeat,
    RunnerExited,
    StopEngine,
    Wake,
)
from .engine.diagnostics import EngineDiagnostics
from .engine.engine import Engine
from .engine.parts import Seed
from .engine.runner_table import RunnerDirectory, RunnerRecord
from .errors import DispatcherError, DispatcherStateError
from .events import EventRecorder
from .launchers.base import RunnerLauncher
from .leader import LeaderElector
from .metrics import MetricsCollector
from .models import AgentPool, PoolType, Taskset, Usage
from .notify import SnapshotNotifier
from .ownership import Holder, RegistryLock
from .pool_manager import AgentPoolManager
from .registry.base import SubmitResult, TaskRegistry
from .retry import RetryManager
from .runner_monitor import RunnerMonitor
from .scheduler import Scheduler
from .snapshot import Snapshot
from .state_files import read_dispatcher_info, remove_dispatcher_info
from .task_monitor import TaskMonitor
from .task_queue import TaskQueue

logger = logging.getLogger(__name__)

CONTROL_TIMEOUT = 5.0  # seconds a control call waits for the engine's answer
T = TypeVar("T")


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


class DispatcherCore:
    """The Dispatcher's main controller (seed API: ``start()``, ``stop(timeout)``,
    ``get_status()``), with thread-safe control methods and frozen snapshots.

    ``registry`` defaults to the one the config names; ``launchers`` maps a pool type (or a pool
    name) to its launcher (default: built at start for the configured pool types); ``metrics``
    defaults to a new MetricsCollector; ``elector`` (default: from the config's ``ha:``
    section, over a Kubernetes Lease) makes this replica dispatch only while it leads.
    """

    def __init__(
        self,
        config: DispatcherConfig | None = None,
        *,
        registry: TaskRegistry | None = None,
        launchers: dict[Any, RunnerLauncher] | None = None,
        metrics: MetricsCollector | None = None,
        elector: LeaderElector | None = None,
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
        self.metrics = metrics if metrics is not None else MetricsCollector(self.config)
        self._repo_pool: Any = None
        self._control_lock = threading.RLock()
        self._hooks: SnapshotNotifier | None = None  # the notify: hooks while running
        # the lock is tied to the registry's file or folder; one held in memory is private
        where = getattr(registry, "path", None)
        self._owner = RegistryLock.for_registry(str(where) if where else ":memory:",
                                                state_dir=self.state_dir)
        seed = Seed(config=self.config, registry=registry, recorder=self.events,
                    queue=self.queue, pools=self.pool_manager, scheduler=self.scheduler,
                    retry=self.retry_manager, monitor=self.runner_monitor,
                    detector=self.deadlock_detector, metrics=self.metrics,
                    runs_dir=self.runs_dir)
        self._engine = Engine(seed, self.task_monitor, self.registry_label,
                              lambda: self.repo_pool, dict(launchers or {}),
                              elector if elector is not None else _elector_for(self.config))

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
        thread = self._engine.thread
        return thread is not None and thread.is_alive()

    @property
    def paused(self) -> bool:
        return self._engine.paused

    @property
    def api_url(self) -> str | None:
        """The HTTP API's URL while it is served."""
        return self._engine.api.url

    @property
    def admin_token(self) -> str | None:
        return self._engine.api.admin_token

    @property
    def crash(self) -> BaseException | None:
        """What ended the engine loop, if it did not stop cleanly."""
        return self._engine.crash

    @property
    def runner_directory(self) -> RunnerDirectory:
        """Which runner ids are launching, running or being stopped (thread-safe)."""
        return self._engine.parts.directory

    @property
    def launchers(self) -> dict[Any, RunnerLauncher]:
        return self._engine.platforms.launchers()

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, *, standby: bool = False, stop: threading.Event | None = None,
              on_wait: Callable[[Holder | None], None] | None = None) -> None:
        """Take ownership of the registry, start the API, reconcile RUNNING tasks, then the
        engine thread; returns once the engine runs.

        One Dispatcher owns a registry at a time (a lock beside it, held until :meth:`stop`):
        another owner is a RegistryOwnedError naming it (pid, host, since), or, with
        ``standby``, this call waits until that owner ends (``on_wait(holder)`` is told once;
        ``stop`` set: give up waiting).
        With ``ha:`` the Lease decides instead, and the engine starts as a standby.
        """
        if self.is_running:
            raise DispatcherStateError("the dispatcher is already running; stop() it first")
        if self.config.ha is None:
            self._owner.acquire(wait=standby, stop=stop, on_wait=on_wait)
        try:
            other = read_dispatcher_info(self.state_dir)
            if other is not None and other.get("pid") != _pid():
                raise DispatcherStateError(
                    f"another dispatcher (pid {other.get('pid')}) runs on this state dir "
                    f"({self.state_dir}) at {other.get('url')}; stop it first, or give this "
                    "one another state_dir")
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self._engine.start(self)
        except BaseException:
            self._owner.release()
            raise
        from .notify import start_hooks

        self._hooks = start_hooks(self, self.config.notify)  # notify: off the engine thread
        logger.info("dispatcher started: registry %s, state dir %s", self.registry_label,
                    self.state_dir)

    def stop(self, timeout: float | None = None, *, leave_running: bool = False) -> None:
        """Graceful shutdown: take no new tasks, wait up to ``timeout`` seconds (default
        ``graceful_shutdown_timeout``) for running runners, then stop the rest and put their
        tasks back to READY without spending an attempt. ``leave_running=True`` leaves the
        runners alive for the next start to adopt."""
        if timeout is None:
            timeout = self.config.graceful_shutdown_timeout
        thread = self._engine.thread
        if thread is not None and thread.is_alive():
            self._engine.post(StopEngine(float(timeout), leave_running))
            # wait for the drain, the fences and a little more
            thread.join(float(timeout) + self.config.runner_stop_grace + 30.0)
            if thread.is_alive():
                logger.error("engine thread did not stop in time")
        self._engine.thread = None
        self._engine.teardown()
        if self._hooks is not None:  # the last notices (a finished taskset) still go out
            self._hooks.stop(timeout=self.config.notify.timeout)
            self._hooks = None
        if not self._engine.drain.leave_running:  # kept: the next start reuses the API port
            remove_dispatcher_info(self.state_dir)
        self._owner.release()
        if self._owns_registry:
            self._close_registry()

    def _close_registry(self) -> None:
        try:
            self.registry.close()
        except Exception as exc:
            logger.warning("closing the registry failed: %s", exc, exc_info=True)

    def close(self) -> None:
        """Stop if running, and close the registry this object opened itself."""
        if self.is_running:
            self.stop()
        elif self._owns_registry:
            self._close_registry()

    def __enter__(self) -> DispatcherCore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The newest published snapshot (never blocks)."""
        return self._engine.publisher.snapshot()

    def wait_for_snapshot(self, after_version: int, timeout: float | None = None) -> Snapshot:
        """Wait until a snapshot newer than ``after_version`` is published (or the timeout)."""
        return self._engine.publisher.wait_for(after_version, timeout)

    def get_status(self, *, queued: int | None = None, finished: int | None = None,
                   events: int | None = None) -> dict[str, Any]:
        """The newest snapshot as a JSON-ready dict (seed API); ``queued``/``finished``/
        ``events`` keep only the first N of those lists (``totals`` gives their lengths)."""
        return self._engine.publisher.status(queued=queued, finished=finished, events=events)

    # --- control surface -------------------------------------------------------------------
    def control(self, verb: str, payload: dict[str, Any] | None = None) -> str:
        """Apply a control verb (pause, resume, priority, retry, cancel, pool)."""
        payload = dict(payload or {})
        engine = self._engine
        if threading.current_thread() is engine.thread:
            return engine.controls.apply(verb, payload)
        if not self.is_running:
            with self._control_lock:
                return engine.controls.apply(verb, payload)
        reply: Future[str] = Future()
        engine.post(Control(verb, payload, reply))
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

    def bump_priority(self, task_key: str, delta: int) -> str:
        """Raise (or lower) a task's priority by ``delta``, applied by the engine itself, so
        that quick presses all count."""
        return self.control("priority", {"task": task_key, "delta": delta})

    def retry(self, task_key: str, *, from_base: bool = False) -> str:
        """Retry a FAILED or CANCELLED task now (or the failed roots of a blocked one), skip
        a READY one's backoff, or offer again a task held by a start conflict.
        ``from_base``: it starts from the base, without its dependencies' work (kept until
        it is DONE)."""
        payload: dict[str, Any] = {"task": task_key}
        if from_base:
            payload["from_base"] = True
        return self.control("retry", payload)

    def land(self, taskset: str, *, into: str | None = None,
             check: list[str] | None = None, push: bool = False,
             land_id: str | None = None) -> str:
        """Land ``taskset``'s DONE work into its integration branch in a worker of the engine
        (one landing at a time); the report follows in ``snapshot().landings`` and as a
        TasksetLanded event. ``check`` None: ``work.land_check``; [] runs none."""
        payload: dict[str, Any] = {"taskset": taskset, "push": push}
        if into is not None:
            payload["into"] = into
        if check is not None:
            payload["check"] = list(check)
        if land_id is not None:
            payload["id"] = land_id
        return self.control("land", payload)

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
        self.wake()
        return result

    def request_stop(self, timeout: float = 0.0, *, leave_running: bool = False) -> None:
        """Ask the engine to drain without waiting for it (e.g. a second Ctrl-C: ``timeout``
        0 stops the running runners now); :meth:`stop` waits."""
        self._engine.post(StopEngine(float(timeout), leave_running))

    def heartbeat(self, runner_id: str, progress: str | None = None,
                  usage: Usage | None = None) -> None:
        """A runner's sign of life, with its progress and a coding agent's usage so far
        (thread-safe; the HTTP API calls this)."""
        self._engine.post(Heartbeat(runner_id, progress, usage))

    def report_completion(self, runner_id: str, report: dict[str, Any]) -> None:
        """A runner's completion report (thread-safe; the HTTP API calls this)."""
        self._engine.post(CompletionReport(runner_id, dict(report)))

    def runner_exited(self, runner_id: str) -> None:
        """A runner's process or container may have ended: poll it now (thread-safe; the
        launchers' watchers call this)."""
        self._engine.post(RunnerExited(runner_id))

    def wake(self) -> None:
        """Ask the engine to poll the registry now (after writes made around it)."""
        self._engine.post(Wake())

    def check_platforms(self) -> None:
        """Check docker and kubernetes pools now, on this thread (it may block)."""
        self._engine.platforms.check_now()

    # --- diagnostics -----------------------------------------------------------------------
    def diagnose(self, look: Callable[[EngineDiagnostics], T] | None = None,
                 timeout: float = 10.0) -> Any:
        """A consistent look at the engine, taken on its thread: ``look`` (if given) is
        called there with the :class:`EngineDiagnostics` and its result returned."""
        def on_engine() -> Any:
            diag = self._engine.diagnostics()
            return look(diag) if look is not None else diag

        if not self.is_running:
            return on_engine()
        reply: Future[Any] = Future()
        self._engine.post(EngineCall(on_engine, reply))
        return reply.result(timeout=timeout)

    def refresh_snapshot(self) -> Snapshot:
        """Publish a snapshot now and return it."""
        if self.is_running:
            reply: Future[Any] = Future()
            self._engine.post(EngineCall(self._engine.publish_now, reply))
            reply.result(timeout=10)
        return self.snapshot()

    def runner_records(self) -> list[RunnerRecord]:
        """The live runner records (read-only use; for tests and diagnostics)."""
        return self.diagnose(lambda _d: list(self._engine.parts.runners))


def _elector_for(config: DispatcherConfig) -> LeaderElector | None:
    """The leader elector of the ``ha:`` section (None without one)."""
    ha = config.ha
    if ha is None:
        return None
    from .launchers.kubernetes_api import load_api_client
    from .leader import KubernetesLeaseStore

    store = KubernetesLeaseStore(load_api_client(None), ha.lease, ha.namespace,
                                 request_timeout=ha.retry_period)
    return LeaderElector.from_config(ha, store)


def _pid() -> int:
    import os

    return os.getpid()


__all__ = ["DispatcherCore"]
