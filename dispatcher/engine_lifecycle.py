"""Starting and stopping the engine: the HTTP API, the launchers, the drain at shutdown.

Shutdown (R15.1): the engine stops taking tasks ("draining"), waits up to the timeout for
running runners, then stops the rest (fenced in workers) and puts their tasks back to READY
without spending an attempt (TaskRequeued); DispatcherStopped is recorded last.
``leave_running=True`` leaves runners alive for the next start to adopt.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from .engine.commands import FenceOutcome, PlatformHealth
from .engine_api import (
    EngineApiHandler,
    load_or_create_admin_token,
    load_or_create_secret,
    previous_api_port,
    write_dispatcher_info,
)
from .engine_runners import RunnerMixin
from .errors import RunnerLaunchError
from .launchers.base import LaunchEnvironment, RunnerLauncher
from .logging_setup import log_extra
from .models import AgentPool, EventType, PoolType, TaskEvent

if TYPE_CHECKING:
    from .core import DispatcherCore

logger = logging.getLogger(__name__)

DRAIN_GIVE_UP = 15.0  # seconds past the drain deadline after which failing stops/writes are left
HEALTH_INTERVAL = 30.0  # seconds between platform checks of docker and kubernetes pools
PLATFORM_TYPES = (PoolType.DOCKER, PoolType.KUBERNETES)

_PLATFORM_FIX = {
    PoolType.DOCKER: "start dockerd or set DOCKER_HOST (`docker ps` must work for this user)",
    PoolType.KUBERNETES: "set KUBECONFIG (or run in a cluster); `kubectl cluster-info` must work",
}


def platform_message(pool: AgentPool, exc: BaseException | str) -> str:
    """One line naming what is wrong with a pool's platform and the fix."""
    text = str(exc) if isinstance(exc, str) or isinstance(exc, RunnerLaunchError) \
        else f"{type(exc).__name__}: {exc}"
    fix = _PLATFORM_FIX.get(pool.type)
    key = "DOCKER_HOST" if pool.type is PoolType.DOCKER else "KUBECONFIG"
    if fix and key not in text:
        text = f"{text}; {fix}"
    return text


class LifecycleMixin(RunnerMixin):
    """API and launcher setup, drain and final event (mixed into DispatcherCore)."""

    def _start_api(self) -> None:
        from .api.server import ApiServer

        self._secret = load_or_create_secret(self.state_dir)
        self.admin_token = load_or_create_admin_token(self.state_dir)
        port = self.config.api_port
        if not port:  # reuse the port of the previous run: adopted wrapped runners report there
            port = previous_api_port(self.state_dir) or 0
        handler = EngineApiHandler(cast("DispatcherCore", self))
        try:
            self._api_server = ApiServer(self.config.api_host, port, handler, self._secret,
                                         self.admin_token)
            self.api_url = self._api_server.start()
        except OSError:
            if port == self.config.api_port:
                raise
            self._api_server = ApiServer(self.config.api_host, 0, handler, self._secret,
                                         self.admin_token)
            self.api_url = self._api_server.start()
        write_dispatcher_info(self.state_dir, self.api_url, self.registry_label)

    def _token_for(self, runner_id: str) -> str:
        from .api.tokens import runner_token

        return runner_token(self._secret, runner_id) if self._secret else ""

    def _launch_env(self) -> LaunchEnvironment:
        return LaunchEnvironment(
            api_url=self.api_url, token_for=self._token_for, runs_dir=self.runs_dir,
            heartbeat_interval=self.config.heartbeat_interval,
            heartbeat_timeout=self.config.heartbeat_timeout,
            stop_grace=self.config.runner_stop_grace, on_exit=self._on_runner_exit)

    def _setup_launchers(self) -> None:
        env = self._launch_env()
        launchers: dict[Any, RunnerLauncher] = {}
        for key, launcher in self._given_launchers.items():
            launcher.env = replace(launcher.env, on_exit=self._on_runner_exit,
                                   api_url=self.api_url or launcher.env.api_url,
                                   token_for=self._token_for if self._secret
                                   else launcher.env.token_for)
            launchers[key] = launcher
        types = {p.type for p in self.pool_manager.pools.values()}
        for ptype in types:
            if ptype in launchers or any(
                    p.name in launchers for p in self.pool_manager.pools.values()
                    if p.type is ptype):
                continue
            made = self._make_launcher(ptype, env)
            if made is not None:
                launchers[ptype] = made
        self._launchers = launchers

    @staticmethod
    def _make_launcher(ptype: PoolType, env: LaunchEnvironment) -> RunnerLauncher | None:
        from .launchers import launcher_for

        try:
            return launcher_for(ptype, env)
        except Exception as exc:  # e.g. the docker SDK is missing: those pools fail to launch
            logger.warning("no launcher for %s pools: %s", ptype.value, exc)
            return None

    # --- platform health of docker and kubernetes pools -----------------------------------
    def _platform_pools(self) -> list[tuple[AgentPool, RunnerLauncher]]:
        out = []
        for pool in self.pool_manager.pools.values():
            launcher = self._launcher_for(pool)
            if pool.type in PLATFORM_TYPES and launcher is not None:
                out.append((pool, launcher))
        return out

    def _platform_failed(self, pool: AgentPool, exc: BaseException | str) -> None:
        """A pool's platform cannot be reached: one warning line (no traceback; that goes to
        debug), the pool unhealthy in the snapshot until a check passes."""
        self._set_platform_health(pool.name, False, platform_message(pool, exc))
        if isinstance(exc, BaseException):
            logger.debug("platform error of pool %s", pool.name, exc_info=exc,
                         extra=log_extra(pool=pool.name))

    def _set_platform_health(self, pool_name: str, ok: bool, message: str = "") -> None:
        pool = self.pool_manager.pools.get(pool_name)
        if pool is None:
            return
        self._admission.set_platform_health(pool_name, ok, message)
        down: set[str] = self.__dict__.setdefault("_platform_down", set())
        if ok and pool_name in down:
            down.discard(pool_name)
            logger.info("pool %s (%s) is reachable again", pool_name, pool.type.value,
                        extra=log_extra(pool=pool_name))
        elif not ok and pool_name not in down:  # one line per outage, not one per check
            down.add(pool_name)
            logger.warning("pool %s (%s) is unavailable: %s", pool_name, pool.type.value,
                           message, extra=log_extra(pool=pool_name))

    def _check_platforms(self, pools: list[tuple[AgentPool, RunnerLauncher]]) -> None:
        """One platform check of each pool (in the health thread: it may block)."""
        for pool, launcher in pools:
            try:
                ok, message = launcher.health(pool)
            except Exception as exc:
                ok, message = False, platform_message(pool, exc)
                logger.debug("health check of pool %s raised", pool.name, exc_info=True,
                             extra=log_extra(pool=pool.name))
            if not ok:
                message = platform_message(pool, message or "platform check failed")
            self._post(PlatformHealth(pool.name, bool(ok), message))

    def _start_health_checks(self) -> None:
        """Check docker and kubernetes pools now and every HEALTH_INTERVAL seconds, off the
        engine thread (an unreachable API can block for seconds)."""
        pools = self._platform_pools()
        self._health_stop = threading.Event()
        if not pools:
            return
        stop = self._health_stop

        def loop() -> None:
            while True:
                self._check_platforms(pools)
                if stop.wait(HEALTH_INTERVAL):
                    return

        threading.Thread(target=loop, name="necrocode-health", daemon=True).start()

    def _stop_health_checks(self) -> None:
        stop = getattr(self, "_health_stop", None)
        if stop is not None:
            stop.set()

    def _begin_drain(self, timeout: float, leave_running: bool) -> None:
        if self._stop_requested and self._drain_deadline is not None:
            self._drain_deadline = min(self._drain_deadline, time.time() + timeout)
            return
        self._stop_requested = True
        self._leave_running = leave_running
        self._drain_deadline = time.time() + max(0.0, timeout)
        self._state = "draining"
        self._views.mark()
        logger.info("dispatcher stopping: %d runner(s) running, waiting up to %.0fs",
                    len(self._runners), timeout)

    def _drain_step(self, now: float) -> None:
        if self._leave_running or not (len(self._runners) or len(self._launches)):
            return
        if self._drain_deadline is not None and now >= self._drain_deadline:
            for key in self._launches.launching_keys():
                self._launches.request_stop(key, FenceOutcome.SHUTDOWN, "dispatcher stopping",
                                            only_if_unset=True)
            if self._state != "stopping":
                self._state = "stopping"
                self._views.mark()
            for rec in self._runners:
                if rec.runner_id not in self._fencer:
                    self._fence(rec, FenceOutcome.SHUTDOWN, "dispatcher stopping")

    def _drain_finished(self) -> bool:
        """True when the loop may end: runners gone (or left running on purpose), no launch in
        flight, and the writes that settle tasks done — or given up on after a grace period
        (a registry or platform that stays broken; the next start reconciles what is left)."""
        if not self._stop_requested:
            return False
        late = self._drain_deadline is not None \
            and time.time() > self._drain_deadline + DRAIN_GIVE_UP
        if len(self._launches):
            return False
        if self._runners and not self._leave_running:
            if not (late and all(rid in self._fencer for rid in self._runners.ids())):
                return False
            logger.error("giving up on stopping %d runner(s): %s", len(self._runners),
                         ", ".join(sorted(self._runners.ids())))
        waiting = self._settler.deferred()
        if waiting and not late:
            return False
        if waiting:
            logger.error("%d registry write(s) could not be done before stopping: %s",
                         len(waiting), "; ".join(waiting))
        return True

    def _finish_loop(self) -> None:
        left = len(self._runners)
        try:
            self._event_log.record(TaskEvent(
                event_type=EventType.DISPATCHER_STOPPED,
                message="dispatcher stopped" + (
                    f"; {left} runner(s) left running for the next start to adopt"
                    if left else "") + (f" after an engine error: {self._crash}"
                                        if self._crash else ""),
                details={"left_running": left}))
        except Exception:
            logger.exception("could not record DispatcherStopped")
        self._state = "stopped"
        self._publish(time.time(), force=True)
