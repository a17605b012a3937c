"""Validation of the coding-agent keys of a config and of a taskset.

Config: a pool's ``agent`` and ``agent_options``; the ``dispatcher:`` keys
``agent_prompt_template``, ``agent_prices``, ``tenant_budgets`` and ``taskset_budgets``.
Taskset: ``agent``, ``agent_options`` and the budgets ``max_cost_usd``, ``max_tokens``,
``max_turns`` (on the taskset as defaults of its tasks, and on each task). Each problem is
reported through ``add(path, message, hint)`` so that the caller names ``file:line``.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Callable, Mapping
from typing import Any

from . import PRESET_NAMES, get_preset
from .base import COMMON_OPTIONS, AgentOptionError
from .budget import BUDGET_KEYS, Budget, Price
from .launch import options_from_mapping
from .prompt import PLACEHOLDERS

Add = Callable[..., None]  # add(path tuple, message, hint="")
PRICE_KEYS = ("input", "output", "cached")


def _close(name: str, valid: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f"did you mean {match[0]!r}? " if match else ""


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def agent_problems(agent: Any, options: Any, path: tuple[Any, ...], add: Add) -> None:
    """Problems of an ``agent`` name and its ``agent_options`` under ``path``."""
    if agent is not None and (not isinstance(agent, str) or agent not in PRESET_NAMES):
        add((*path, "agent"), f"unknown agent {agent!r}",
            f"{_close(str(agent), PRESET_NAMES)}agents: {', '.join(PRESET_NAMES)}")
        return
    if options in (None, {}):
        return
    if not isinstance(options, dict):
        add((*path, "agent_options"), "expected a mapping of option to value",
            "e.g. agent_options: {model: gpt-5-codex, api_key_env: OPENAI_API_KEY}")
        return
    valid = list(COMMON_OPTIONS)
    if isinstance(agent, str):
        valid += list(get_preset(agent).extra_options)
    for key in options:
        if str(key) not in valid:
            where = f"agent {agent}" if agent else "agents (no agent named here)"
            add((*path, "agent_options", str(key)), f"unknown option of {where}",
                f"{_close(str(key), valid)}options: {', '.join(valid)}")
    try:
        options_from_mapping(options)
    except AgentOptionError as exc:
        key, _, message = str(exc).partition(": ")
        add((*path, "agent_options", key), message or str(exc))


def budget_problems(values: Mapping[str, Any], path: tuple[Any, ...], add: Add) -> None:
    """Problems of ``max_cost_usd`` / ``max_tokens`` / ``max_turns`` in ``values``."""
    for key in BUDGET_KEYS:
        value = values.get(key)
        if value is None:
            continue
        integer = key != "max_cost_usd"
        ok = (isinstance(value, int) and not isinstance(value, bool)) if integer \
            else _number(value)
        if not ok or value <= 0:
            kind = "a positive integer" if integer else "a positive number (USD)"
            add((*path, key), f"expected {kind}, got {value!r}", "leave it out for no limit")


def budget_of(values: Mapping[str, Any]) -> Budget:
    """A checked budget mapping as a :class:`Budget`."""
    cost = values.get("max_cost_usd")
    return Budget(float(cost) if cost is not None else None, values.get("max_tokens"),
                  values.get("max_turns"))


def config_problems(template: Any, prices: Any, budgets: Mapping[str, Any], add: Add) -> None:
    """Problems of the ``dispatcher:`` agent keys (``budgets``: name -> its value)."""
    if template is not None:
        if not isinstance(template, str):
            add(("dispatcher", "agent_prompt_template"), "expected a string (the template)")
        else:
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            except ValueError as exc:
                add(("dispatcher", "agent_prompt_template"), f"not a valid template: {exc}",
                    "write literal braces as {{ and }}")
                names = set()
            for name in sorted(names - set(PLACEHOLDERS)):
                add(("dispatcher", "agent_prompt_template"), f"unknown placeholder {{{name}}}",
                    f"{_close(name, list(PLACEHOLDERS))}placeholders: {', '.join(PLACEHOLDERS)}")
    if not isinstance(prices, dict):
        add(("dispatcher", "agent_prices"), "expected a mapping of model to prices")
    else:
        for model, price in prices.items():
            path = ("dispatcher", "agent_prices", str(model))
            if not isinstance(price, dict) or not all(_number(price.get(k)) for k in
                                                      ("input", "output")):
                add(path, "expected {input: USD, output: USD} per million tokens",
                    "e.g. gpt-5-codex: {input: 1.25, output: 10, cached: 0.125}")
                continue
            for key, value in price.items():
                if str(key) not in PRICE_KEYS:
                    add((*path, str(key)), "unknown price",
                        f"{_close(str(key), PRICE_KEYS)}prices: {', '.join(PRICE_KEYS)}")
                elif not _number(value) or value < 0:
                    add((*path, str(key)), f"expected a number >= 0, got {value!r}")
    for section, value in budgets.items():
        if not isinstance(value, dict):
            add(("dispatcher", section), "expected a mapping of name to budget",
                "e.g. team-a: {max_cost_usd: 50}")
            continue
        for name, budget in value.items():
            path = ("dispatcher", section, str(name))
            if not isinstance(budget, dict):
                add(path, "expected a budget mapping", f"keys: {', '.join(BUDGET_KEYS)}")
                continue
            for key in budget:
                if str(key) not in BUDGET_KEYS:
                    add((*path, str(key)), "unknown budget",
                        f"{_close(str(key), BUDGET_KEYS)}budgets: {', '.join(BUDGET_KEYS)}")
            budget_problems(budget, path, add)


def prices_of(prices: Mapping[str, Any]) -> dict[str, Price]:
    """A checked ``agent_prices`` mapping as :class:`Price` objects."""
    return {str(m): Price(float(p["input"]), float(p["output"]),
                          float(p["cached"]) if p.get("cached") is not None else None)
            for m, p in prices.items()}


TASKSET_AGENT_KEYS = ("agent", "agent_options", *BUDGET_KEYS)


def task_agent_fields(item: Mapping[str, Any], defaults: Mapping[str, Any],
                      path: tuple[Any, ...], add: Add) -> dict[str, Any]:
    """The checked agent fields of a taskset item (a task, or the taskset's own keys when
    ``defaults`` is empty) over the taskset's defaults: Task keyword arguments."""
    own = item.get("agent")
    inherited = defaults.get("agent")
    agent_problems(own if own is not None else inherited, item.get("agent_options"), path, add)
    budget_problems(item, path, add)
    agent = own if isinstance(own, str) and own in PRESET_NAMES else (
        None if own is not None else inherited)
    options: dict[str, Any] = {}
    if own is None or own == inherited:
        options.update(defaults.get("agent_options") or {})
    if isinstance(item.get("agent_options"), dict):
        options.update(item["agent_options"])
    out: dict[str, Any] = {"agent": agent, "agent_options": options}
    for key in BUDGET_KEYS:
        value: Any = item.get(key) if item.get(key) is not None else defaults.get(key)
        ok = _number(value) and value > 0
        out[key] = (float(value) if key == "max_cost_usd" else value) if ok else None
    return out
