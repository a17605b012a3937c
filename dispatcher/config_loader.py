"""Loading and validating the Dispatcher's YAML configuration.

The file has the seed's three sections plus optional ``ui:`` and ``work:`` sections::

    dispatcher:      # every scalar setting of DispatcherConfig (poll_interval, ...)
    agent_pools:     # pool name -> {type, max_concurrency, cpu_quota, memory_quota, enabled,
                     #               config, agent_command}
    skill_mapping:   # skill -> [pool name, ...]; the ``default`` entry catches the rest
    ui:              # {refresh_interval, keymap}
    work:            # how work flows between tasks (see work_config)
    ha:              # {lease, namespace, duration, renew_deadline, retry_period, identity}

Validation never stops at the first problem: :func:`load_config_file` collects every problem
(unknown keys with a did-you-mean, wrong types, bad values, references to undefined pools, YAML
syntax) and raises one :class:`~.errors.ConfigError` whose problems each name ``file:line`` and
the dotted key. :func:`validate_config` applies the same value rules to a config built in code.

Relative file paths in a pool's ``config`` (``job_template``, ``kubeconfig``) are resolved
against the folder of the config file, so ``config/dispatcher.yaml`` can name
``manifests/runner-job.yaml``.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .agents.checks import agent_problems, config_problems
from .config import DispatcherConfig, UIConfig
from .errors import ConfigError, Problem
from .ha_config import ha_from_yaml, ha_to_dict
from .models import AgentPool, PoolType, SchedulingPolicy
from .work_config import validate_work, work_from_section, work_to_dict
from .yaml_source import (
    Locate,
    Path_,
    dotted,
    locator,
    parse_yaml,
    type_name,
    yaml_error_problem,
)

log = logging.getLogger(__name__)

SECTIONS = ("dispatcher", "agent_pools", "skill_mapping", "ui", "work", "ha")
POOL_KEYS = ("type", "max_concurrency", "cpu_quota", "memory_quota", "enabled", "config",
             "agent_command", "agent", "agent_options")
UI_KEYS = ("refresh_interval", "keymap")
#: Keys of a pool's ``config`` that name files, resolved against the config file's folder.
PATH_KEYS = frozenset({"job_template", "kubeconfig"})
#: Fields of DispatcherConfig that are not plain settings of the ``dispatcher:`` section.
_NOT_SCALAR = frozenset({"agent_pools", "skill_mapping", "ui", "work", "ha"})


def dispatcher_keys() -> list[str]:
    """The keys the ``dispatcher:`` section accepts (every scalar field of DispatcherConfig)."""
    return [f.name for f in fields(DispatcherConfig) if f.name not in _NOT_SCALAR]


def policy_names() -> list[str]:
    """Valid ``scheduling_policy`` values: the built-in ones, then registered custom ones."""
    names = [p.value for p in SchedulingPolicy]
    try:
        from .policies import available_policies
    except ImportError:  # pragma: no cover - the scheduling package is always there
        return names
    return names + [n for n in available_policies() if n not in names]


def default_config() -> DispatcherConfig:
    """The config used when no file is given: one local pool ``local`` of 4 runners."""
    return DispatcherConfig(
        agent_pools=[AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=4)],
        skill_mapping={"default": ["local"]},
    )


def _unknown(key: str, valid: list[str] | tuple[str, ...], where: str, loc: str,
             path: Path_) -> Problem:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return Problem(loc, dotted(path), f"unknown key in {where}", hint)


# --- file -> config -------------------------------------------------------------------------


def load_config_file(path: str | os.PathLike[str]) -> DispatcherConfig:
    """Read, parse and validate a YAML config file; raises ConfigError listing every problem."""
    source = os.fspath(path)
    p = Path(source)
    if not p.exists():
        raise ConfigError([Problem(source, "", "config file not found",
                                   "check the path, or run without --config for the defaults")])
    if not p.is_file():
        raise ConfigError([Problem(source, "", "not a file", "give the path of a YAML file")])
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(source, "", f"cannot read the file: {exc}")]) from exc
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_error_problem(exc, source)]) from exc
    if doc.duplicates:
        raise ConfigError([Problem(f"{source}:{line}", dotted(path), "key given twice",
                                   "keep only one of them") for path, line in doc.duplicates])
    return config_from_mapping(doc.value, source, lines=doc.lines, base_dir=p.resolve().parent)


def config_from_mapping(data: Any, source: str = "<dict>", *,
                        lines: dict[Path_, int] | None = None,
                        base_dir: Path | None = None) -> DispatcherConfig:
    """Build a validated config from the parsed YAML structure; raises ConfigError."""
    locate = locator(source, lines or {})
    problems: list[Problem] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(locate(()), "", f"expected a mapping of sections, got "
                                   f"{type_name(data)}",
                                   f"the file has the sections {', '.join(SECTIONS)}")])
    scalar_keys = dispatcher_keys()
    for key in data:
        if str(key) not in SECTIONS:
            path: Path_ = (str(key),)
            if str(key) in scalar_keys:
                problems.append(Problem(locate(path), str(key), "setting outside its section",
                                        "move it under 'dispatcher:'"))
            else:
                problems.append(_unknown(str(key), SECTIONS, "the top level", locate(path), path))

    kwargs: dict[str, Any] = {}
    section = _section(data, "dispatcher", locate, problems)
    for key, value in section.items():
        path = ("dispatcher", str(key))
        if str(key) not in scalar_keys:
            problems.append(_unknown(str(key), scalar_keys, "section dispatcher", locate(path),
                                     path))
        elif key == "scheduling_policy" and value not in policy_names():
            problems.append(_bad_policy(value, locate(path)))
        else:
            kwargs[str(key)] = value

    pools: list[AgentPool] = []
    for name, body in _section(data, "agent_pools", locate, problems).items():
        pool = _pool_from_yaml(str(name), body, locate, problems, base_dir)
        if pool is not None:
            pools.append(pool)
    kwargs["agent_pools"] = pools

    mapping = _section(data, "skill_mapping", locate, problems)
    kwargs["skill_mapping"] = {str(k): v for k, v in mapping.items()}

    ui = _section(data, "ui", locate, problems)
    ui_kwargs: dict[str, Any] = {}
    for key, value in ui.items():
        path = ("ui", str(key))
        if str(key) not in UI_KEYS:
            problems.append(_unknown(str(key), UI_KEYS, "section ui", locate(path), path))
        else:
            ui_kwargs[str(key)] = value
    kwargs["ui"] = UIConfig(**ui_kwargs)
    kwargs["work"] = work_from_section(_section(data, "work", locate, problems), locate, problems)
    if data.get("ha") is not None:
        kwargs["ha"] = ha_from_yaml(_section(data, "ha", locate, problems), locate, problems)

    config = DispatcherConfig(**kwargs)
    problems += validate_config(config, source=source, locate=locate)
    if problems:
        problems.sort(key=_line_of)
        raise ConfigError(problems, title=f"invalid configuration {source}")
    _normalise_numbers(config)
    return config


def _line_of(problem: Problem) -> int:
    tail = problem.location.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _normalise_numbers(config: DispatcherConfig) -> None:
    """YAML ``5`` for a seconds field becomes ``5.0``, as the dataclass types say."""
    for f in fields(DispatcherConfig):
        value = getattr(config, f.name)
        if str(f.type).startswith("float") and _is_int(value):
            setattr(config, f.name, float(value))
    for pool in config.agent_pools:
        if _is_int(pool.cpu_quota):
            pool.cpu_quota = float(pool.cpu_quota)  # type: ignore[arg-type]


def _section(data: dict[str, Any], name: str, locate: Locate,
             problems: list[Problem]) -> dict[Any, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(Problem(locate((name,)), name,
                                f"expected a mapping, got {type_name(value)}",
                                "indent its keys under the section name"))
        return {}
    return value


def _bad_policy(value: Any, loc: str) -> Problem:
    close = difflib.get_close_matches(str(value), policy_names(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return Problem(loc, "dispatcher.scheduling_policy", f"unknown policy {value!r}",
                   f"{hint}valid policies: {', '.join(policy_names())}")


def _pool_from_yaml(name: str, body: Any, locate: Locate, problems: list[Problem],
                    base_dir: Path | None) -> AgentPool | None:
    path: Path_ = ("agent_pools", name)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        problems.append(Problem(locate(path), dotted(path),
                                f"expected a pool definition (a mapping), got {type_name(body)}",
                                "give at least 'type:' and 'max_concurrency:'"))
        return None
    kwargs: dict[str, Any] = {"name": name}
    for key, value in body.items():
        sub = (*path, str(key))
        if str(key) not in POOL_KEYS:
            problems.append(_unknown(str(key), POOL_KEYS, f"agent pool {name!r}", locate(sub),
                                     sub))
        else:
            kwargs[str(key)] = value
    raw_type = kwargs.pop("type", PoolType.LOCAL_PROCESS.value)
    valid_types = [t.value for t in PoolType]
    if raw_type in valid_types:
        kwargs["type"] = PoolType(raw_type)
    else:
        close = difflib.get_close_matches(str(raw_type), valid_types, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append(Problem(locate((*path, "type")), dotted((*path, "type")),
                                f"unknown pool type {raw_type!r}",
                                f"{hint}valid types: {', '.join(valid_types)}"))
        kwargs["type"] = PoolType.LOCAL_PROCESS
        kwargs["config"] = {}  # type-specific checks would only add noise
    cfg = kwargs.get("config")
    if isinstance(cfg, dict) and base_dir is not None:
        kwargs["config"] = {
            k: (str(base_dir / v) if k in PATH_KEYS and isinstance(v, str) and v
                and not Path(v).expanduser().is_absolute() else v)
            for k, v in cfg.items()
        }
    resolved = kwargs.get("config")
    template = resolved.get("job_template") if isinstance(resolved, dict) else None
    if base_dir is not None and isinstance(template, str) and not Path(template).exists():
        log.warning("%s: %s.config.job_template: %s does not exist; the pool's runners will "
                    "fail to launch until it does", locate((*path, "config", "job_template")),
                    dotted(path), template)
    return AgentPool(**kwargs)


# --- value rules (files and configs built in code) -------------------------------------------

# field -> (minimum, inclusive?) for numeric settings of the dispatcher: section.
_MINIMUMS: dict[str, tuple[float, bool]] = {
    "poll_interval": (0, False),
    "max_global_concurrency": (1, True),
    "heartbeat_timeout": (0, False),
    "retry_max_attempts": (1, True),
    "retry_backoff_base": (1, True),
    "graceful_shutdown_timeout": (0, True),
    "api_port": (0, True),
    "heartbeat_interval": (0, False),
    "priority_aging_seconds": (0, True),
    "fair_share_default_weight": (0, False),
    "fair_share_half_life": (0, False),
    "fair_share_entry_charge": (0, True),
    "retry_backoff_max": (0, False),
    "retry_jitter": (0, True),
    "slots_per_repo": (1, True),
    "runner_stop_grace": (0, True),
    "deadlock_check_interval": (0, False),
    "snapshot_max_rate": (0, False),
}
_MAXIMUMS: dict[str, float] = {"api_port": 65535, "retry_jitter": 1}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_type(annotation: str, value: Any) -> str | None:
    """None when ``value`` fits the field annotation, else what was expected."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None:
        return None if optional else _EXPECTED.get(base, base)
    checks: dict[str, Callable[[Any], bool]] = {
        "int": _is_int,
        "float": _is_number,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "dict[str, float]": lambda v: isinstance(v, dict)
        and all(isinstance(k, str) and _is_number(x) for k, x in v.items()),
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


def _range_problem(value: float, minimum: float, inclusive: bool,
                   maximum: float | None) -> str | None:
    if (value < minimum) if inclusive else (value <= minimum):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        return f"must be {bound}, got {value:g}"
    if maximum is not None and value > maximum:
        return f"must be <= {maximum:g}, got {value:g}"
    return None


def validate_config(config: DispatcherConfig, *, source: str = "DispatcherConfig",
                    locate: Locate | None = None) -> list[Problem]:
    """Every problem of a config object (types, limits, pool references); empty when valid."""
    where: Locate = locate or (lambda path: source)
    problems: list[Problem] = []

    def add(path: Path_, message: str, hint: str = "") -> None:
        problems.append(Problem(where(path), dotted(path), message, hint))

    for f in fields(DispatcherConfig):
        if f.name in _NOT_SCALAR:
            continue
        path: Path_ = ("dispatcher", f.name)
        value = getattr(config, f.name)
        if f.name == "scheduling_policy":
            if not isinstance(value, SchedulingPolicy) and value not in policy_names():
                problems.append(_bad_policy(value, where(path)))
            continue
        expected = _check_type(str(f.type), value)
        if expected is not None:
            add(path, f"expected {expected}, got {type_name(value)}")
            continue
        if f.name in _MINIMUMS and _is_number(value):
            low, inclusive = _MINIMUMS[f.name]
            msg = _range_problem(value, low, inclusive, _MAXIMUMS.get(f.name))
            if msg:
                add(path, msg)
    if isinstance(config.fair_share_weights, dict):
        for tenant, weight in config.fair_share_weights.items():
            if _is_number(weight) and weight <= 0:
                add(("dispatcher", "fair_share_weights", str(tenant)),
                    f"must be > 0, got {weight:g}", "a weight is a share of the capacity")
    hi, ht = config.heartbeat_interval, config.heartbeat_timeout
    if _is_number(hi) and _is_number(ht) and hi > 0 and ht > 0 and hi >= ht:
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
        if not _is_int(pool.max_concurrency):
            add((*path, "max_concurrency"),
                f"expected an integer, got {type_name(pool.max_concurrency)}")
        elif pool.max_concurrency < 1:
            add((*path, "max_concurrency"), f"must be >= 1, got {pool.max_concurrency}",
                "to stop a pool taking tasks, set 'enabled: false'")
        for key, kind in (("cpu_quota", "a number"), ("memory_quota", "an integer (MB)")):
            value = getattr(pool, key)
            if value is None:
                continue
            ok = _is_number(value) if key == "cpu_quota" else _is_int(value)
            if not ok:
                add((*path, key), f"expected {kind} or null, got {type_name(value)}")
            elif value <= 0:
                add((*path, key), f"must be > 0, got {value:g}",
                    "leave it out (or null) for no limit")
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
        liveness = pool.config.get("liveness")
        if liveness is not None and liveness not in ("process", "log"):
            add((*path, "config", "liveness"),
                f"expected 'process' or 'log', got {liveness!r}",
                "process: a live process is a sign of life (local pools); "
                "log: log growth or heartbeats within heartbeat_timeout")
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
    return names


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
    if not _is_number(ui.refresh_interval):
        add(("ui", "refresh_interval"),
            f"expected a number, got {type_name(ui.refresh_interval)}")
    elif ui.refresh_interval <= 0:
        add(("ui", "refresh_interval"), f"must be > 0, got {ui.refresh_interval:g}")
    if _check_type("dict[str, str]", ui.keymap) is not None:
        add(("ui", "keymap"),
            f"expected a mapping of binding id to keys, got {type_name(ui.keymap)}",
            'e.g. keymap: {pause: "P"}')


# --- config -> plain data --------------------------------------------------------------------


def config_to_dict(config: DispatcherConfig) -> dict[str, Any]:
    """The config as the YAML structure :func:`config_from_mapping` reads (``config show``)."""
    section: dict[str, Any] = {}
    for name in dispatcher_keys():
        value = getattr(config, name)
        if isinstance(value, SchedulingPolicy):
            value = value.value
        elif isinstance(value, dict | list):
            value = type(value)(value)
        section[name] = value
    pools: dict[str, Any] = {}
    for pool in config.agent_pools:
        body: dict[str, Any] = {"type": pool.type.value, "max_concurrency": pool.max_concurrency}
        if pool.cpu_quota is not None:
            body["cpu_quota"] = pool.cpu_quota
        if pool.memory_quota is not None:
            body["memory_quota"] = pool.memory_quota
        body["enabled"] = pool.enabled
        if pool.config:
            body["config"] = dict(pool.config)
        if pool.agent_command is not None:
            body["agent_command"] = list(pool.agent_command)
        if pool.agent is not None:
            body["agent"] = pool.agent
        if pool.agent_options:
            body["agent_options"] = dict(pool.agent_options)
        pools[pool.name] = body
    out: dict[str, Any] = {
        "dispatcher": section,
        "agent_pools": pools,
        "skill_mapping": {k: list(v) for k, v in config.skill_mapping.items()},
        "ui": {"refresh_interval": config.ui.refresh_interval, "keymap": dict(config.ui.keymap)},
        "work": work_to_dict(config.work),
    }
    if config.ha is not None:
        out["ha"] = ha_to_dict(config.ha)
    return out
