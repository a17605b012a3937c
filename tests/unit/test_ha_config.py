"""The ``ha:`` section: read, defaulted, shown back, and every problem named at file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from necrocode.dispatcher.config import load_config
from necrocode.dispatcher.config_loader import config_to_dict
from necrocode.dispatcher.errors import ConfigError
from necrocode.dispatcher.ha_config import HAConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dispatcher.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return [str(p) for p in info.value.problems]


def test_ha_section_is_read_with_defaults_and_shown_back(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "ha:\n  lease: necrocode-dispatcher\n  duration: 20\n"))
    assert config.ha == HAConfig(lease="necrocode-dispatcher", duration=20.0)
    assert config_to_dict(config)["ha"]["namespace"] == "necrocode"
    assert load_config(write(tmp_path, "dispatcher: {}\n")).ha is None  # optional
    assert HAConfig(lease="x", identity="me").resolved_identity() == "me"
    assert HAConfig(lease="x").resolved_identity().endswith(f"-{__import__('os').getpid()}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the Lease name is required
        ("ha:\n  namespace: necrocode\n", ":1: ha: the Lease name is missing"),
        # not a DNS subdomain
        ("ha:\n  lease: Not_Valid\n", ":2: ha.lease: 'Not_Valid' is not a valid Lease name"),
        # a typo, with a did-you-mean
        ("ha:\n  lease: l\n  duraton: 5\n",
         ":3: ha.duraton: unknown key in section ha (did you mean 'duration'?)"),
        # timing that would let two leaders overlap
        ("ha:\n  lease: l\n  duration: 5\n  renew_deadline: 5\n",
         ":4: ha.renew_deadline: must be shorter than duration (5 s)"),
        ("ha:\n  lease: l\n  retry_period: 12\n",
         ":3: ha.retry_period: must be shorter than renew_deadline (10 s)"),
        ("ha:\n  lease: l\n  duration: soon\n",
         ":3: ha.duration: expected a number of seconds, got the string 'soon'"),
        ("ha:\n  lease: l\n  namespace: My NS\n",
         ":3: ha.namespace: 'My NS' is not a valid namespace name"),
        ("ha: [lease]\n", ":1: ha: expected a mapping, got a list"),
    ],
)
def test_ha_problems_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(tmp_path / "dispatcher.yaml")) for p in found)
