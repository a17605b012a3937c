"""Reference of every configuration key: section, name, type, default and meaning.

Built from :class:`~.config.DispatcherConfig`, :class:`~.models.AgentPool` and
:class:`~.config.UIConfig` themselves, so it cannot drift from the code: a field without an
entry in :data:`MEANINGS` fails the tests. ``necroui config keys`` prints it, and
``necroui config keys --markdown`` writes the table the README carries.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from enum import Enum
from typing import Any

from .config import DispatcherConfig, UIConfig, WorkConfig
from .config_loader import POOL_KEYS
from .ha_config import HAConfig
from .models import AgentPool
from .notify_config import NotifyConfig

#: What each key means, by ``section.key``.
MEANINGS: dict[str, str] = {
    "dispatcher.poll_interval": "Seconds between registry polls for tasks written by other "
    "processes (writes through this process wake the Dispatcher at once).",
    "dispatcher.scheduling_policy": "fifo, priority, skill-based, fair-share, or the name of a "
    "registered custom policy.",
    "dispatcher.max_global_concurrency": "Runners at once over all pools.",
    "dispatcher.heartbeat_timeout": "Seconds without a sign of life before a runner is declared "
    "lost, stopped and its task retried.",
    "dispatcher.retry_max_attempts": "Attempts per task before it is FAILED (a task's "
    "max_attempts overrides it).",
    "dispatcher.retry_backoff_base": "Retry delay is base ** attempt seconds.",
    "dispatcher.graceful_shutdown_timeout": "Seconds to wait for running runners on shutdown "
    "before stopping them.",
    "dispatcher.registry_path": "Task Registry (SQLite) file; default $NECROCODE_REGISTRY, else "
    "./.necrocode/registry.db.",
    "dispatcher.state_dir": "Folder for workspaces, run logs and the event fallback; default: "
    "the registry's folder.",
    "dispatcher.api_host": "Address of the HTTP API (runners, control, /metrics).",
    "dispatcher.api_port": "Port of the HTTP API; 0 picks a free one (written to "
    "<state_dir>/dispatcher.json).",
    "dispatcher.api_enabled": "Serve the HTTP API (docker and kubernetes runners need it).",
    "dispatcher.heartbeat_interval": "Seconds between heartbeats of wrapped runners; must be "
    "shorter than heartbeat_timeout. Not given: 10, or a third of a heartbeat_timeout under 30.",
    "dispatcher.priority_aging_seconds": "A waiting task gains +1 priority per this many "
    "seconds; 0 turns aging off.",
    "dispatcher.fair_share_weights": "fair-share: tenant -> weight (share of the capacity).",
    "dispatcher.fair_share_default_weight": "fair-share: weight of tenants not listed.",
    "dispatcher.fair_share_half_life": "fair-share: seconds for past usage to count half.",
    "dispatcher.fair_share_entry_charge": "fair-share: runner-seconds charged to a tenant when "
    "one of its tasks is assigned.",
    "dispatcher.retry_backoff_max": "Cap on the retry delay, seconds.",
    "dispatcher.retry_jitter": "Random +/- fraction added to each retry delay (0..1).",
    "dispatcher.non_retryable_exit_codes": "Agent exit codes that fail the task at once.",
    "dispatcher.slots_per_repo": "Workspaces (git worktrees) per repository.",
    "dispatcher.runner_stop_grace": "Seconds between TERM and KILL when stopping a runner.",
    "dispatcher.deadlock_check_interval": "Seconds between dependency-cycle checks of the "
    "registry.",
    "dispatcher.snapshot_max_rate": "Snapshots (console refreshes of engine state) per second "
    "at most.",
    "dispatcher.output_log_max_bytes": "Cap of one attempt's output.log in bytes; past it the "
    "file keeps a marker line and its last half (the newest output). 0: no cap. A pool's "
    "config.output_log_max_bytes overrides it.",
    "dispatcher.api_max_connections": "HTTP API connections at once (never more than a quarter "
    "of the process's file-descriptor limit); silent ones make room for new ones.",
    "dispatcher.api_max_connections_per_client": "HTTP API connections at once from one "
    "address.",
    "dispatcher.api_read_timeout": "Seconds an HTTP API connection may stay silent before it "
    "is closed.",
    "dispatcher.agent_prompt_template": "Prompt of coding-agent tasks: {title}, {description}, "
    "{requirements}, {acceptance}, {metadata}, {dependencies}, {slot_path}, {branch}, ... "
    "filled in; null: the built-in template (README \"Run real agents\").",
    "dispatcher.agent_prices": "model -> {input, output, cached} USD per million tokens, to "
    "derive a cost for agents that report none.",
    "dispatcher.tenant_budgets": "tenant -> {max_cost_usd, max_tokens, max_turns}: the agent "
    "usage of all its tasks; over it, its tasks wait.",
    "dispatcher.taskset_budgets": "taskset -> {max_cost_usd, max_tokens, max_turns}, like "
    "tenant_budgets.",
    "agent_pools.NAME.type": "local-process, docker or kubernetes.",
    "agent_pools.NAME.max_concurrency": "Runners of this pool at once.",
    "agent_pools.NAME.cpu_quota": "Cores the running tasks of the pool may use in total; "
    "null: no limit.",
    "agent_pools.NAME.memory_quota": "MB the running tasks of the pool may use in total; "
    "null: no limit.",
    "agent_pools.NAME.enabled": "A disabled pool takes no new tasks.",
    "agent_pools.NAME.config": "Platform settings: docker needs image; kubernetes needs "
    "namespace (and job_template, relative to the config file). liveness: process (default "
    "of local-process pools: a live process is a sign of life, only the task timeout catches "
    "a hang) or log (log growth or heartbeats within heartbeat_timeout; the rule of docker "
    "and kubernetes pools).",
    "agent_pools.NAME.agent_command": "argv template for tasks without a command "
    "({task_id}, {slot_path}, ... filled in; never run through a shell).",
    "agent_pools.NAME.agent": "Coding-agent preset of the pool's tasks: claude-code, codex, "
    "gemini, mini-swe-agent, aider or command; null: agent_command.",
    "agent_pools.NAME.agent_options": "model, base_url, api_key_env (the variable holding the "
    "key), extra_args, executable, and the preset's own options.",
    "skill_mapping.SKILL": "Ordered list of pools for tasks needing SKILL; 'default' takes "
    "tasks without a skill or with an unmapped one.",
    "ui.refresh_interval": "Seconds between dashboard refreshes.",
    "ui.keymap": "Key rebinding: binding id -> keys, e.g. {pause: P}.",
    "ui.notify_osc": "Desktop notifications from the console as terminal escapes: 9 (OSC 9: "
                     "iTerm2, WezTerm, kitty, Windows Terminal), 777 (OSC 777: foot, "
                     "rxvt-unicode, VTE terminals) or off.",
    "work.commit_author": "Author and committer of the commits the Dispatcher makes "
    "('Name <email>').",
    "work.commit_message": "Message of the commit of a run's leftover changes: {key}, {id}, "
    "{taskset}, {title}, {description} filled in; the agent's final summary follows as the "
    "body unless the template places {summary} itself.",
    "work.on_no_changes": "A successful run that changed nothing: done (with a warning) or "
    "fail.",
    "work.merge_dependencies": "A dependent's branch starts from the base merged with its "
    "DONE dependencies' work (false: from the default branch).",
    "work.integration_branch": "Branch `necroui land` merges DONE work into; {taskset} is "
    "filled in.",
    "work.land_check": "argv run on the merged tree before each landing (a merge queue "
    "gate); null: no check. `land --check` overrides it.",
    "work.gate_timeout": "Seconds the land check may run before it counts as failed.",
    "work.on_gate_failure": "A failed gate: stop (the task is marked gate failed) or retry "
    "(it runs again with the check's output).",
    "work.push_task_branches": "`land --push` also pushes the task branches.",
    "ha.lease": "Name of the coordination.k8s.io/v1 Lease the replicas elect a leader with "
    "(the section is optional: without it one Dispatcher runs alone).",
    "ha.namespace": "Namespace of the Lease (the Dispatcher's own).",
    "ha.duration": "Seconds a standby waits after the last renewal it saw before taking over.",
    "ha.renew_deadline": "A leader that could not renew for this long stops dispatching "
    "(shorter than duration).",
    "ha.retry_period": "Seconds between renewals and between a standby's attempts.",
    "ha.identity": "This replica's name in the Lease; null: <hostname>-<pid>.",
    "notify.command": "argv run for each notice, the notice as JSON on stdin (no shell); "
    "null: none.",
    "notify.webhook": "http(s) URL POSTed each notice as JSON; null: none.",
    "notify.events": "Notice kinds sent to the hooks (task_failed, budget_stop, conflict, "
    "gate_failed, taskset_finished); null: every kind.",
    "notify.timeout": "Seconds per hook call; a slower command is killed.",
    "notify.queue_size": "Notices waiting for slow hooks; past it the oldest are dropped.",
}


@dataclass(frozen=True)
class KeyDoc:
    """One configuration key."""

    key: str  # "dispatcher.poll_interval"
    type: str
    default: str
    meaning: str


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value in ({}, []):
        return "{}" if isinstance(value, dict) else "[]"
    return str(value)


def config_reference() -> list[KeyDoc]:
    """Every key of the config file, in file order."""
    out: list[KeyDoc] = []
    for f in fields(DispatcherConfig):
        if f.name in ("agent_pools", "skill_mapping", "ui", "work", "ha", "notify"):
            continue
        key = f"dispatcher.{f.name}"
        out.append(KeyDoc(key, str(f.type), _show(_default(f)), MEANINGS.get(key, "")))
    pool_fields = {f.name: f for f in fields(AgentPool)}
    for name in POOL_KEYS:
        f = pool_fields[name]
        key = f"agent_pools.NAME.{name}"
        out.append(KeyDoc(key, str(f.type), _show(_default(f)), MEANINGS.get(key, "")))
    out.append(KeyDoc("skill_mapping.SKILL", "list[str]", "{}",
                      MEANINGS["skill_mapping.SKILL"]))
    for f in fields(UIConfig):
        key = f"ui.{f.name}"
        out.append(KeyDoc(key, str(f.type), _show(_default(f)), MEANINGS.get(key, "")))
    for f in fields(WorkConfig):
        key = f"work.{f.name}"
        out.append(KeyDoc(key, str(f.type), _show(_default(f)), MEANINGS.get(key, "")))
    for f in fields(HAConfig):
        key = f"ha.{f.name}"
        default = "required" if f.name == "lease" else _show(_default(f))
        out.append(KeyDoc(key, str(f.type), default, MEANINGS.get(key, "")))
    for f in fields(NotifyConfig):
        key = f"notify.{f.name}"
        out.append(KeyDoc(key, str(f.type), _show(_default(f)), MEANINGS.get(key, "")))
    return out


def reference_markdown() -> str:
    """The reference as a Markdown table."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for doc in config_reference():
        cells = [f"`{doc.key}`", f"`{doc.type}`", f"`{doc.default}`",
                 doc.meaning.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
