"""YAML that expands or nests without end is refused at once, through the real CLI.

A 1 KB "billion laughs" file used to make `config check` and `submit` run for minutes; now it is
refused within the alias budget, naming the line. Legitimate anchors (shared blocks, merge keys)
still work, however many tasks share them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers.kubernetes_spec import load_job_template
from necrocode.dispatcher.yaml_source import ALIAS_BUDGET, YamlLimitError, parse_yaml

from necroui.cli import main


def laughs(levels: int = 9, indent: str = "") -> str:
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    return {"NECROCODE_REGISTRY": str(tmp_path / "reg.db")}


BOMBS = {
    "taskset": "taskset: s\ntasks:\n  - id: a\n    title: a\n    metadata:\n"
               + laughs(indent="      "),
    "config": "dispatcher:\n  poll_interval: 1\nui:\n  keymap:\n" + laughs(indent="    "),
    "deep": "taskset: s\ntasks:\n  - id: a\n    title: a\n    metadata: "
            + "[" * 150 + "]" * 150 + "\n",
    "recursive": "taskset: s\ntasks:\n  - &t {id: a, title: a, metadata: {self: *t}}\n",
    "long-int": "taskset: s\ntasks:\n  - {id: a, title: a, priority: " + "9" * 5000 + "}\n",
    "merge-bomb": "taskset: s\nbase: &b {x: 1}\ntasks:\n  - id: a\n    title: a\n"
                  "    metadata:\n      <<: *b\n" + laughs(indent="      "),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_submit_and_config_check_refuse_bombs_at_once(env: dict[str, str], tmp_path: Path,
                                                       name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(BOMBS[name])
    verb = ["config", "check"] if name == "config" else ["submit"]
    result = CliRunner().invoke(main, [*verb, str(path)], env=env)
    assert result.exit_code == 1, result.output
    assert "YAML refused" in result.output, result.output
    assert f"{name}.yaml:" in result.output
    assert "Traceback" not in result.output
    if verb == ["submit"]:
        assert "nothing written" in result.output
        assert not (tmp_path / "reg.db").exists() or _count(tmp_path / "reg.db") == 0


def _count(db: Path) -> int:
    from necrocode.dispatcher.registry import open_registry

    registry = open_registry(str(db))
    try:
        return sum(registry.count_tasks().values())
    finally:
        registry.close()


def test_the_budget_counts_repeats_beyond_what_is_written() -> None:
    block = "{cpu: 1, memory_mb: 64, metadata: {a: 1, b: 2, c: [1, 2, 3]}}"
    shared = f"r: &r {block}\nitems:\n" + "".join(
        f"  - {{id: t{i}, resources: *r}}\n" for i in range(20_000))
    doc = parse_yaml(shared)  # 9 values repeated for every 4 written: fine
    assert doc.value["items"][-1]["resources"]["metadata"]["c"] == [1, 2, 3]
    with pytest.raises(YamlLimitError, match="aliases expand"):
        parse_yaml(laughs(4))  # 9**4 = 6,561 lists of 9 strings
    assert ALIAS_BUDGET == 10_000


def test_anchors_and_merge_keys_still_work() -> None:
    text = "base: &b {k: 1}\nx:\n  <<: *b\n  j: 2\ny: *b\n"
    assert parse_yaml(text).value == yaml.safe_load(text)


def test_a_job_template_bomb_is_a_launch_error(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("kind: Job\nmetadata:\n  labels:\n" + laughs(indent="    "))
    with pytest.raises(RunnerLaunchError, match="aliases expand"):
        load_job_template(str(path))
