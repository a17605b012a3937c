"""Platforms: the launcher of each pool, and the health of the platforms they run on.

Docker and Kubernetes pools are checked at start and every ``HEALTH_INTERVAL`` seconds in a
thread of their own (an unreachable API can block for seconds); the answers come back to the
engine as :class:`~.commands.PlatformHealth`. A pool whose platform cannot be reached takes no
tasks (they wait with "pool docker is unavailable: …") until a check passes; an outage is one
warning line, not one per check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..errors import RunnerLaunchError
from ..launchers.base import LaunchEnvironment, RunnerLauncher
from ..logging_setup import log_extra
from ..models import AgentPool, PoolType
from .admission import Admission
from .commands import Command, PlatformHealth

logger = logging.getLogger(__name__)

HEALTH_INTERVAL = 30.0  # seconds between platform checks of docker and kubernetes pools
PLATFORM_TYPES = (PoolType.DOCKER, PoolType.KUBERNETES)

_PLATFORM_FIX = {
    PoolType.DOCKER: "start dockerd or set DOCKER_HOST (`docker ps` must work for this user)",
    PoolType.KUBERNETES: "set KUBECONFIG (or run in a cluster); `kubectl cluster-info` must work",
}


def platform_message(pool: AgentPool, exc: BaseException | str) -> str:
    """One line naming what is wrong with a pool's platform and the fix."""
    text = str(exc) if isinstance(exc, str | RunnerLaunchError) \
        else f"{type(exc).__name__}: {exc}"
    fix = _PLATFORM_FIX.get(pool.type)
    key = "DOCKER_HOST" if pool.type is PoolType.DOCKER else "KUBECONFIG"
    if fix and key not in text:
        text = f"{text}; {fix}"
    return text


class Platforms:
    """Launchers by pool type (or pool name) and platform health (engine thread, except the
    health thread, which only posts commands)."""

    def __init__(self, pools: Mapping[str, AgentPool], admission: Admission,
                 given: Mapping[Any, RunnerLauncher], post: Callable[[Command], None]) -> None:
        self._pools = pools
        self._admission = admission
        self._given = dict(given)
        self._post = post
        self._launchers: dict[Any, RunnerLauncher] = {}
        self._down: set[str] = set()
        self._stop = threading.Event()

    # --- launchers -------------------------------------------------------------------------
    def setup(self, env: LaunchEnvironment) -> None:
        """Build a launcher per pool type in use; launchers given by the caller get the
        engine's environment (exit callback, API URL, runner tokens)."""
        launchers: dict[Any, RunnerLauncher] = {}
        for key, launcher in self._given.items():
            launcher.env = replace(launcher.env, on_exit=env.on_exit,
                                   api_url=env.api_url or launcher.env.api_url,
                                   token_for=env.token_for if env.api_url
                                   else launcher.env.token_for)
            launchers[key] = launcher
        for ptype in {p.type for p in self._pools.values()}:
            if ptype in launchers or any(p.name in launchers for p in self._pools.values()
                                         if p.type is ptype):
                continue
            made = self._make(ptype, env)
            if made is not None:
                launchers[ptype] = made
        self._launchers = launchers

    @staticmethod
    def _make(ptype: PoolType, env: LaunchEnvironment) -> RunnerLauncher | None:
        from ..launchers import launcher_for

        try:
            return launcher_for(ptype, env)
        except Exception as exc:  # e.g. the docker SDK is missing: those pools fail to launch
            logger.warning("no launcher for %s pools: %s", ptype.value, exc)
            return None

    def launcher_for(self, pool: AgentPool) -> RunnerLauncher | None:
        return self._launchers.get(pool.name) or self._launchers.get(pool.type)

    def launchers(self) -> dict[Any, RunnerLauncher]:
        return dict(self._launchers)

    def close(self) -> None:
        """Stop the health checks and close every launcher (its watcher threads, clients)."""
        self._stop.set()
        for launcher in {id(v): v for v in self._launchers.values()}.values():
            try:
                launcher.close()
            except Exception as exc:
                logger.warning("closing launcher %s failed: %s", type(launcher).__name__, exc,
                               exc_info=True)

    # --- health ----------------------------------------------------------------------------
    def failed(self, pool: AgentPool, exc: BaseException | str) -> None:
        """A pool's platform cannot be reached: the pool is unhealthy until a check passes."""
        self.set_health(pool.name, False, platform_message(pool, exc))

    def set_health(self, pool_name: str, ok: bool, message: str = "") -> None:
        pool = self._pools.get(pool_name)
        if pool is None:
            return
        self._admission.set_platform_health(pool_name, ok, message)
        if ok and pool_name in self._down:
            self._down.discard(pool_name)
            logger.info("pool %s (%s) is reachable again", pool_name, pool.type.value,
                        extra=log_extra(pool=pool_name))
        elif not ok and pool_name not in self._down:  # one line per outage, not one per check
            self._down.add(pool_name)
            logger.warning("pool %s (%s) is unavailable: %s", pool_name, pool.type.value,
                           message, extra=log_extra(pool=pool_name))

    def checked_pools(self) -> list[tuple[AgentPool, RunnerLauncher]]:
        """The docker and kubernetes pools that have a launcher."""
        out = []
        for pool in self._pools.values():
            launcher = self.launcher_for(pool)
            if pool.type in PLATFORM_TYPES and launcher is not None:
                out.append((pool, launcher))
        return out

    def check_now(self) -> None:
        """One platform check of each docker and kubernetes pool, on this thread (it may
        block); the answers are posted to the engine."""
        for pool, launcher in self.checked_pools():
            try:
                ok, message = launcher.health(pool)
            except Exception as exc:
                ok, message = False, platform_message(pool, exc)
            if not ok:
                message = platform_message(pool, message or "platform check failed")
            self._post(PlatformHealth(pool.name, bool(ok), message))

    def start_checks(self) -> None:
        """Check now and every HEALTH_INTERVAL seconds, in a thread of its own."""
        self._stop = threading.Event()
        if not self.checked_pools():
            return
        stop = self._stop

        def loop() -> None:
            while True:
                self.check_now()
                if stop.wait(HEALTH_INTERVAL):
                    return

        threading.Thread(target=loop, name="necrocode-health", daemon=True).start()

    def stop_checks(self) -> None:
        self._stop.set()
