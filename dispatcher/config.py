"""Dispatcher configuration: the :class:`DispatcherConfig` object and :func:`load_config`.

The YAML file has three sections, as in the seed: ``dispatcher:`` (scalars), ``agent_pools:``
(a mapping of pool name to pool definition) and ``skill_mapping:``. An optional ``ui:`` section
configures the console, an optional ``work:`` section how work flows between tasks (R21),
an optional ``ha:`` section leader election between replicas.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ha_config import HAConfig
from .models import AgentPool, SchedulingPolicy
from .notify_config import NotifyConfig

DEFAULT_STATE_DIR = ".necrocode"
DEFAULT_REGISTRY = f"{DEFAULT_STATE_DIR}/registry.db"
REGISTRY_ENV = "NECROCODE_REGISTRY"


class _Derived(float):
    """A default worked out from other settings in ``__post_init__`` (never seen outside)."""


#: Default heartbeat interval: 10 s, or a third of a heartbeat_timeout shorter than 30 s.
DEFAULT_HEARTBEAT_INTERVAL = 10.0


OSC_MODES = ("9", "777", "off")  # ui.notify_osc: which desktop-notification escape, if any


@dataclass
class UIConfig:
    """Settings of the necroui console."""

    refresh_interval: float = 0.5  # seconds between dashboard refreshes
    keymap: dict[str, str] = field(default_factory=dict)  # binding id -> keys, e.g. {"pause": "P"}
    notify_osc: str = "off"  # desktop notifications as terminal escapes: "9", "777" or "off"

    def __post_init__(self) -> None:
        # YAML reads ``9`` as a number and ``off`` as false: both mean what they say here
        if self.notify_osc is False:
            self.notify_osc = "off"
        elif isinstance(self.notify_osc, int) and not isinstance(self.notify_osc, bool):
            self.notify_osc = str(self.notify_osc)


@dataclass
class WorkConfig:
    """How a task's work is recorded, passed to its dependents and landed (R21)."""

    commit_author: str = "NecroCode Dispatcher <dispatcher@necrocode.invalid>"
    commit_message: str = "{title} ({key})"  # the agent's summary follows as the body
    on_no_changes: str = "done"  # done (with a warning) | fail
    merge_dependencies: bool = True  # dependents start from their dependencies' work
    integration_branch: str = "necrocode/{taskset}"
    land_check: list[str] | None = None  # argv run on the merged tree before each landing
    gate_timeout: float = 1800.0  # seconds the land check may run
    on_gate_failure: str = "stop"  # stop | retry (the task runs again with the output)
    push_task_branches: bool = False  # land --push also pushes the task branches


@dataclass
class DispatcherConfig:
    """Everything the Dispatcher can be told. Every field has a default."""

    # --- the seed's keys -------------------------------------------------------------------
    poll_interval: float = 5.0  # seconds between registry polls for outside writers
    scheduling_policy: SchedulingPolicy | str = SchedulingPolicy.PRIORITY
    max_global_concurrency: int = 10
    heartbeat_timeout: float = 60.0  # seconds without a sign of life before a runner is lost
    retry_max_attempts: int = 3
    retry_backoff_base: float = 2.0  # delay = base ** attempt seconds
    graceful_shutdown_timeout: float = 300.0
    agent_pools: list[AgentPool] = field(default_factory=list)
    skill_mapping: dict[str, list[str]] = field(default_factory=dict)

    # --- added keys ------------------------------------------------------------------------
    registry_path: str | None = None  # None: $NECROCODE_REGISTRY, else ./.necrocode/registry.db
    state_dir: str | None = None  # workspaces, logs, fallback events; None: beside the registry
    api_host: str = "127.0.0.1"
    api_port: int = 0  # 0: any free port (written to <state_dir>/dispatcher.json)
    api_enabled: bool = True
    # How often wrapped runners send heartbeats; not given: 10 s, or heartbeat_timeout / 3 when
    # that is shorter (a default never conflicts with the timeout the user chose).
    heartbeat_interval: float = _Derived(DEFAULT_HEARTBEAT_INTERVAL)
    priority_aging_seconds: float = 0.0  # +1 priority per this many seconds waiting; 0: off
    fair_share_weights: dict[str, float] = field(default_factory=dict)  # tenant -> weight
    fair_share_default_weight: float = 1.0
    fair_share_half_life: float = 3600.0  # seconds for past usage to count half
    fair_share_entry_charge: float = 60.0  # runner-seconds charged when a task is assigned
    retry_backoff_max: float = 300.0  # cap on the retry delay, seconds
    retry_jitter: float = 0.1  # +/- this fraction of the delay, at random
    non_retryable_exit_codes: list[int] = field(default_factory=list)
    slots_per_repo: int = 4  # worktrees per repository
    runner_stop_grace: float = 10.0  # seconds between TERM and KILL when stopping a runner
    deadlock_check_interval: float = 30.0
    snapshot_max_rate: float = 10.0  # snapshots published per second at most
    output_log_max_bytes: int = 64 * 1024 * 1024  # per attempt, tail kept; 0: no cap
    api_max_connections: int = 128  # HTTP API connections at once (<= a quarter of the fd limit)
    api_max_connections_per_client: int = 64  # ... from one address
    api_read_timeout: float = 10.0  # seconds an API connection may stay silent
    # --- coding agents (dispatcher.agents) -------------------------------------------------
    agent_prompt_template: str | None = None  # None: dispatcher.agents.prompt.DEFAULT_TEMPLATE
    agent_prices: dict[str, dict[str, float]] = field(default_factory=dict)  # USD per Mtok
    tenant_budgets: dict[str, dict[str, float]] = field(default_factory=dict)
    taskset_budgets: dict[str, dict[str, float]] = field(default_factory=dict)
    ui: UIConfig = field(default_factory=UIConfig)
    work: WorkConfig = field(default_factory=WorkConfig)
    ha: HAConfig | None = None  # the ``ha:`` section: leader election through a Lease
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    def __post_init__(self) -> None:
        if type(self.heartbeat_interval) is _Derived:
            interval = DEFAULT_HEARTBEAT_INTERVAL
            timeout = self.heartbeat_timeout
            if isinstance(timeout, int | float) and not isinstance(timeout, bool) \
                    and 0 < timeout < 3 * interval:
                interval = timeout / 3
            self.heartbeat_interval = float(interval)
        if isinstance(self.scheduling_policy, str) and not isinstance(
            self.scheduling_policy, SchedulingPolicy
        ):
            try:
                self.scheduling_policy = SchedulingPolicy(self.scheduling_policy)
            except ValueError:
                # A custom policy registered with dispatcher.policies.register_policy (R11.4).
                from .policies import available_policies

                if self.scheduling_policy not in available_policies():
                    raise

    # --- derived paths ---------------------------------------------------------------------
    def resolved_registry_path(self) -> Path:
        """Registry location: config, else $NECROCODE_REGISTRY, else ./.necrocode/registry.db."""
        raw = self.registry_path or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY
        return Path(raw).expanduser()

    def resolved_state_dir(self) -> Path:
        """Directory for workspaces, logs and the event fallback."""
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        return self.resolved_registry_path().parent

    def get_pool(self, name: str) -> AgentPool | None:
        for pool in self.agent_pools:
            if pool.name == name:
                return pool
        return None


def load_config(path: str | os.PathLike[str]) -> DispatcherConfig:
    """Load and validate a YAML config file; raises ConfigError listing every problem."""
    from .config_loader import load_config_file

    return load_config_file(path)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> DispatcherConfig:
    """Build a validated config from the parsed YAML structure."""
    from .config_loader import config_from_mapping

    return config_from_mapping(data, source=source)
