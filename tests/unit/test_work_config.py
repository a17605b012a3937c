"""The ``work:`` section of the config: parsed, validated with file:line, shown, documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from necrocode.dispatcher.config import WorkConfig, load_config
from necrocode.dispatcher.config_loader import config_to_dict
from necrocode.dispatcher.errors import ConfigError
from necrocode.dispatcher.work_config import integration_branch, valid_branch_name


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dispatcher.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p).replace(str(path), "F") for p in info.value.problems]


def test_work_section_is_read(tmp_path: Path) -> None:
    path = tmp_path / "dispatcher.yaml"
    path.write_text("work:\n  commit_author: 'Bot <bot@x.org>'\n  on_no_changes: fail\n"
                    "  land_check: [make, test]\n  gate_timeout: 60\n"
                    "  integration_branch: 'integration/{taskset}'\n")
    work = load_config(path).work
    assert (work.commit_author, work.on_no_changes, work.land_check, work.gate_timeout) == (
        "Bot <bot@x.org>", "fail", ["make", "test"], 60)
    assert integration_branch(work, "chat app") == "integration/chat-app"
    shown = config_to_dict(load_config(path))["work"]
    assert shown["gate_timeout"] == 60.0 and shown["on_gate_failure"] == "stop"


def test_every_problem_of_the_work_section_names_its_line(tmp_path: Path) -> None:
    got = problems(tmp_path, "\n".join([
        "work:",
        "  commit_author: bot",                      # 2
        "  commit_message: '{title} {branch}'",      # 3
        "  on_no_changes: maybe",                    # 4
        "  integration_branch: 'bad..name'",         # 5
        "  land_check: make test",                   # 6
        "  gate_timeout: 0",                         # 7
        "  on_gate_failure: retry-forever",          # 8
        "  push_task_branch: true",                  # 9
        "  merge_dependencies: yes please",          # 10
    ]) + "\n")
    assert got == [
        "F:2: work.commit_author: expected 'Name <email>', got 'bot' "
        "(e.g. \"NecroCode Dispatcher <dispatcher@example.com>\")",
        "F:3: work.commit_message: unknown placeholder(s) {branch}; known: {key}, {id}, "
        "{taskset}, {title}, {description}, {summary}",
        "F:4: work.on_no_changes: expected done or fail, got 'maybe'",
        "F:5: work.integration_branch: not a valid branch name: 'bad..name' "
        "(e.g. necrocode/{taskset} or integration/{taskset})",
        "F:6: work.land_check: expected a non-empty list of strings (argv), got the string "
        "'make test' (e.g. [\"make\", \"test\"]; it never runs in a shell)",
        "F:7: work.gate_timeout: must be > 0, got 0",
        "F:8: work.on_gate_failure: expected stop or retry, got 'retry-forever'",
        "F:9: work.push_task_branch: unknown key in section work "
        "(did you mean 'push_task_branches'?)",
        "F:10: work.merge_dependencies: expected true or false, got the string 'yes please'",
    ]


@pytest.mark.parametrize("name,ok", [
    ("necrocode/chat", True), ("feature/task-a-1.2", True), ("-x", False), ("a..b", False),
    ("a b", False), ("a/", False), ("a.lock", False), ("a//b", False), ("a/.b", False),
    ("x@{1}", False), ("", False), ("a:b", False)])
def test_branch_names(name: str, ok: bool) -> None:
    assert valid_branch_name(name) is ok


def test_defaults() -> None:
    work = WorkConfig()
    assert (work.on_no_changes, work.merge_dependencies, work.on_gate_failure) == (
        "done", True, "stop")
    assert integration_branch(work, "chat") == "necrocode/chat"
