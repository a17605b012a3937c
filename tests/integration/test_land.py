"""``necroui land`` with real git and a real registry file: the merge queue in dependency order,
a passing and a failing gate, a conflict, sending a task back, --push into a local repository,
and the mistakes that change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from git_support import git, make_origin, run_task, writer
from necrocode.dispatcher.config import WorkConfig
from necrocode.dispatcher.models import EventType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.repo_pool import RepoPoolManager, WorkResult

from necroui.cli import main

# fails when any tracked file says "bad"; prints what it looked at
CHECK = (f"{sys.executable} -c \"import pathlib,sys; bad=[p.name for p in "
         "sorted(pathlib.Path('.').glob('*.txt')) if 'bad' in p.read_text()]; "
         "print('checked', len(list(pathlib.Path('.').glob('*.txt'))), 'files'); "
         "print('bad:', *bad) if bad else None; sys.exit(1 if bad else 0)\"")


class Flow:
    """A taskset run the way the engine runs it, in a registry file the CLI then lands."""

    def __init__(self, tmp: Path, tasks: list[tuple[str, list[str]]]) -> None:
        self.tmp = tmp
        self.origin = make_origin(tmp / "origin", {"README.md": "hi\n",
                                                  "shared.txt": "one\ntwo\n"})
        self.db = tmp / "state" / "registry.db"
        self.db.parent.mkdir()
        self.registry = open_registry(self.db)
        self.registry.submit_taskset(Taskset(name="flow", repo=str(self.origin), tasks=[
            Task(id=i, title=f"task {i}", dependencies=d, repo=str(self.origin))
            for i, d in tasks]))
        self.pool = RepoPoolManager(self.db.parent, fetch_interval=0)
        self.mirror = self.pool.mirror_of(str(self.origin))

    def run(self, tid: str, files: dict[str, str], work: WorkConfig | None = None) -> Any:
        return run_task(self.pool, self.registry, f"flow/{tid}", writer(files), work=work)

    def land(self, *args: str, config: Path | None = None) -> Result:
        pre = ["--config", str(config)] if config else []
        return CliRunner().invoke(main, [*pre, "--registry", str(self.db), "land", "flow",
                                         *args], catch_exceptions=False)

    def task(self, tid: str) -> Task:
        return self.registry.get_task(f"flow/{tid}")

    def tip(self, branch: str = "necrocode/flow") -> str | None:
        out = git("--git-dir", str(self.mirror), "rev-parse", "-q", "--verify",
                  f"refs/heads/{branch}", cwd=self.tmp) if self.has(branch) else None
        return out

    def has(self, branch: str) -> bool:
        refs = git("--git-dir", str(self.mirror), "for-each-ref", "--format=%(refname)",
                   cwd=self.tmp)
        return f"refs/heads/{branch}" in refs.split()

    def show(self, rev: str, path: str) -> str:
        return git("--git-dir", str(self.mirror), "show", f"{rev}:{path}", cwd=self.tmp)


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flow]:
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    f = Flow(tmp_path, [("a", []), ("b", ["a"]), ("c", []), ("d", ["c"])])
    yield f
    f.registry.close()


def config_file(tmp: Path, work: str) -> Path:
    path = tmp / "dispatcher.yaml"
    path.write_text("work:\n" + "".join(f"  {line}\n" for line in work.splitlines()))
    return path


def test_land_in_dependency_order_with_a_passing_gate(flow: Flow) -> None:
    for tid in "abcd":
        flow.run(tid, {f"{tid}.txt": f"{tid}\n"})
    out = flow.land("--check", CHECK)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("landing flow into necrocode/flow, gate ")
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["landed", "flow/a"], ["landed", "flow/b"], ["landed", "flow/c"], ["landed", "flow/d"]]
    assert lines[-1] == "4 landed"
    tip = flow.tip()
    assert tip is not None and all(flow.show(tip, f"{t}.txt") == t for t in "abcd")
    subjects = git("--git-dir", str(flow.mirror), "log", "--first-parent", "--format=%s",
                   "refs/heads/necrocode/flow", cwd=flow.tmp).splitlines()
    assert subjects[:4] == ["Land flow/d: task d", "Land flow/c: task c", "Land flow/b: task b",
                            "Land flow/a: task a"]
    assert all(flow.task(t).landed == "necrocode/flow" for t in "abcd")
    assert flow.registry.get_events(task_key="flow/a",
                                    event_types=[EventType.TASK_LANDED])[-1].details[
        "branch"] == "necrocode/flow"
    listed = CliRunner().invoke(main, ["--registry", str(flow.db), "tasks", "--json"])
    assert {r["key"]: r["landed"] for r in json.loads(listed.output)} == {
        f"flow/{t}": "necrocode/flow" for t in "abcd"}
    # landing again changes nothing
    again = flow.land()
    assert again.exit_code == 0 and again.output.splitlines()[-1] == "4 already in"
    assert flow.tip() == tip


def test_a_failing_gate_leaves_the_branch_and_holds_back_dependents(flow: Flow) -> None:
    flow.run("a", {"a.txt": "a\n"})
    flow.run("c", {"c.txt": "bad\n"})
    flow.run("b", {"b.txt": "b\n"})
    flow.run("d", {"d.txt": "d\n"})
    out = flow.land("--check", CHECK)
    assert out.exit_code == 1
    assert "gate failed flow/c: check `" in out.output and "exited 1" in out.output
    assert "| bad: c.txt" in out.output
    assert "waits       flow/d: waits for flow/c to land" in out.output
    assert out.output.splitlines()[-1] == "2 landed, 1 gate failed, 1 waits"
    tip = flow.tip()
    assert tip is not None and flow.show(tip, "b.txt") == "b"
    with pytest.raises(subprocess.CalledProcessError):
        flow.show(tip, "c.txt")  # the branch did not take c's work
    c = flow.task("c")
    assert c.state is TaskState.DONE and c.landed is None
    assert c.gate_failed is not None and "bad: c.txt" in c.gate_failed
    failed = flow.registry.get_events(task_key="flow/c", event_types=[EventType.GATE_FAILED])
    assert failed[-1].details["output"].endswith("bad: c.txt")
    assert "necrocode/flow left unchanged" in failed[-1].message


def test_a_sent_back_task_runs_again_from_its_work_and_then_lands(flow: Flow) -> None:
    config = config_file(flow.tmp, "on_gate_failure: retry")
    flow.run("c", {"c.txt": "bad\n", "c2.txt": "kept\n"})
    out = flow.land("--check", CHECK, config=config)
    assert out.exit_code == 1 and "sent back   flow/c" in out.output
    c = flow.task("c")
    assert c.state is TaskState.READY and c.last_error and "gate failed" in c.last_error
    assert flow.task("d").state is TaskState.BLOCKED  # it waits for c's new work
    seen: dict[str, str] = {}

    def fix(worktree: Path) -> None:
        seen["kept"] = (worktree / "c2.txt").read_text()  # it resumes from its own work
        (worktree / "c.txt").write_text("good\n")

    result = run_task(flow.pool, flow.registry, "flow/c", fix)
    assert isinstance(result, WorkResult) and seen["kept"] == "kept\n"
    assert result.files_changed == ("c.txt", "c2.txt")  # still measured from its first base
    assert flow.task("c").gate_failed is None
    assert flow.task("d").state is TaskState.READY
    again = flow.land("--check", CHECK, config=config)
    assert again.exit_code == 0 and "landed      flow/c" in again.output


def test_sending_back_refused_when_dependents_built_on_it(flow: Flow) -> None:
    config = config_file(flow.tmp, "on_gate_failure: retry")
    flow.run("c", {"c.txt": "bad\n"})
    flow.run("d", {"d.txt": "d\n"})
    out = flow.land("--check", CHECK, config=config)
    assert "not sent back: flow/d already built on its work" in out.output
    assert flow.task("c").state is TaskState.DONE


def test_a_conflict_when_landing_names_the_file(flow: Flow) -> None:
    flow.run("a", {"shared.txt": "one\nTWO by a\n"})
    flow.run("c", {"shared.txt": "one\nTWO by c\n"})
    out = flow.land()
    assert out.exit_code == 1
    assert "conflict    flow/c: conflicts with necrocode/flow in shared.txt" in out.output
    events = flow.registry.get_events(task_key="flow/c", event_types=[EventType.LAND_CONFLICT])
    assert events[-1].details["files"] == ["shared.txt"]


def test_push_into_a_local_repository(flow: Flow) -> None:
    flow.run("a", {"a.txt": "a\n"})
    out = flow.land("--push", "--push-task-branches")
    assert out.exit_code == 0, out.output
    assert "  pushed refs/heads/necrocode/flow" in out.output
    assert git("rev-parse", "necrocode/flow", cwd=flow.origin) == flow.tip()
    assert git("show", "necrocode/flow:a.txt", cwd=flow.origin) == "a"
    assert git("rev-parse", "feature/task-flow-a", cwd=flow.origin) == flow.task("a").head
    # the origin's branch went elsewhere (not containing ours): the push is refused, an error
    # after landing (the Dispatcher's branch has c; the origin keeps its own)
    git("checkout", "-q", "-b", "side", "trunk", cwd=flow.origin)
    git("commit", "-q", "--allow-empty", "-m", "elsewhere", cwd=flow.origin)
    git("branch", "-f", "necrocode/flow", "side", cwd=flow.origin)
    git("checkout", "-q", "trunk", cwd=flow.origin)
    flow.run("c", {"c.txt": "c\n"})
    refused = flow.land("--push")
    assert refused.exit_code == 1, refused.output
    assert "landed      flow/c" in refused.output
    assert f"error: push to {flow.origin} failed: refs/heads/necrocode/flow [rejected] " \
           "(non-fast-forward); the origin has commits" in refused.output
    assert git("rev-parse", "necrocode/flow", cwd=flow.origin) == git(
        "rev-parse", "side", cwd=flow.origin)


@pytest.mark.parametrize("args,message", [
    (["nope"], "taskset 'nope' has no tasks in the registry"),
    (["flow", "--into", "bad..branch"], "'bad..branch' is not a valid branch name"),
    (["flow", "--check", "no-such-check-cmd"], "check command 'no-such-check-cmd' not found"),
    (["flow", "--push-task-branches"], "--push-task-branches applies to --push"),
    (["flow", "--check", "'unclosed"], "--check \"'unclosed\": No closing quotation"),
])
def test_mistakes_change_nothing(flow: Flow, args: list[str], message: str) -> None:
    flow.run("a", {"a.txt": "a\n"})
    out = CliRunner().invoke(main, ["--registry", str(flow.db), "land", *args])
    assert out.exit_code == 1 and message in out.output, out.output
    assert "Traceback" not in out.output
    assert not flow.has("necrocode/flow") and flow.task("a").landed is None


def test_nothing_done_yet(flow: Flow) -> None:
    out = flow.land()
    assert out.exit_code == 1 and "nothing to land: no task of 'flow' is DONE" in out.output
