"""Randomized bad input (hypothesis) through the real CLI: tasksets for `submit`, configs for
`config check`, a subset through a real subprocess.

Every case must end with exit status 0 or 1 and a message, never a traceback or a hang, and a
refused submit writes nothing (the registry's tasks and events are unchanged).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from necrocode.dispatcher import limits
from necrocode.dispatcher.config import load_config
from necrocode.dispatcher.config_loader import config_to_dict, dispatcher_keys
from necrocode.dispatcher.names import name_problem
from necrocode.dispatcher.registry import open_registry

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


NUMBERS = ["1.0e+400", "-1.0e+400", ".nan", ".inf", "-.inf", "1.0e+308", "0x7fffffffffff",
           "123456789012345678901234567890", "-0.0", "0", "1", "-1", "2.5", "1000000001"]
#: Mostly numbers, bad ones often: the shape of the bugs (a NaN cpu, a 27-digit priority).
NUM = st.one_of(st.integers(-10**30, 10**30), st.integers(-5, 2000),
                st.floats(allow_nan=True, allow_infinity=True),
                st.sampled_from(NUMBERS).map(Raw), LEAF)
NAME = st.one_of(st.sampled_from(["1", "1.1", "a b", "a_b", "a:b", ".", "..", "x..y", "-",
                                  "a/b", " x", "x" * 201, "ü"]), TEXT, LEAF)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "priority": NUM, "timeout": NUM, "max_attempts": NUM, "estimate": st.one_of(NUM, TEXT),
    "resources": st.fixed_dictionaries({}, optional={"cpu": NUM, "memory_mb": NUM,
                                                     "gpu": NUM}),
    "depends_on": st.one_of(st.lists(NAME, max_size=3), NAME),
    "command": st.one_of(st.lists(TEXT, min_size=1, max_size=3), VALUE),
    "skill": NAME, "tenant": NAME, "optional": VALUE, "metadata": VALUE, "repo": VALUE,
    "description": VALUE, "paths": VALUE, "bogus": VALUE,
}


def task_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": NAME, "title": st.one_of(TEXT, LEAF)},
        optional={k: st.one_of(v, v, VALUE) for k, v in FIELDS.items()})


TASKSETS = st.fixed_dictionaries(
    {"taskset": st.one_of(st.just("fuzz"), NAME),
     "tasks": st.one_of(st.lists(task_strategy(), max_size=4), VALUE)},
    optional={"repo": VALUE, "tenant": VALUE, "extra": VALUE})

DISPATCHER = st.dictionaries(st.sampled_from([*dispatcher_keys(), "bogus"]),
                             st.one_of(NUM, NUM, VALUE), max_size=6)
POOL = st.fixed_dictionaries({}, optional={
    "type": st.one_of(st.sampled_from(["local-process", "docker", "kubernetes"]), VALUE),
    "max_concurrency": NUM, "cpu_quota": NUM, "memory_quota": NUM, "enabled": VALUE,
    "config": st.one_of(st.dictionaries(st.sampled_from(["image", "namespace",
                                                         "output_log_max_bytes", "liveness"]),
                                        NUM), VALUE),
    "agent_command": VALUE, "bogus": VALUE})
CONFIGS = st.fixed_dictionaries({}, optional={
    "dispatcher": st.one_of(DISPATCHER, DISPATCHER, VALUE),
    "agent_pools": st.one_of(st.dictionaries(st.sampled_from(["local", "d", "k"]), POOL,
                                             max_size=2), VALUE),
    "skill_mapping": VALUE, "ui": st.one_of(st.fixed_dictionaries(
        {}, optional={"refresh_interval": NUM, "keymap": VALUE}), VALUE),
    "work": VALUE, "bogus": VALUE})


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
    else:  # accepted: every stored task can be scheduled, and its name used as a path
        registry = open_registry(registry_env["NECROCODE_REGISTRY"])
        try:
            for task in registry.list_tasks():
                assert limits.task_problem(task) is None, task
                assert name_problem(task.id) is None and name_problem(task.taskset) is None
        finally:
            registry.close()


@settings(FUZZ, max_examples=200)
@given(doc=CONFIGS)
def test_random_configs_through_config_check(registry_env: dict[str, str], tmp_path: Path,
                                             doc: dict[str, Any]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(f"{render(k)}: {render(v)}" for k, v in doc.items()) + "\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)], env=registry_env)
    check(result)
    if result.exit_code == 0:  # accepted: every number in it is finite
        assert all(math.isfinite(x) for x in numbers(config_to_dict(load_config(path))))


def numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) \
        and abs(value) < 1e300 else [math.inf] if isinstance(value, float) else []


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
