"""Runner launchers: one per pool type (local-process, docker, kubernetes)."""

from __future__ import annotations

from ..models import PoolType
from .base import LaunchEnvironment, RunnerExit, RunnerLauncher, StopResult

__all__ = ["LaunchEnvironment", "RunnerExit", "RunnerLauncher", "StopResult", "launcher_for"]


def launcher_for(pool_type: PoolType | str, env: LaunchEnvironment) -> RunnerLauncher:
    """The launcher of a pool type. Platform modules are imported here, on demand, so the engine
    imports without the ``docker`` or ``kubernetes`` packages; their clients connect on first use.
    """
    ptype = PoolType(pool_type)
    if ptype is PoolType.LOCAL_PROCESS:
        from .local import LocalProcessLauncher

        return LocalProcessLauncher(env)
    if ptype is PoolType.DOCKER:
        from .docker import DockerLauncher

        return DockerLauncher(env)
    from .kubernetes import KubernetesLauncher

    return KubernetesLauncher(env)
