"""Loading and validating the Dispatcher's YAML configuration.

The file has the seed's three sections plus optional ``ui:`` and ``work:`` sections::

    dispatcher:      # every scalar setting of DispatcherConfig (poll_interval, ...)
    agent_pools:     # pool name -> {type, max_concurrency, cpu_quota, memory_quota, enabled,
                     #               config, agent_command}
    skill_mapping:   # skill -> [pool name, ...]; the ``default`` entry catches the rest
    ui:              # {refresh_interval, keymap, notify_osc}
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
import socket
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .config import DispatcherConfig, UIConfig
from .config_rules import NOT_SCALAR as _NOT_SCALAR
from .config_rules import bad_policy as _bad_policy
from .config_rules import policy_names, validate_config
from .errors import ConfigError, Problem
from .ha_config import ha_from_yaml, ha_to_dict
from .models import AgentPool, PoolType, SchedulingPolicy
from .notify_config import notify_from_section, notify_to_dict
from .work_config import work_from_section, work_to_dict
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

__all__ = ["config_from_mapping", "config_to_dict", "default_config", "dispatcher_keys",
           "load_config_file", "policy_names", "validate_config"]

SECTIONS = ("dispatcher", "agent_pools", "skill_mapping", "ui", "work", "ha", "notify")
POOL_KEYS = ("type", "max_concurrency", "cpu_quota", "memory_quota", "enabled", "config",
             "agent_command", "agent", "agent_options")
UI_KEYS = ("refresh_interval", "keymap", "notify_osc")
#: Keys of a pool's ``config`` that name files, resolved against the config file's folder.
PATH_KEYS = frozenset({"job_template", "kubeconfig"})


def dispatcher_keys() -> list[str]:
    """The keys the ``dispatcher:`` section accepts (every scalar field of DispatcherConfig)."""
    return [f.name for f in fields(DispatcherConfig) if f.name not in _NOT_SCALAR]



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
    kwargs["notify"] = notify_from_section(_section(data, "notify", locate, problems), locate,
                                           problems)

    config = DispatcherConfig(**kwargs)
    problems += validate_config(config, source=source, locate=locate)
    if not problems:
        problems += _place_problems(config, set(section), locate)
    if problems:
        problems.sort(key=_line_of)
        raise ConfigError(problems, title=f"invalid configuration {source}")
    _normalise_numbers(config)
    return config


def _place_problems(config: DispatcherConfig, written: set[Any], locate: Locate) -> list[Problem]:
    """Settings the user wrote that name a place that cannot work here: an ``api_host`` that
    does not resolve, a ``state_dir`` that is a file, a ``registry_path`` that is a folder but
    not a NecroCode registry."""
    out: list[Problem] = []

    def add(key: str, message: str, hint: str) -> None:
        path: Path_ = ("dispatcher", key)
        out.append(Problem(locate(path), dotted(path), message, hint))

    if "api_host" in written and config.api_enabled:
        try:
            socket.getaddrinfo(config.api_host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            add("api_host", f"{config.api_host!r} does not resolve to an address ({exc})",
                "use an address of this machine, e.g. 127.0.0.1, or a host name it resolves")
    raw = config.state_dir
    place = Path(raw).expanduser() if raw else None
    if "state_dir" in written and place is not None and place.exists() and not place.is_dir():
        add("state_dir", f"{raw} is a file, not a folder",
            "give a folder; it is created if missing")
    raw = config.registry_path
    if "registry_path" in written and raw:
        from .errors import RegistryError
        from .registry import registry_kind

        try:
            registry_kind(raw)
        except RegistryError as exc:
            add("registry_path", str(exc), "")
    return out


def _line_of(problem: Problem) -> int:
    tail = problem.location.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
        "ui": {"refresh_interval": config.ui.refresh_interval, "keymap": dict(config.ui.keymap),
               "notify_osc": config.ui.notify_osc},
        "work": work_to_dict(config.work),
        "notify": notify_to_dict(config.notify),
    }
    if config.ha is not None:
        out["ha"] = ha_to_dict(config.ha)
    return out
