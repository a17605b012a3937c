"""The value rules of a Dispatcher config: types, number ranges, pool references.

Applied to configs read from a file (:mod:`.config_loader`) and to configs built in code. Every
number is checked for finiteness and for its range (:mod:`.limits`), so ``.nan``, ``.inf`` or
``1e308`` are refused naming the key, the range and the value.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from . import limits
from .agents.checks import agent_problems, config_problems
from .config import OSC_MODES, DispatcherConfig, UIConfig
from .errors import Problem
from .models import AgentPool, PoolType, SchedulingPolicy
from .notify_config import validate_notify
from .work_config import validate_work
from .yaml_source import Locate, Path_, dotted, type_name

#: Fields of DispatcherConfig that are not plain settings of the ``dispatcher:`` section.
NOT_SCALAR = frozenset({"agent_pools", "skill_mapping", "ui", "work", "ha", "notify"})


def policy_names() -> list[str]:
    """Valid ``scheduling_policy`` values: the built-in ones, then registered custom ones."""
    names = [p.value for p in SchedulingPolicy]
    try:
        from .policies import available_policies
    except ImportError:  # pragma: no cover - the scheduling package is always there
        return names
    return names + [n for n in available_policies() if n not in names]


def bad_policy(value: Any, loc: str) -> Problem:
    """The problem of an unknown ``scheduling_policy``, with a did-you-mean."""
    close = difflib.get_close_matches(str(value), policy_names(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return Problem(loc, "dispatcher.scheduling_policy", f"unknown policy {value!r}",
                   f"{hint}valid policies: {', '.join(policy_names())}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_type(annotation: str, value: Any) -> str | None:
    """None when ``value`` fits the field annotation, else what was expected."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None:
        return None if optional else _EXPECTED.get(base, base)
    checks: dict[str, Callable[[Any], bool]] = {
        "int": _is_int,
        "float": limits.is_number,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "dict[str, float]": lambda v: isinstance(v, dict)
        and all(isinstance(k, str) and limits.is_number(x) for k, x in v.items()),
        "dict[str, str]": lambda v: isinstance(v, dict)
        and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
        "list[int]": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
        "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    }
    check = checks.get(base)
    if check is None or check(value):
        return None
    return _EXPECTED.get(base, base)


_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "dict[str, float]": "a mapping of name to number",
    "dict[str, str]": "a mapping of name to string",
    "list[int]": "a list of integers",
    "list[str]": "a list of strings",
}


def validate_config(config: DispatcherConfig, *, source: str = "DispatcherConfig",
                    locate: Locate | None = None) -> list[Problem]:
    """Every problem of a config object (types, ranges, pool references); empty when valid."""
    where: Locate = locate or (lambda path: source)
    problems: list[Problem] = []

    def add(path: Path_, message: str, hint: str = "") -> None:
        problems.append(Problem(where(path), dotted(path), message, hint))

    for f in fields(DispatcherConfig):
        if f.name in NOT_SCALAR:
            continue
        path: Path_ = ("dispatcher", f.name)
        value = getattr(config, f.name)
        if f.name == "scheduling_policy":
            if not isinstance(value, SchedulingPolicy) and value not in policy_names():
                problems.append(bad_policy(value, where(path)))
            continue
        expected = check_type(str(f.type), value)
        if expected is not None:
            add(path, f"expected {expected}, got {type_name(value)}")
            continue
        if limits.is_number(value):
            bound = limits.CONFIG_BOUNDS.get(f.name, limits.GENERIC)
            msg = bound.problem(value)
            if msg:
                add(path, msg, bound.hint())
    if isinstance(config.fair_share_weights, dict):
        for tenant, weight in config.fair_share_weights.items():
            msg = limits.WEIGHT.problem(weight)
            if msg:
                add(("dispatcher", "fair_share_weights", str(tenant)), msg,
                    "a weight is a share of the capacity")
    if isinstance(config.non_retryable_exit_codes, list):
        for i, code in enumerate(config.non_retryable_exit_codes):
            msg = limits.EXIT_CODE.problem(code)
            if msg:
                add(("dispatcher", "non_retryable_exit_codes", i), msg,
                    "exit codes are 0..255; negative: killed by that signal")
    hi, ht = config.heartbeat_interval, config.heartbeat_timeout
    if (limits.CONFIG_BOUNDS["heartbeat_interval"].problem(hi) is None
            and limits.CONFIG_BOUNDS["heartbeat_timeout"].problem(ht) is None and hi >= ht):
        add(("dispatcher", "heartbeat_interval"),
            f"heartbeat_interval ({hi:g}s) must be shorter than heartbeat_timeout ({ht:g}s)",
            "runners would be declared lost between two heartbeats; use a third of the timeout")

    pool_names = _validate_pools(config, add)
    config_problems(config.agent_prompt_template, config.agent_prices,
                    {"tenant_budgets": config.tenant_budgets,
                     "taskset_budgets": config.taskset_budgets}, add)
    _validate_skill_mapping(config, pool_names, add)
    _validate_ui(config.ui, add)
    validate_work(config.work, add)
    validate_notify(config.notify, add)
    return problems


def _validate_pools(config: DispatcherConfig, add: Callable[..., None]) -> list[str]:
    names: list[str] = []
    if not isinstance(config.agent_pools, list):
        add(("agent_pools",), f"expected a list of AgentPool, got {type_name(config.agent_pools)}")
        return names
    for pool in config.agent_pools:
        if not isinstance(pool, AgentPool):
            add(("agent_pools",), f"expected AgentPool objects, got {type_name(pool)}")
            continue
        path: Path_ = ("agent_pools", pool.name)
        if pool.name in names:
            add(path, "pool defined twice", "give each pool a unique name")
        names.append(pool.name)
        msg = limits.POOL_BOUNDS["max_concurrency"].problem(pool.max_concurrency)
        if msg:
            add((*path, "max_concurrency"), msg,
                "to stop a pool taking tasks, set 'enabled: false'")
        for key in ("cpu_quota", "memory_quota"):
            value = getattr(pool, key)
            if value is None:
                continue
            msg = limits.POOL_BOUNDS[key].problem(value)
            if msg:
                hint = f"{limits.POOL_BOUNDS[key].hint()}, or leave it out for no limit"
                add((*path, key), msg, hint)
        if not isinstance(pool.enabled, bool):
            add((*path, "enabled"), f"expected true or false, got {type_name(pool.enabled)}")
        agent_problems(pool.agent, pool.agent_options, path, add)
        cmd = pool.agent_command
        if cmd is not None and not (isinstance(cmd, list) and cmd
                                    and all(isinstance(x, str) for x in cmd)):
            add((*path, "agent_command"),
                f"expected a non-empty list of strings (argv), got {type_name(cmd)}",
                'e.g. ["python", "agent.py", "--task", "{task_id}"]; it never runs in a shell')
        if not isinstance(pool.config, dict):
            add((*path, "config"), f"expected a mapping, got {type_name(pool.config)}")
            continue
        _validate_pool_config(pool, path, add)
    return names


def _validate_pool_config(pool: AgentPool, path: Path_, add: Callable[..., None]) -> None:
    liveness = pool.config.get("liveness")
    if liveness is not None and liveness not in ("process", "log"):
        add((*path, "config", "liveness"),
            f"expected 'process' or 'log', got {liveness!r}",
            "process: a live process is a sign of life (local pools); "
            "log: log growth or heartbeats within heartbeat_timeout")
    for key, value in pool.config.items():
        if isinstance(value, float) and limits.GENERIC.problem(value):
            add((*path, "config", str(key)), limits.GENERIC.problem(value) or "",
                "write a finite number")
    if pool.type is PoolType.KUBERNETES:
        ns = pool.config.get("namespace")
        if not isinstance(ns, str) or not ns:
            add((*path, "config", "namespace"),
                "a kubernetes pool needs config.namespace (a string)",
                "e.g. namespace: necrocode-agents")
    if pool.type is PoolType.DOCKER:
        image = pool.config.get("image")
        if not isinstance(image, str) or not image:
            add((*path, "config", "image"), "a docker pool needs config.image (a string)",
                "e.g. image: necrocode/runner:latest")


def _validate_skill_mapping(config: DispatcherConfig, pool_names: list[str],
                            add: Callable[..., None]) -> None:
    if not isinstance(config.skill_mapping, dict):
        add(("skill_mapping",),
            f"expected a mapping of skill to pool names, got {type_name(config.skill_mapping)}")
        return
    for skill, pools in config.skill_mapping.items():
        path: Path_ = ("skill_mapping", str(skill))
        if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
            add(path, f"expected a list of pool names, got {type_name(pools)}",
                f"e.g. {skill}: [{', '.join(pool_names[:2]) or 'local'}]")
            continue
        if not pools:
            add(path, "empty list of pools", "name at least one pool, or remove the entry")
        for i, name in enumerate(pools):
            if name not in pool_names:
                close = difflib.get_close_matches(name, pool_names, n=1, cutoff=0.6)
                hint = (f"did you mean {close[0]!r}?" if close
                        else f"defined pools: {', '.join(pool_names) or 'none'}")
                add((*path, i), f"names undefined pool {name!r}", hint)


def _validate_ui(ui: UIConfig, add: Callable[..., None]) -> None:
    if not isinstance(ui, UIConfig):
        add(("ui",), f"expected a mapping, got {type_name(ui)}")
        return
    msg = limits.REFRESH.problem(ui.refresh_interval)
    if msg:
        add(("ui", "refresh_interval"), msg, limits.REFRESH.hint())
    if check_type("dict[str, str]", ui.keymap) is not None:
        add(("ui", "keymap"),
            f"expected a mapping of binding id to keys, got {type_name(ui.keymap)}",
            'e.g. keymap: {pause: "P"}')
    if ui.notify_osc not in OSC_MODES:
        add(("ui", "notify_osc"), f"expected one of 9, 777, off, got {ui.notify_osc!r}",
            "9: OSC 9 (iTerm2, WezTerm, kitty, Windows Terminal); 777: OSC 777 (foot, VTE); "
            "off: toasts and the bell only")
