"""The README's config reference and set-up commands cannot drift from the code."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config import DispatcherConfig, UIConfig, WorkConfig
from necrocode.dispatcher.ha_config import HAConfig
from necrocode.dispatcher.models import AgentPool
from necrocode.dispatcher.notify_config import NotifyConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _table_rows() -> dict[str, str]:
    """`key` -> the default column of every reference table row in the README."""
    rows: dict[str, str] = {}
    for match in re.finditer(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", README, re.M):
        rows[match.group(1)] = match.group(2)
    return rows


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return MISSING
    return value.value if isinstance(value, Enum) else value


def _as_readme(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return str(value)


SECTIONS = {"agent_pools", "skill_mapping", "ui", "work", "ha", "notify"}


@pytest.mark.parametrize(
    "prefix,cls,skip",
    [
        ("", DispatcherConfig, SECTIONS),  # the dispatcher: section
        ("", AgentPool, {"name"}),  # a pool definition (name is the mapping key)
        ("ui.", UIConfig, set()),  # the ui: section
        ("work.", WorkConfig, set()),  # the work: section
        ("ha.", HAConfig, set()),  # the ha: section (lease is required: no default)
        ("notify.", NotifyConfig, set()),  # the notify: section
    ],
)
def test_every_config_key_is_documented_with_its_default(prefix: str, cls: type,
                                                        skip: set[str]) -> None:
    rows = _table_rows()
    for f in fields(cls):
        if f.name in skip:
            continue
        key = prefix + f.name
        assert key in rows, f"README config reference lacks `{key}`"
        expected = _default(f)
        if expected is not MISSING:
            assert rows[key] == _as_readme(expected), f"README default of `{key}`"


def test_readme_states_the_two_commands_and_ci_runs_the_test_command() -> None:
    assert "pip install -e . && necroui --demo" in README
    test_cmd = "pip install -e '.[test]' && python -m pytest -q"
    assert test_cmd in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pip install -q -e \".[test]\"" in ci
    assert re.search(r"^python -m pytest -q$", ci, re.M)
