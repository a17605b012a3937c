"""A task's work as the console shows it (stat, patch, commits, branch), with real git, and
through ``necroui diff``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from git_support import commit_files, make_origin, run_task, writer
from necrocode.dispatcher.models import Task, Taskset
from necrocode.dispatcher.registry import open_registry
from necrocode.dispatcher.repo_pool import RepoPoolManager
from necrocode.dispatcher.work_diff import DiffError, task_diff

from necroui.cli import main


@pytest.fixture
def done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A registry file with flow/a DONE: two commits (one by the agent), a binary file."""
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    origin = make_origin(tmp_path / "origin", {"README.md": "one\ntwo\nthree\n"})
    db = tmp_path / "state" / "registry.db"
    db.parent.mkdir()
    registry = open_registry(db)
    registry.submit_taskset(Taskset(name="flow", tasks=[
        Task(id="a", title="Edit", repo=str(origin)), Task(id="s", title="scratch")]))
    pool = RepoPoolManager(db.parent)

    def agent(wt: Path) -> None:
        commit_files(wt, {"README.md": "one\nTWO\nthree\n"}, "agent: shout two")
        writer({"new.txt": "x\n" * 5, "blob.bin": ""})(wt)
        (wt / "blob.bin").write_bytes(b"\0\1\2" * 100)

    run_task(pool, registry, "flow/a", agent, summary="done")
    registry.close()
    return db, origin


def test_stat_patch_and_commits(done: tuple[Path, Path]) -> None:
    db, _ = done
    registry = open_registry(db)
    task = registry.get_task("flow/a")
    diff = task_diff(task, db.parent)
    assert diff.branch == "feature/task-flow-a" and (diff.base, diff.head) == (task.base,
                                                                              task.head)
    assert [c.subject for c in diff.commits] == ["Edit (flow/a)", "agent: shout two"]
    assert [(f.path, f.added, f.deleted, f.binary) for f in diff.files] == [
        ("README.md", 1, 1, False), ("blob.bin", 0, 0, True), ("new.txt", 5, 0, False)]
    assert (diff.added, diff.deleted) == (6, 1)
    assert "-two\n+TWO\n" in diff.patch and not diff.truncated
    cut = task_diff(task, db.parent, max_patch_chars=50)
    assert cut.truncated and len(cut.patch) == 50
    assert task_diff(task, db.parent, patch=False).patch == ""
    with pytest.raises(DiffError, match="flow/s has no repository"):
        task_diff(registry.get_task("flow/s"), db.parent)
    with pytest.raises(DiffError, match="no clone of"):
        task_diff(task, db.parent / "elsewhere")
    registry.close()


def test_necroui_diff(done: tuple[Path, Path]) -> None:
    db, _ = done
    out = CliRunner().invoke(main, ["--registry", str(db), "diff", "flow/a"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("flow/a on feature/task-flow-a: ")
    assert "2 commit(s)" in out.output and "+TWO" in out.output and "README.md" in out.output
    stat = CliRunner().invoke(main, ["--registry", str(db), "diff", "flow/a", "--stat"])
    assert "+TWO" not in stat.output and "new.txt" in stat.output
    missing = CliRunner().invoke(main, ["--registry", str(db), "diff", "flow/s"])
    assert missing.exit_code == 1 and "flow/s has no repository" in missing.output
