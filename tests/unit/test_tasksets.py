"""YAML tasksets: the R1.5 format, every problem named, nothing written on error, re-submit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from necrocode.dispatcher.config_loader import default_config
from necrocode.dispatcher.errors import TasksetError
from necrocode.dispatcher.models import AgentPool, Resources, Taskset, TaskState
from necrocode.dispatcher.registry.memory import MemoryRegistry
from necrocode.dispatcher.tasksets import (
    load_taskset_file,
    parse_taskset,
    submit_taskset_file,
    validate_taskset,
)

R15_EXAMPLE = """\
taskset: chat-app            # required: the taskset (spec) name
repo: ./path/or/url          # optional: repository the tasks work in
tenant: team-a               # optional: default tenant of its tasks
tasks:
  - id: "1.0"
    title: Plan
  - id: "1.1"                # required, unique in the taskset
    title: Create the schema # required
    description: ...
    skill: database          # the task's required_skill
    priority: 5
    depends_on: ["1.0"]
    resources: {cpu: 1, memory_mb: 512}
    command: ["python", "agent.py", "--task", "1.1"]   # argv, never run through a shell
    timeout: 600
    max_attempts: 3
    tenant: team-b
    metadata: {any: thing}
"""


def write(tmp_path: Path, text: str, name: str = "tasks.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path, **kw: object) -> list[str]:
    with pytest.raises(TasksetError) as info:
        load_taskset_file(path, **kw)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


def test_r15_example_maps_every_field(tmp_path: Path) -> None:
    taskset, warnings = load_taskset_file(write(tmp_path, R15_EXAMPLE))
    assert warnings == []
    assert (taskset.name, taskset.tenant) == ("chat-app", "team-a")
    assert taskset.repo == str(tmp_path / "path" / "or" / "url")  # relative to the file
    plan, schema = taskset.tasks
    assert plan.tenant == "team-a" and plan.state is TaskState.READY
    assert plan.repo == taskset.repo
    assert schema.id == "1.1" and schema.taskset == "chat-app"
    assert schema.title == "Create the schema"
    assert schema.description == "..."
    assert schema.required_skill == "database"
    assert schema.priority == 5
    assert schema.dependencies == ["1.0"]
    assert schema.state is TaskState.BLOCKED
    assert schema.resources == Resources(cpu=1.0, memory_mb=512)
    assert schema.command == ["python", "agent.py", "--task", "1.1"]
    assert schema.timeout == 600
    assert schema.max_attempts == 3
    assert schema.tenant == "team-b"
    assert schema.metadata == {"any": "thing"}


def test_ids_are_kept_as_written(tmp_path: Path) -> None:
    taskset, _ = load_taskset_file(write(tmp_path, """\
        taskset: s
        tasks:
          - {id: 1.10, title: a}
          - {id: 1.1, title: b, depends_on: [1.10], estimate: 10m, optional: true}
          - {id: 2, title: c, depends_on: 1.1}
        """))
    assert [t.id for t in taskset.tasks] == ["1.10", "1.1", "2"]
    assert taskset.tasks[1].dependencies == ["1.10"]
    assert taskset.tasks[1].estimated_duration == 600
    assert taskset.tasks[1].optional is True
    assert taskset.tasks[2].dependencies == ["1.1"]


def test_url_repo_is_left_alone(tmp_path: Path) -> None:
    taskset, _ = load_taskset_file(write(tmp_path, "taskset: s\nrepo: https://x/y.git\n"
                                     "tasks:\n  - {id: a, title: a}\n"))
    assert taskset.repo == "https://x/y.git"


CASES = [
    # missing taskset name
    ("tasks:\n  - {id: a, title: a}\n", 1, "taskset", "missing the taskset name"),
    # missing tasks list / wrong shape
    ("taskset: s\n", 1, "tasks", "missing the list of tasks"),
    ("taskset: s\ntasks: {a: 1}\n", 2, "tasks", "expected a list of tasks"),
    ("taskset: s\ntasks:\n  - just text\n", 3, "tasks[#1]", "expected a task"),
    # missing id / title
    ("taskset: s\ntasks:\n  - title: a\n", 3, "tasks[#1]", "missing id"),
    ("taskset: s\ntasks:\n  - id: a\n", 3, "tasks[a]", "missing title"),
    # duplicate ids: the second is named, with where the first is
    ("taskset: s\ntasks:\n  - {id: a, title: a}\n  - {id: a, title: b}\n", 4, "tasks[a].id",
     "duplicate id 'a' (first at"),
    # unknown dependency, with a did-you-mean
    ("taskset: s\ntasks:\n  - {id: build, title: a}\n  - id: b\n    title: b\n"
     "    depends_on: [biuld]\n", 6, "tasks[b].depends_on",
     "unknown dependency 'biuld' (did you mean 'build'?)"),
    # self-dependency and cycles, with the path
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    depends_on: [a]\n", 5,
     "tasks[a].depends_on", "depends on itself"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    depends_on: [b]\n"
     "  - id: b\n    title: b\n    depends_on: [a]\n", 5, "tasks[a].depends_on",
     "dependency cycle: a -> b -> a"),
    # wrong types
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    command: python agent.py\n", 5,
     "tasks[a].command", "never run through a shell"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    command: [python, 1]\n", 5,
     "tasks[a].command", "expected a non-empty list of strings"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    priority: high\n", 5,
     "tasks[a].priority",
     "expected an integer from -1000000000 to 1000000000, got the string 'high'"),
    ("taskset: s\ntasks:\n  - id: a\n    title: [x]\n", 4, "tasks[a].title",
     "expected a string, got a list"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    depends_on: {x: 1}\n", 5,
     "tasks[a].depends_on", "expected a list of task ids"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    timeout: -1\n", 5, "tasks[a].timeout",
     "must be > 0, got -1"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    max_attempts: 0\n", 5,
     "tasks[a].max_attempts", "must be >= 1, got 0"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    metadata: [1]\n", 5,
     "tasks[a].metadata", "expected a mapping"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    estimate: soon\n", 5,
     "tasks[a].estimate", "duration like '10m'"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    optional: maybe\n", 5,
     "tasks[a].optional", "expected true or false"),
    # resources: known keys, positive values
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    resources:\n      cpu: 0\n", 6,
     "tasks[a].resources.cpu", "must be > 0, got 0"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    resources:\n      memory_mb: -5\n", 6,
     "tasks[a].resources.memory_mb", "must be > 0, got -5"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    resources:\n      memory: 5\n", 6,
     "tasks[a].resources.memory", "did you mean 'memory_mb'"),
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    resources: 2\n", 5,
     "tasks[a].resources", "expected a mapping like {cpu: 1, memory_mb: 512}"),
    # unknown keys with did-you-mean
    ("taskset: s\ntasks:\n  - id: a\n    title: a\n    dependson: [b]\n", 5,
     "tasks[a].dependson", "did you mean 'depends_on'"),
    ("taskset: s\ntenent: x\ntasks: []\n", 2, "tenent", "did you mean 'tenant'"),
    # bad names
    ("taskset: a/b\ntasks: []\n", 1, "taskset", "contains '/'"),
    ("taskset: s\ntasks:\n  - {id: x/y, title: a}\n", 3, "tasks[x/y].id", "contains '/'"),
]


@pytest.mark.parametrize(("text", "line", "key", "message"), CASES)
def test_each_problem_names_file_line_task_and_field(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    problems = problems_of(write(tmp_path, text))
    prefix = f"{tmp_path / 'tasks.yaml'}:{line}: {key}: "
    matching = [p for p in problems if p.startswith(prefix)]
    assert matching, f"no problem starts with {prefix!r}: {problems}"
    assert any(message in p for p in matching), problems


def test_not_a_file_and_syntax_error(tmp_path: Path) -> None:
    assert "taskset file not found" in problems_of(tmp_path / "nope.yaml")[0]
    problems = problems_of(write(tmp_path, "taskset: s\ntasks: [\n"))
    assert "YAML syntax error" in problems[0]
    assert problems_of(write(tmp_path, "- a\n"))[0].endswith(
        "expected a mapping with 'taskset:' and 'tasks:', got a list")


def test_every_problem_at_once_and_nothing_written(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    path = write(tmp_path, """\
        taskset: s
        tasks:
          - id: a
            title: a
            priority: high
          - id: a
            title: again
          - id: b
            title: b
            depends_on: [zzz]
          - title: no id
        """)
    with pytest.raises(TasksetError) as info:
        submit_taskset_file(registry, path)
    keys = [p.key for p in info.value.problems]
    assert keys == ["tasks[a].priority", "tasks[a].id", "tasks[b].depends_on", "tasks[#4]"]
    assert "nothing written" in str(info.value)
    assert registry.list_tasks() == []


def test_dependency_checks_run_on_tasks_with_other_problems(tmp_path: Path) -> None:
    """QA: a bad priority, a duplicate id and a missing title hid the unknown dependency."""
    path = write(tmp_path, """\
        taskset: s
        tasks:
          - id: a
            title: a
            priority: high
            depends_on: [zy]
          - id: a
            title: again
            depends_on: [zz]
          - id: b
            depends_on: [zx]
        """)
    problems = problems_of(path)
    assert [p.split(": ", 1)[0].rpartition(":")[2] for p in problems] == [
        "5", "6", "7", "9", "10", "11"]
    text = "\n".join(problems)
    for part in ("tasks[a].priority", "duplicate id 'a'", "unknown dependency 'zy'",
                 "unknown dependency 'zz'", "tasks[b]: missing title", "unknown dependency 'zx'"):
        assert part in text, text


def test_cycle_is_found_next_to_an_unknown_dependency(tmp_path: Path) -> None:
    """QA: an unknown dependency hid a c <-> d cycle; every check runs in one pass."""
    problems = problems_of(write(tmp_path, """\
        taskset: s
        tasks:
          - {id: a, title: a, depends_on: [nope]}
          - {id: c, title: c, depends_on: [d]}
          - {id: d, title: d, priority: x, depends_on: [c]}
        """))
    assert len(problems) == 3, problems
    assert "unknown dependency 'nope'" in problems[0]
    assert ":4: tasks[c].depends_on: dependency cycle: c -> d -> c" in problems[1]
    assert ":5: tasks[d].priority" in problems[2]


def test_longer_cycle_path(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, """\
        taskset: s
        tasks:
          - {id: a, title: a, depends_on: [c]}
          - {id: b, title: b, depends_on: [a]}
          - {id: c, title: c, depends_on: [b]}
          - {id: d, title: d}
        """))
    assert len(problems) == 1
    assert "dependency cycle: a -> b -> c -> a" in problems[0]


def test_resources_above_every_quota_is_a_warning(tmp_path: Path) -> None:
    config = default_config()
    config.agent_pools[0].cpu_quota = 2
    config.agent_pools.append(AgentPool(name="big", max_concurrency=1, memory_quota=100))
    config.skill_mapping["gpu"] = ["big"]
    taskset, warnings = load_taskset_file(write(tmp_path, """\
        taskset: s
        tasks:
          - {id: a, title: a, resources: {cpu: 4}}
          - {id: b, title: b, resources: {cpu: 1}}
          - {id: c, title: c, skill: gpu, resources: {memory_mb: 4096}}
        """), config=config)
    assert len(taskset.tasks) == 3
    warnings = [w for w in warnings if "resources" in w]
    assert len(warnings) == 2
    assert warnings[0].startswith("s/a: resources cpu 4, memory 512 MB exceed the quota")
    assert warnings[0].endswith("every pool it can go to: local (cpu 2); it will wait")
    assert "big (memory 100 MB); it will wait" in warnings[1]  # no "cpu None"


def test_tasks_without_command_on_a_pool_without_agent_command_warn_once(
        tmp_path: Path) -> None:
    config = default_config()
    config.agent_pools.append(AgentPool(name="gpu", max_concurrency=1,
                                        agent_command=["agent", "{task_id}"]))
    config.skill_mapping["ml"] = ["gpu"]
    path = write(tmp_path, """\
        taskset: s
        tasks:
          - {id: a, title: a}
          - {id: b, title: b}
          - {id: c, title: c, command: [python, c.py]}
          - {id: d, title: d, skill: ml}
        """)
    _, warnings = load_taskset_file(path, config=config)
    assert warnings == [
        "2 tasks of s have no `command:` and pool 'local' has no `agent_command:`, so they "
        "cannot run there (the launch fails); add `agent_command:` to pool 'local' in your "
        'config (--config FILE), e.g. ["my-agent", "--task", "{task_id}", "--workdir", '
        '"{slot_path}"]']
    config.agent_pools[0].agent_command = ["agent"]
    assert load_taskset_file(path, config=config)[1] == []


def test_done_tasks_need_no_command() -> None:
    taskset = Taskset(name="k", tasks=[
        parse_taskset({"taskset": "k", "tasks": [{"id": "1", "title": "x"}]}).tasks[0]
        .copy(state=TaskState.DONE)])
    assert validate_taskset(taskset, config=default_config()) == []


def test_unmapped_skill_without_default_is_a_warning(tmp_path: Path) -> None:
    config = default_config()
    config.skill_mapping = {"db": ["local"]}
    _, warnings = load_taskset_file(
        write(tmp_path, "taskset: s\ntasks:\n  - {id: a, title: a, skill: ui}\n"), config=config)
    assert warnings == ["s/a: no pool takes skill 'ui' and there is no 'default' in "
                        "skill_mapping; it will wait"]


def test_submit_and_resubmit_keeps_state(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    path = write(tmp_path, "taskset: s\ntasks:\n  - {id: a, title: a}\n"
                 "  - {id: b, title: b, depends_on: [a]}\n")
    result = submit_taskset_file(registry, path)
    assert sorted(result.created) == ["s/a", "s/b"]
    registry.transition("s/a", TaskState.RUNNING)
    registry.transition("s/a", TaskState.DONE)
    # the second version adds a task that depends on one defined only in the registry
    path2 = write(tmp_path, "taskset: s\ntasks:\n  - {id: b, title: b renamed, depends_on: [a]}\n"
                  "  - {id: c, title: c, depends_on: [a, b]}\n", name="more.yaml")
    result = submit_taskset_file(registry, path2)
    assert result.created == ["s/c"] and result.updated == ["s/b"]
    assert registry.get_task("s/a").state is TaskState.DONE
    assert registry.get_task("s/b").title == "b renamed"
    assert registry.get_task("s/b").state is TaskState.READY


def test_resubmit_cycle_through_existing_tasks_is_refused(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    submit_taskset_file(registry, write(tmp_path, "taskset: s\ntasks:\n  - {id: a, title: a}\n"
                                        "  - {id: b, title: b, depends_on: [a]}\n"))
    path = write(tmp_path, "taskset: s\ntasks:\n  - {id: a, title: a, depends_on: [b]}\n",
                 name="v2.yaml")
    with pytest.raises(TasksetError, match="dependency cycle: a -> b -> a"):
        submit_taskset_file(registry, path)
    assert registry.get_task("s/a").dependencies == []


def test_parse_and_validate_taskset_without_a_file() -> None:
    taskset = parse_taskset({"taskset": "s", "tasks": [{"id": "a", "title": "A"},
                                                      {"id": "b", "title": "B",
                                                       "depends_on": ["a"]}]})
    assert validate_taskset(taskset) == []
    with pytest.raises(TasksetError, match="tasks\\[a\\]: missing title"):
        parse_taskset({"taskset": "s", "tasks": [{"id": "a"}]})
    built = Taskset(name="s", tasks=[taskset.tasks[1]], source="inline")
    with pytest.raises(TasksetError) as info:
        validate_taskset(built)
    assert str(info.value.problems[0]) == (
        "inline: tasks[b].depends_on: unknown dependency 'a' (define that task or remove it)")


def test_numeric_taskset_name_is_refused(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "taskset: 42\ntasks: []\n"))
    assert problems == [f"{tmp_path / 'tasks.yaml'}:1: taskset: expected a name (a string "
                        "without '/'), got the integer 42"]
