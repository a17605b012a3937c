"""After a run, with real git: leftovers committed on the task branch, the work recorded, the
branch kept in the Dispatcher's clone when the slot is cleaned (R21.1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from git_support import commit_files, git, make_origin
from necrocode.dispatcher.config import WorkConfig
from necrocode.dispatcher.models import EventType, Slot, Task, Taskset, TaskState
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.repo_pool import RepoPoolManager
from necrocode.dispatcher.repo_pool.work import WorkVerdict, commit_message, finish_work

from necroui.cli import main


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_origin(tmp_path / "origin", {"README.md": "hello\n", ".gitignore": "*.log\n"})


def task(i: str, origin: Path, **kw: object) -> Task:
    return Task(id=i, taskset="chat", title=f"task {i}", repo=str(origin), **kw)  # type: ignore[arg-type]


def allocate(pool: RepoPoolManager, t: Task) -> Slot:
    slot = pool.allocate_slot(t)
    assert isinstance(slot, Slot)
    return slot


def test_leftovers_are_committed_and_the_branch_outlives_the_slot(
        tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=1)
    one = task("1", origin)
    slot = allocate(pool, one)
    wt = Path(slot.slot_path)
    start = git("rev-parse", "HEAD", cwd=origin)
    assert slot.base == start
    (wt / "new.txt").write_text("new\n")  # the agent leaves an untracked file,
    (wt / "README.md").write_text("hello again\n")  # a modified one,
    (wt / "debug.log").write_text("ignored\n")  # and an ignored one
    work = WorkConfig(commit_author="Review Bot <bot@example.com>")
    result = finish_work(slot, one, "Added new.txt and reworded the README.", work)
    assert result is not None and result.verdict is WorkVerdict.DONE
    assert result.committed and result.commits == 1 and result.base == start
    assert result.files_changed == ("README.md", "new.txt")
    assert result.summary == ("1 commit, 2 files changed on feature/task-chat-1 (leftover "
                              "changes committed by the Dispatcher)")
    mirror = pool.mirror_of(str(origin))
    assert git("--git-dir", str(mirror), "rev-parse", "feature/task-chat-1", cwd=tmp_path) \
        == result.head
    log = git("log", "-1", "--format=%an <%ae>|%cn|%B", result.head, cwd=wt)
    assert log == "Review Bot <bot@example.com>|Review Bot|task 1 (chat/1)\n\n" \
                  "Added new.txt and reworded the README."
    # the slot is cleaned and reused by another task: the work stays on its branch
    assert pool.release_slot(slot.slot_id)
    other = allocate(pool, task("2", origin))
    assert other.slot_path == slot.slot_path and not (wt / "new.txt").exists()
    assert git("--git-dir", str(mirror), "show", "feature/task-chat-1:new.txt",
               cwd=tmp_path) == "new"


def test_agent_commits_count_with_the_leftovers(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state")
    one = task("1", origin)
    slot = allocate(pool, one)
    commit_files(slot.slot_path, {"a.txt": "a\n"}, "agent: a")
    commit_files(slot.slot_path, {"b/c.txt": "c\n"}, "agent: c")
    (Path(slot.slot_path) / "d.txt").write_text("d\n")
    result = finish_work(slot, one, "")
    assert result is not None
    assert (result.commits, result.files_changed, result.committed) == (
        3, ("a.txt", "b/c.txt", "d.txt"), True)
    assert git("log", "-1", "--format=%B", cwd=slot.slot_path) == "task 1 (chat/1)"
    updates = result.task_updates()
    assert updates["head"] == result.head and updates["commits"] == 3
    event = result.event()
    assert event.event_type is EventType.WORK_RECORDED and event.details["files"] == 3


@pytest.mark.parametrize("policy,verdict", [("done", WorkVerdict.DONE),
                                            ("fail", WorkVerdict.FAILED)])
def test_a_run_that_changed_nothing(tmp_path: Path, origin: Path, policy: str,
                                    verdict: WorkVerdict, caplog: pytest.LogCaptureFixture) -> None:
    pool = RepoPoolManager(tmp_path / "state")
    one = task("1", origin)
    slot = allocate(pool, one)
    (Path(slot.slot_path) / "only.log").write_text("ignored by .gitignore\n")
    with caplog.at_level(logging.WARNING):
        result = finish_work(slot, one, "nothing to do", WorkConfig(on_no_changes=policy))
    assert result is not None and result.no_changes and not result.committed
    assert result.verdict is verdict and result.commits == 0 and result.files_changed == ()
    assert result.summary == "changed nothing on feature/task-chat-1"
    warned = "chat/1 succeeded but changed nothing" in caplog.text
    assert warned is (policy == "done")


def test_work_left_on_another_branch_is_recorded_on_the_task_branch(
        tmp_path: Path, origin: Path, caplog: pytest.LogCaptureFixture) -> None:
    pool = RepoPoolManager(tmp_path / "state")
    one = task("1", origin)
    slot = allocate(pool, one)
    git("checkout", "-q", "-b", "agent-own", cwd=slot.slot_path)
    head = commit_files(slot.slot_path, {"x.txt": "x\n"})
    with caplog.at_level(logging.WARNING):
        result = finish_work(slot, one)
    assert result is not None and result.head == head and result.commits == 1
    mirror = pool.mirror_of(str(origin))
    assert git("--git-dir", str(mirror), "rev-parse", "feature/task-chat-1", cwd=tmp_path) == head
    assert "left its worktree on agent-own" in caplog.text


def test_base_is_found_for_a_slot_adopted_after_a_restart(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state")
    one = task("1", origin)
    slot = allocate(pool, one)
    commit_files(slot.slot_path, {"x.txt": "x\n"})
    adopted = Slot(slot_id=slot.slot_id, slot_path=slot.slot_path, repo=slot.repo,
                   branch=slot.branch)  # as the engine rebuilds it from the registry
    result = finish_work(adopted, one)
    assert result is not None and result.base == slot.base and result.commits == 1
    again = RepoPoolManager(tmp_path / "state").slot_for_task(one.key)
    assert again is not None and again.base == slot.base  # slots.json keeps it too


def test_a_retry_keeps_the_earlier_head_and_scratch_slots_have_no_work(
        tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state")
    one = task("1", origin)
    slot = allocate(pool, one)
    old = commit_files(slot.slot_path, {"x.txt": "first try\n"})
    pool.release_slot(slot.slot_id)
    retry = allocate(pool, one)
    mirror = pool.mirror_of(str(origin))
    assert git("rev-parse", "HEAD", cwd=retry.slot_path) == git("rev-parse", "HEAD", cwd=origin)
    assert git("--git-dir", str(mirror), "rev-parse", "refs/necrocode/previous/"
               "feature/task-chat-1", cwd=tmp_path) == old
    scratch = allocate(pool, Task(id="s", title="no repo"))
    assert finish_work(scratch, Task(id="s")) is None


def test_commit_message_template_and_a_broken_one(caplog: pytest.LogCaptureFixture) -> None:
    t = Task(id="7", taskset="ts", title="Add login", description="OAuth")
    work = WorkConfig(commit_message="{taskset}#{id}: {title}\n\n{description}\n{summary}")
    assert commit_message(work, t, " done \n") == "ts#7: Add login\n\nOAuth\ndone\n"
    with caplog.at_level(logging.WARNING):
        text = commit_message(WorkConfig(commit_message="{nope}"), t, "s")
    assert text == "Add login (ts/7)\n\ns\n" and "cannot be used" in caplog.text


def test_tasks_json_shows_the_recorded_work(tmp_path: Path, origin: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    db = tmp_path / "reg.db"
    registry = open_registry(db)
    one = task("1", origin)
    registry.submit_taskset(Taskset(name="chat", tasks=[one]))
    pool = RepoPoolManager(tmp_path / "state")
    slot = allocate(pool, one)
    (Path(slot.slot_path) / "f.txt").write_text("f\n")
    result = finish_work(slot, one, "f")
    assert result is not None
    registry.transition(one.key, TaskState.RUNNING, expected=TaskState.READY)
    registry.transition(one.key, TaskState.DONE, expected=TaskState.RUNNING,
                        event=result.event(), **result.task_updates())
    registry.close()
    out = CliRunner().invoke(main, ["--registry", str(db), "tasks", "--json"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert {k: row[k] for k in ("branch", "base", "head", "commits", "files_changed",
                                "landed")} == {
        "branch": "feature/task-chat-1", "base": slot.base, "head": result.head, "commits": 1,
        "files_changed": ["f.txt"], "landed": None}
