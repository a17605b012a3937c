"""The demo of necroui: a 30-task taskset run by a bundled fake agent.

``necroui --demo`` (dashboard) and ``necroui --no-tui --demo`` call :func:`demo_config` to give
the default configuration three local pools (one per demo skill) and short retry backoffs, and
:func:`submit_demo` to submit ``demo.yaml`` when the registry holds no tasks yet.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: `python -m necroui.demo.fake_agent` imports this package
    from necrocode.dispatcher.config import DispatcherConfig

logger = logging.getLogger(__name__)

DEMO_FILE = "demo.yaml"
DEMO_TASKSET = "demo"


def demo_taskset_path() -> Path:
    """Path of the bundled demo taskset."""
    return Path(str(resources.files(__name__).joinpath(DEMO_FILE)))


def _is_default_setup(config: DispatcherConfig) -> bool:
    from necrocode.dispatcher.models import PoolType

    pools = config.agent_pools
    if not pools:
        return True
    return (len(pools) == 1 and pools[0].name == "local"
            and pools[0].type is PoolType.LOCAL_PROCESS
            and config.skill_mapping in ({}, {"default": ["local"]}))


def demo_config(config: DispatcherConfig) -> DispatcherConfig:
    """The config for a demo run.

    With the default pools, three local pools take the demo's skills (database 1, backend 3,
    frontend 2 runners); with the default retry settings, backoffs are shortened to about a
    second. A config of your own keeps its pools. The fake agent is started as ``python3 -m
    necroui.demo.fake_agent``: the folder of this Python is put first on PATH so ``python3`` is
    the interpreter necroui is installed in.
    """
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.models import AgentPool, PoolType

    changes: dict[str, Any] = {}
    if _is_default_setup(config):
        changes["agent_pools"] = [
            AgentPool(name="database", type=PoolType.LOCAL_PROCESS, max_concurrency=1),
            AgentPool(name="backend", type=PoolType.LOCAL_PROCESS, max_concurrency=3),
            AgentPool(name="frontend", type=PoolType.LOCAL_PROCESS, max_concurrency=2),
        ]
        changes["skill_mapping"] = {"database": ["database"], "backend": ["backend"],
                                    "frontend": ["frontend"],
                                    "default": ["backend", "frontend", "database"]}
        changes["max_global_concurrency"] = max(6, min(config.max_global_concurrency, 6))
    defaults = DispatcherConfig()
    if config.retry_backoff_base == defaults.retry_backoff_base:
        changes["retry_backoff_base"] = 1.2
    if config.retry_backoff_max == defaults.retry_backoff_max:
        changes["retry_backoff_max"] = 5.0
    _python_first_on_path()
    return replace(config, **changes) if changes else config


def _python_first_on_path() -> None:
    folder = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    parts = path.split(os.pathsep) if path else []
    if folder and (not parts or parts[0] != folder):
        os.environ["PATH"] = os.pathsep.join([folder, *[p for p in parts if p != folder]])


def submit_demo(core: Any) -> int:
    """Submit the demo taskset through ``core`` (a DispatcherCore) when the registry is empty.

    Returns the number of tasks submitted (0 when the registry already held tasks).
    """
    from necrocode.dispatcher.tasksets import load_taskset_file

    counts = core.registry.count_tasks()
    if sum(counts.values()) > 0:
        logger.info("registry already holds tasks: demo taskset not submitted")
        return 0
    taskset, _warnings = load_taskset_file(demo_taskset_path(), core.config, core.registry)
    result = core.submit(taskset)
    return len(result.created)


__all__ = ["DEMO_TASKSET", "demo_config", "demo_taskset_path", "submit_demo"]
