"""AgentPoolManager: the configured Agent Pools, their load, limits and health.

Counters are exact: CPU is counted in integer milli-cores and every acquisition is remembered per
task key, so a release gives back exactly what was taken (never a recomputed figure) and a
release of something never acquired is logged and ignored instead of driving a counter negative.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from . import limits
from .config import DispatcherConfig
from .errors import DispatcherStateError, PoolNotFoundError
from .models import AgentPool, PoolStatus, Task

log = logging.getLogger(__name__)

__all__ = ["AgentPoolManager", "cpu_millis"]

DEFAULT_SKILL = "default"


def cpu_millis(cores: float) -> int:
    """Cores as integer milli-cores (exact sums)."""
    return int(round(cores * 1000))


@dataclass
class _PoolState:
    pool: AgentPool
    running: int = 0
    cpu_m: int = 0
    memory_mb: int = 0
    holders: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (cpu_m, mem)
    errors: deque[float] = field(default_factory=deque)  # times of consecutive launch errors
    last_error: str | None = None
    platform_error: str | None = None  # the platform check failed (engine unreachable, ...)

    @property
    def cpu_quota_m(self) -> int | None:
        q = self.pool.cpu_quota
        return None if q is None else cpu_millis(q)

    @property
    def utilization(self) -> float:
        cap = self.pool.max_concurrency
        return 1.0 if cap <= 0 else self.running / cap


class AgentPoolManager:
    """Pools from the config, skill routing, capacity accounting and pool health.

    ``skill_mapping`` maps a skill to an ordered list of pool names; ``default`` serves tasks
    without a skill or with an unmapped one. When the mapping is empty altogether, every pool
    serves every skill (in config order). A pool is unhealthy after ``unhealthy_after``
    consecutive launch errors within ``health_window`` seconds, and healthy again after a success;
    unhealthy pools are only chosen when no healthy mapped pool can take the task.
    """

    def __init__(
        self,
        config: DispatcherConfig | None = None,
        *,
        unhealthy_after: int = 3,
        health_window: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or DispatcherConfig()
        self._lock = threading.RLock()
        self._states: dict[str, _PoolState] = {}
        for pool in self.config.agent_pools:
            self._states[pool.name] = _PoolState(replace(pool, config=dict(pool.config)))
        self.unhealthy_after = unhealthy_after
        self.health_window = health_window
        self._clock = clock
        self._global_running = 0
        self._held_in: dict[str, str] = {}  # task key -> pool holding its capacity
        self._route_cache: dict[str, tuple[_PoolState, ...]] = {}
        self._version = 0
        self._release_listeners: list[Callable[[str, str], None]] = []

    @property
    def version(self) -> int:
        """Grows with every change of load, enabled flags or health (for caching views)."""
        return self._version

    # --- pools ----------------------------------------------------------------------------------
    @property
    def pools(self) -> dict[str, AgentPool]:
        """Configured pools by name (the manager's own copies)."""
        return {name: st.pool for name, st in self._states.items()}

    @property
    def global_running(self) -> int:
        """Runners holding capacity in any pool."""
        return self._global_running

    @property
    def max_global_concurrency(self) -> int:
        return self.config.max_global_concurrency

    def get_pool(self, name: str) -> AgentPool:
        """The pool called ``name``; PoolNotFoundError when none is configured."""
        return self._state(name).pool

    def _state(self, name: str | AgentPool) -> _PoolState:
        if isinstance(name, AgentPool):
            name = name.name
        st = self._states.get(name)
        if st is None:
            raise PoolNotFoundError(name, sorted(self._states))
        return st

    def set_pool_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or drain a pool; returns the previous setting. Running tasks keep running."""
        with self._lock:
            st = self._state(name)
            before = st.pool.enabled
            st.pool.enabled = bool(enabled)
            self._version += 1
            return before

    def enable_pool(self, name: str) -> None:
        self.set_pool_enabled(name, True)

    def disable_pool(self, name: str) -> None:
        self.set_pool_enabled(name, False)

    # --- routing --------------------------------------------------------------------------------
    def mapping_for_skill(self, skill: str) -> tuple[str, list[str]]:
        """(mapping entry used, pool names) for ``skill``; names may include unknown pools."""
        mapping = self.config.skill_mapping
        if skill and skill in mapping:
            return skill, list(mapping[skill])
        if DEFAULT_SKILL in mapping:
            return DEFAULT_SKILL, list(mapping[DEFAULT_SKILL])
        if not mapping:
            return DEFAULT_SKILL, list(self._states)
        return "", []

    def pools_for_skill(self, skill: str) -> list[AgentPool]:
        """Configured pools mapped to ``skill`` in mapping order (enabled or not)."""
        return [st.pool for st in self._route(skill)]

    def _route(self, skill: str) -> tuple[_PoolState, ...]:
        states = self._route_cache.get(skill)
        if states is None:
            _, names = self.mapping_for_skill(skill)
            states = tuple(self._states[n] for n in names if n in self._states)
            self._route_cache[skill] = states
        return states

    def get_pool_for_skill(self, skill: str, task: Task | None = None) -> AgentPool | None:
        """The pool that should take the next task of ``skill`` now, or None.

        Among the mapped, enabled pools with room (for ``task``'s resources when given): the
        least utilised, ties by mapping order; healthy pools before unhealthy ones.
        """
        if task is None:
            return self.select_pool(skill, 0, 0)
        return self.select_pool(skill, cpu_millis(task.resources.cpu), task.resources.memory_mb)

    def get_pool_for_task(self, task: Task) -> AgentPool | None:
        """:meth:`get_pool_for_skill` for the task's skill and resources."""
        return self.get_pool_for_skill(task.required_skill, task)

    def select_pool(self, skill: str, cpu_m: int, memory_mb: int) -> AgentPool | None:
        """Pool choice for a task shape (skill, milli-cores, MB); the Scheduler's hot path."""
        if self._global_running >= self.config.max_global_concurrency:
            return None
        best: _PoolState | None = None
        best_u = 0.0
        sick: _PoolState | None = None
        sick_u = 0.0
        route = self._route_cache.get(skill)
        for st in self._route(skill) if route is None else route:
            pool = st.pool
            if not pool.enabled or st.running >= pool.max_concurrency:
                continue
            if st.platform_error is not None:
                continue  # its engine/cluster is unreachable: launching would only burn attempts
            quota = pool.cpu_quota
            if quota is not None and st.cpu_m + cpu_m > int(round(quota * 1000)):
                continue
            mquota = pool.memory_quota
            if mquota is not None and st.memory_mb + memory_mb > mquota:
                continue
            u = st.running / pool.max_concurrency
            if (st.errors or st.platform_error) and not self._healthy(st):
                if sick is None or u < sick_u:
                    sick, sick_u = st, u
            elif best is None or u < best_u:
                best, best_u = st, u
        if best is not None:
            return best.pool
        return sick.pool if sick is not None else None

    def can_accept_task(self, pool: AgentPool | str, task: Task | None = None) -> bool:
        """True when ``pool`` can start one more task now (of ``task``'s size when given).

        Checks enabled, max_concurrency, the global limit and, with a task, CPU and memory quota.
        """
        st = self._state(pool)
        p = st.pool
        if not p.enabled or st.running >= p.max_concurrency:
            return False
        if self._global_running >= self.config.max_global_concurrency:
            return False
        if task is not None:
            if limits.task_problem(task) is not None:
                return False
            if p.cpu_quota is not None and st.cpu_m + cpu_millis(task.resources.cpu) > cpu_millis(
                p.cpu_quota
            ):
                return False
            if p.memory_quota is not None and st.memory_mb + task.resources.memory_mb > (
                p.memory_quota
            ):
                return False
        return True

    def fits_quota(self, pool: AgentPool | str, task: Task) -> bool:
        """True when ``task`` alone fits the pool's quotas (it could run there once idle)."""
        p = self._state(pool).pool
        if limits.task_problem(task) is not None:
            return False
        if p.cpu_quota is not None and cpu_millis(task.resources.cpu) > cpu_millis(p.cpu_quota):
            return False
        return not (p.memory_quota is not None and task.resources.memory_mb > p.memory_quota)

    def any_capacity(self) -> bool:
        """False when the global limit is reached or no enabled pool has a free place."""
        if self._global_running >= self.config.max_global_concurrency:
            return False
        return any(
            st.pool.enabled and st.running < st.pool.max_concurrency
            for st in self._states.values()
        )

    # --- accounting -----------------------------------------------------------------------------
    def acquire(self, pool_name: str, task: Task) -> None:
        """Count ``task`` as running in ``pool_name`` (its CPU and memory too).

        Limits are not checked here (the Scheduler checks before it acquires; adoption of
        runners found after a restart must be counted even above a lowered limit). Acquiring
        the same task twice raises DispatcherStateError.
        """
        with self._lock:
            st = self._state(pool_name)
            key = task.key
            other = self._held_in.get(key)
            if other is not None:
                raise DispatcherStateError(
                    f"task {key!r} already holds capacity in pool {other!r}; "
                    "release it before acquiring again"
                )
            res = task.resources
            cpu_ok = limits.CPU.problem(res.cpu) is None
            mem_ok = limits.MEMORY_MB.problem(res.memory_mb) is None
            if not (cpu_ok and mem_ok):  # adopted after a restart: count it, but as nothing
                log.warning("task %s holds capacity in pool %s with resources out of range "
                            "(cpu %s, memory_mb %s): counted as 0", key, pool_name,
                            limits.describe(res.cpu), limits.describe(res.memory_mb))
            cpu_m = cpu_millis(res.cpu) if cpu_ok else 0
            mem = res.memory_mb if mem_ok else 0
            st.holders[key] = (cpu_m, mem)
            self._held_in[key] = st.pool.name
            st.running += 1
            st.cpu_m += cpu_m
            st.memory_mb += mem
            self._global_running += 1
            self._version += 1

    def acquire_shape(self, pool: AgentPool, key: str, cpu_m: int, memory_mb: int) -> None:
        """:meth:`acquire` for the Scheduler, which already knows the task's checked shape
        (milli-cores and MB of a valid task: its group) and the pool :meth:`select_pool` gave:
        the same accounting without checking the numbers again (its hot path)."""
        with self._lock:
            other = self._held_in.get(key)
            if other is not None:
                raise DispatcherStateError(
                    f"task {key!r} already holds capacity in pool {other!r}; "
                    "release it before acquiring again"
                )
            st = self._states[pool.name]
            st.holders[key] = (cpu_m, memory_mb)
            self._held_in[key] = pool.name
            st.running += 1
            st.cpu_m += cpu_m
            st.memory_mb += memory_mb
            self._global_running += 1
            self._version += 1

    def release(self, pool_name: str, task: Task | str) -> bool:
        """Give back what ``task`` acquired in ``pool_name``; False (logged) if it held nothing."""
        with self._lock:
            st = self._state(pool_name)
            key = task if isinstance(task, str) else task.key
            held = st.holders.pop(key, None)
            if held is None:
                other = self._held_in.get(key)
                where = f" (it holds capacity in pool {other!r})" if other else ""
                log.warning(
                    "release of task %s in pool %s ignored: it holds no capacity there%s",
                    key,
                    pool_name,
                    where,
                )
                return False
            del self._held_in[key]
            st.running -= 1
            st.cpu_m -= held[0]
            st.memory_mb -= held[1]
            self._global_running -= 1
            self._version += 1
            for listener in self._release_listeners:
                try:
                    listener(st.pool.name, key)
                except Exception:  # a listener must not break the accounting
                    log.exception("release listener failed for task %s", key)
            return True

    def add_release_listener(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(pool_name, task_key)`` after every successful release."""
        with self._lock:
            if listener not in self._release_listeners:
                self._release_listeners.append(listener)

    def holds(self, pool_name: str, key: str) -> bool:
        """True when task ``key`` holds capacity in ``pool_name``."""
        return key in self._state(pool_name).holders

    def pool_of(self, key: str) -> str | None:
        """The pool in which task ``key`` holds capacity, if any."""
        return self._held_in.get(key)

    def holders(self, pool_name: str) -> list[str]:
        """Keys of the tasks holding capacity in ``pool_name``."""
        return list(self._state(pool_name).holders)

    # --- health ---------------------------------------------------------------------------------
    def record_launch_error(self, pool_name: str, message: str = "") -> None:
        """Count one failed launch in ``pool_name`` (consecutive errors make it unhealthy)."""
        with self._lock:
            st = self._state(pool_name)
            st.errors.append(self._clock())
            st.last_error = message or st.last_error
            self._version += 1
            while len(st.errors) > max(self.unhealthy_after, 1) * 4:
                st.errors.popleft()
            if len(st.errors) == self.unhealthy_after and not self._healthy(st):
                log.warning(
                    "pool %s is unhealthy: %d launch errors in a row, last: %s",
                    pool_name,
                    len(st.errors),
                    message,
                )

    def record_launch_success(self, pool_name: str) -> None:
        """A launch worked: the pool is healthy again."""
        with self._lock:
            st = self._state(pool_name)
            if st.errors and not self._healthy(st):
                log.info("pool %s is healthy again", pool_name)
            if st.errors:
                self._version += 1
            st.errors.clear()

    def set_platform_health(self, pool_name: str, ok: bool, message: str = "") -> bool:
        """The result of a platform check of ``pool_name`` (Docker engine or Kubernetes API
        reachable): a failing check makes the pool unavailable at once — it takes no tasks, which
        wait with that reason instead of spending attempts — until a check passes. Returns True
        when the health changed."""
        with self._lock:
            st = self._state(pool_name)
            before = st.platform_error
            if ok:
                st.platform_error = None
                if before is not None and st.last_error == before:
                    st.last_error = None
            else:
                st.platform_error = message or "platform check failed"
                st.last_error = st.platform_error
            changed = (before is None) != (st.platform_error is None) \
                or before != st.platform_error
            if changed:
                self._version += 1
            return changed

    def is_healthy(self, pool_name: str) -> bool:
        return self._healthy(self._state(pool_name))

    def platform_problem(self, pool_name: str) -> str | None:
        """Why the pool's platform is unreachable, or None while it is reachable."""
        return self._state(pool_name).platform_error

    def _healthy(self, st: _PoolState) -> bool:
        if st.platform_error is not None:
            return False
        if len(st.errors) < self.unhealthy_after:
            return True
        cutoff = self._clock() - self.health_window
        recent = sum(1 for t in st.errors if t >= cutoff)
        return recent < self.unhealthy_after

    def _recent_errors(self, st: _PoolState) -> int:
        cutoff = self._clock() - self.health_window
        return sum(1 for t in st.errors if t >= cutoff)

    # --- status ---------------------------------------------------------------------------------
    def get_pool_status(self, pool_name: str) -> PoolStatus:
        """Load, limits, enabled flag and health of one pool."""
        with self._lock:
            st = self._state(pool_name)
            p = st.pool
            return PoolStatus(
                pool_name=p.name,
                pool_type=p.type,
                running=st.running,
                max_concurrency=p.max_concurrency,
                utilization=min(1.0, st.utilization) if p.max_concurrency > 0 else 0.0,
                cpu_in_use=st.cpu_m / 1000.0,
                cpu_quota=p.cpu_quota,
                memory_in_use=st.memory_mb,
                memory_quota=p.memory_quota,
                enabled=p.enabled,
                healthy=self._healthy(st),
                recent_launch_errors=self._recent_errors(st),
                last_error=st.last_error,
            )

    def get_all_pool_status(self) -> list[PoolStatus]:
        """:meth:`get_pool_status` of every pool, in config order."""
        return [self.get_pool_status(name) for name in self._states]

    def pool_names(self) -> Sequence[str]:
        return list(self._states)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}={st.running}/{st.pool.max_concurrency}" for n, st in self._states.items()
        )
        return f"AgentPoolManager({parts}, global={self._global_running}/" \
            f"{self.config.max_global_concurrency})"
