"""Randomized bad input (hypothesis) through the real CLI: tasksets for `submit`, configs for
`config check`, a subset through a real subprocess.

Every case must end with exit status 0 or 1 and a message, never a traceback or a hang, and a
refused submit writes nothing (the registry's tasks and events are unchanged).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.config_loader import dispatcher_keys
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.tasksets import TASK_KEYS

from necroui.cli import main


class Raw(str):
    """YAML written as it is (not quoted): ``.nan``, ``1.0e+400``, an alias."""


#: Values that are valid YAML but bad numbers or bad names.
RAW = [".nan", ".NaN", ".inf", "-.inf", "1.0e+400", "-1.0e+400", "1e308", "1.0e+308",
       "123456789012345678901234567890", "-99999999999999999999999", "0x7fffffffffffffffff",
       "0o777777777777777777777", "~", "null", "yes", "!!float 1", "!!int '7'", "2001-12-14",
       "[" * 120 + "]" * 120, "'" + "x" * 300 + "'", '"\\u0000"', '"a\\tb"', "'..'", "'.'",
       "'a/b'", "' lead'", "-0.0", "1.5", "0", "-1", "4", "10"]
#: YAML that does not load (undefined alias, unknown tag, a stray anchor).
BROKEN = ["*nowhere", "!!python/object:os.system x", "!!binary aGk=", "&a1 [1, 2]", "*a1"]
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30),
    st.floats(allow_nan=True, allow_infinity=True), TEXT, st.sampled_from(RAW).map(Raw),
    st.sampled_from(RAW).map(Raw), st.sampled_from(RAW + BROKEN).map(Raw))
VALUE = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


def render(value: Any) -> str:
    """Flow-style YAML; strings JSON-quoted (valid YAML), Raw as written."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render(k)}: {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, float):
        return ".nan" if value != value else (".inf" if value == float("inf") else
                                              "-.inf" if value == float("-inf") else repr(value))
    if isinstance(value, str):
        return quote(value)
    return json.dumps(value)


def quote(text: str) -> str:
    """A YAML double-quoted scalar: printable characters as they are, others escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() and c != "\ufeff":
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def task_strategy() -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from([*TASK_KEYS, "resources", "bogus", "cpu"])
    return st.dictionaries(keys, VALUE, max_size=7).map(
        lambda d: {"id": d.pop("id", "t"), "title": d.pop("title", "t"), **d})


TASKSETS = st.fixed_dictionaries(
    {"taskset": st.one_of(st.just("fuzz"), VALUE),
     "tasks": st.one_of(st.lists(task_strategy(), max_size=4), VALUE)},
    optional={"repo": VALUE, "tenant": VALUE, "extra": VALUE})

DISPATCHER = st.dictionaries(st.sampled_from([*dispatcher_keys(), "bogus"]), VALUE, max_size=6)
POOL = st.dictionaries(st.sampled_from(["type", "max_concurrency", "cpu_quota", "memory_quota",
                                        "enabled", "config", "agent_command", "bogus"]),
                       VALUE, max_size=5)
CONFIGS = st.fixed_dictionaries({}, optional={
    "dispatcher": st.one_of(DISPATCHER, VALUE),
    "agent_pools": st.one_of(st.dictionaries(st.sampled_from(["local", "d", "k"]), POOL,
                                             max_size=2), VALUE),
    "skill_mapping": VALUE, "ui": VALUE, "work": VALUE, "bogus": VALUE})


@pytest.fixture(scope="module")
def registry_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fuzz")
    db = root / "reg.db"
    seed = root / "seed.yaml"
    seed.write_text("taskset: fuzz\ntasks:\n  - {id: seed, title: seed}\n")
    env = {"NECROCODE_REGISTRY": str(db), "NECROCODE_CONFIG": ""}
    assert CliRunner().invoke(main, ["submit", str(seed)], env=env).exit_code == 0
    return env


def footprint(env: dict[str, str]) -> tuple[int, int]:
    registry = open_registry(env["NECROCODE_REGISTRY"])
    try:
        return sum(registry.count_tasks().values()), len(list(registry.get_events()))
    finally:
        registry.close()


def check(result: Any) -> None:
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(doc=TASKSETS)
def test_random_tasksets_through_submit(registry_env: dict[str, str], tmp_path: Path,
                                        doc: dict[str, Any]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("\n".join(f"{render(k)}: {render(v)}" for k, v in doc.items()) + "\n")
    before = footprint(registry_env)
    result = CliRunner().invoke(main, ["submit", "--dry-run", str(path)], env=registry_env)
    check(result)
    result = CliRunner().invoke(main, ["submit", str(path)], env=registry_env)
    check(result)
    if result.exit_code != 0:
        assert footprint(registry_env) == before, result.output  # refused: nothing written


@settings(FUZZ, max_examples=200)
@given(doc=CONFIGS)
def test_random_configs_through_config_check(registry_env: dict[str, str], tmp_path: Path,
                                             doc: dict[str, Any]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(f"{render(k)}: {render(v)}" for k, v in doc.items()) + "\n")
    check(CliRunner().invoke(main, ["config", "check", str(path)], env=registry_env))


@settings(FUZZ, max_examples=6)
@given(taskset=TASKSETS, config=CONFIGS)
def test_a_subset_through_a_real_process(tmp_path: Path, taskset: dict[str, Any],
                                         config: dict[str, Any]) -> None:
    tpath, cpath = tmp_path / "t.yaml", tmp_path / "c.yaml"
    tpath.write_text("\n".join(f"{render(k)}: {render(v)}" for k, v in taskset.items()) + "\n")
    cpath.write_text("\n".join(f"{render(k)}: {render(v)}" for k, v in config.items()) + "\n")
    code = "from necroui.cli import main; main()"
    for args in (["config", "check", str(cpath)], ["submit", "--dry-run", str(tpath)]):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin",
                                   "NECROCODE_REGISTRY": str(tmp_path / "r.db")})
        assert proc.returncode in (0, 1), proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
