"""RepoPoolManager with real git: worktrees on feature branches, scratch dirs, release once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from necrocode.dispatcher.models import Task
from necrocode.dispatcher.repo_pool import RepoPoolError, RepoPoolManager, branch_name


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                         env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                              "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
                              "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    return out.stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "-q", "-b", "trunk", cwd=repo)
    (repo / "README.md").write_text("hello\n")
    (repo / ".gitignore").write_text("*.pyc\n")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "first", cwd=repo)
    return repo


def task(i: str, repo: Path | str | None, taskset: str = "chat") -> Task:
    return Task(id=i, taskset=taskset, title=f"task {i}",
                repo=str(repo) if repo is not None else None)


def test_worktree_on_feature_branch_from_default_head(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=2)
    slot = pool.allocate_slot(task("1.1", origin))
    assert slot is not None
    path = Path(slot.slot_path)
    assert path.is_relative_to(tmp_path / "state" / "workspaces")
    assert slot.branch == "feature/task-chat-1.1"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=path) == "feature/task-chat-1.1"
    assert git("rev-parse", "HEAD", cwd=path) == git("rev-parse", "trunk", cwd=origin)
    assert (path / "README.md").read_text() == "hello\n"
    assert slot.repo == str(origin.resolve())
    assert pool.slot_in_use(slot.slot_id) and pool.free_slots(str(origin)) == 1


def test_no_free_slot_returns_none_and_release_frees(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=2)
    a = pool.allocate_slot(task("1", origin))
    b = pool.allocate_slot(task("2", origin))
    assert a and b and a.slot_id != b.slot_id and a.slot_path != b.slot_path
    assert pool.allocate_slot(task("3", origin)) is None
    assert pool.free_slots(str(origin)) == 0
    # scratch tasks are not limited by the repo's slots
    assert pool.allocate_slot(task("4", None)) is not None
    assert pool.release_slot(a.slot_id) is True
    c = pool.allocate_slot(task("3", origin))
    assert c is not None and c.slot_id == a.slot_id
    assert c.branch == "feature/task-chat-3"


def test_second_release_is_ignored_and_counters_stay_right(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=2)
    a = pool.allocate_slot(task("1", origin))
    b = pool.allocate_slot(task("2", origin))
    assert a and b
    assert pool.release_slot(a.slot_id) is True
    assert pool.release_slot(a.slot_id) is False  # second release: logged and ignored
    assert pool.release_slot("nope/0") is False  # unknown slot
    assert pool.free_slots(str(origin)) == 1 and pool.in_use_count() == 1
    assert pool.slot_in_use(b.slot_id) and not pool.slot_in_use(a.slot_id)
    # still exactly one free slot: the next task gets it, the one after waits
    assert pool.allocate_slot(task("3", origin)) is not None
    assert pool.allocate_slot(task("4", origin)) is None


def test_slot_is_cleaned_before_reuse(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=1)
    slot = pool.allocate_slot(task("1", origin))
    assert slot is not None
    path = Path(slot.slot_path)
    (path / "README.md").write_text("dirty\n")  # tracked change
    (path / "new.txt").write_text("untracked\n")  # untracked
    (path / "x.pyc").write_text("ignored\n")  # ignored
    (path / "sub").mkdir()
    (path / "sub" / "f").write_text("x")
    git("checkout", "-q", "-b", "other", cwd=path)
    pool.release_slot(slot.slot_id)
    again = pool.allocate_slot(task("2", origin))
    assert again is not None and again.slot_path == slot.slot_path
    assert sorted(p.name for p in path.iterdir()) == [".git", ".gitignore", "README.md"]
    assert (path / "README.md").read_text() == "hello\n"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=path) == "feature/task-chat-2"


def test_retry_of_same_task_gets_its_branch_again(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=2)
    first = pool.allocate_slot(task("1", origin))
    other = pool.allocate_slot(task("2", origin))
    assert first and other
    pool.release_slot(first.slot_id)
    pool.release_slot(other.slot_id)
    pool.allocate_slot(task("3", origin))  # takes the lowest free slot (first's)
    retry = pool.allocate_slot(task("1", origin))  # same branch, now in the other worktree
    assert retry is not None and retry.slot_id == other.slot_id
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=Path(retry.slot_path)) == \
        "feature/task-chat-1"


def test_clone_once_and_fetch_new_commits(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=2, fetch_interval=0)
    a = pool.allocate_slot(task("1", origin))
    assert a is not None
    (origin / "more.txt").write_text("more\n")
    git("add", ".", cwd=origin)
    git("commit", "-q", "-m", "second", cwd=origin)
    b = pool.allocate_slot(task("2", origin))
    assert b is not None and (Path(b.slot_path) / "more.txt").exists()
    mirrors = list((tmp_path / "state" / "workspaces").glob("*/repo.git"))
    assert len(mirrors) == 1  # one clone per repository, worktrees share it


def test_scratch_slots_are_emptied(tmp_path: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", scratch_slots=1)
    slot = pool.allocate_slot(task("1", None))
    assert slot is not None and slot.branch is None and slot.repo is None
    path = Path(slot.slot_path)
    (path / "deep" / "er").mkdir(parents=True)
    (path / "deep" / "er" / "f").write_text("x")
    (path / "deep").chmod(0o500)  # agents leave read-only dirs behind
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (path / "link").symlink_to(outside)
    assert pool.allocate_slot(task("2", None)) is None  # scratch_slots=1
    pool.release_slot(slot.slot_id)
    again = pool.allocate_slot(task("2", None))
    assert again is not None and again.slot_path == slot.slot_path
    assert list(path.iterdir()) == []
    assert (outside / "keep").read_text() == "keep"  # symlinks removed, not followed


def test_state_survives_restart_and_mark_in_use(tmp_path: Path, origin: Path) -> None:
    state = tmp_path / "state"
    pool = RepoPoolManager(state, slots_per_repo=2)
    a = pool.allocate_slot(task("1", origin))
    s = pool.allocate_slot(task("9", None))
    assert a and s
    data = json.loads((state / "workspaces" / "slots.json").read_text())
    assert data["slots"][a.slot_id]["task"] == "chat/1"
    restarted = RepoPoolManager(state, slots_per_repo=2)
    assert restarted.assignments() == {a.slot_id: "chat/1", s.slot_id: "chat/9"}
    assert restarted.free_slots(str(origin)) == 1
    assert restarted.slot_for_task("chat/1") == a
    # adoption after a lost state file: the engine marks the slots its live runners hold
    (state / "workspaces" / "slots.json").unlink()
    fresh = RepoPoolManager(state, slots_per_repo=2)
    assert fresh.assignments() == {}
    adopted = fresh.mark_in_use(a.slot_id, "chat/1", repo=str(origin), branch=a.branch)
    assert adopted.slot_path == a.slot_path and fresh.slot_in_use(a.slot_id)
    b = fresh.allocate_slot(task("2", origin))
    assert b is not None and b.slot_id != a.slot_id  # never hands out the adopted slot
    assert fresh.allocate_slot(task("3", origin)) is None
    with pytest.raises(ValueError):
        fresh.mark_in_use("garbage", "chat/4")


@pytest.mark.parametrize(
    ("taskset", "task_id", "expected"),
    [
        ("chat-app", "1.1", "feature/task-chat-app-1.1"),  # the common case
        ("my set", "a b", "feature/task-my%20set-a%20b"),  # spaces
        ("s", "a-b", "feature/task-s-a%2Db"),  # ... not the same branch as "a b"
        ("x..y", "~^:?*[", "feature/task-x%2E%2Ey-%7E%5E%3A%3F%2A%5B"),  # what git forbids
        ("x.y", ".hidden", "feature/task-x.y-%2Ehidden"),  # ... not the same as "x..y"
        ("s", "1.lock", "feature/task-s-1%2Elock"),  # a ref may not end in .lock
        ("s", "$(touch pwned)", "feature/task-s-%24%28touch%20pwned%29"),  # shell syntax: text
    ],
)
def test_branch_names_are_valid_refs(taskset: str, task_id: str, expected: str) -> None:
    name = branch_name(taskset, task_id)
    assert name == expected
    subprocess.run(["git", "check-ref-format", "--branch", name], check=True,
                   capture_output=True)


def test_empty_or_missing_repo_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    pool = RepoPoolManager(tmp_path / "state")
    with pytest.raises(RepoPoolError) as err:
        pool.allocate_slot(task("1", empty))
    assert "no default branch" in str(err.value)
    with pytest.raises(RepoPoolError):
        pool.allocate_slot(task("2", tmp_path / "does-not-exist"))
    assert pool.in_use_count() == 0  # nothing stays reserved after a failure


def test_url_credentials_are_not_logged() -> None:
    from necrocode.dispatcher.repo_pool.git import redact, repo_slug

    assert redact("fatal: https://user:s3cret@example.com/x.git") == \
        "fatal: https://***@example.com/x.git"
    assert repo_slug("https://example.com/org/app.git").startswith("app-")


def test_url_repository(tmp_path: Path, origin: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", slots_per_repo=1)
    url = f"file://{origin}"
    slot = pool.allocate_slot(task("1", url))
    assert slot is not None and slot.repo == url
    assert (Path(slot.slot_path) / "README.md").exists()
    assert pool.free_slots(url) == 0 and pool.free_slots(str(origin)) == 1  # another repo name


def test_state_file_is_rewritten_in_place_and_always_parses(tmp_path: Path) -> None:
    """slots.json is one in-place write per change (no tmp file + rename per task); a shorter
    document is padded with blanks, so the file parses after every change and a restart reads
    the newest assignments."""
    state = tmp_path / "state"
    pool = RepoPoolManager(state)
    path = state / "workspaces" / "slots.json"
    slots = [pool.allocate_slot(task(str(i), None)) for i in range(6)]
    assert all(slots)
    inode = path.stat().st_ino
    for i, slot in enumerate(slots):
        assert slot is not None
        pool.release_slot(slot.slot_id)  # each release shortens the document
        pool.flush()  # (a scratch slot's release is written with the next write)
        data = json.loads(path.read_text())
        held = {sid for sid, s in data["slots"].items() if s["task"]}
        assert len(held) == 5 - i
    assert path.stat().st_ino == inode  # written in place
    assert not list((state / "workspaces").glob(".*tmp"))
    assert RepoPoolManager(state).assignments() == {}
    again = pool.allocate_slot(task("x", None))
    assert again is not None
    assert RepoPoolManager(state).assignments() == {again.slot_id: "chat/x"}


def test_a_scratch_slot_release_is_written_with_the_next_write_and_at_shutdown(
    tmp_path: Path,
) -> None:
    """Releasing a scratch slot is not a write of its own: the next allocation's write (or
    the flush at shutdown) records it; until then the file still says held, which a restart
    treats as it treats any slot whose task has no live runner (it frees it)."""
    state = tmp_path / "state"
    pool = RepoPoolManager(state)
    first = pool.allocate_slot(task("1", None))
    assert first is not None
    pool.release_slot(first.slot_id)
    assert pool.assignments() == {}  # free at once for this dispatcher
    assert RepoPoolManager(state).assignments() == {first.slot_id: "chat/1"}  # not yet on disk
    second = pool.allocate_slot(task("2", None))
    assert second is not None and second.slot_id == first.slot_id  # reused
    assert RepoPoolManager(state).assignments() == {second.slot_id: "chat/2"}
    pool.release_slot(second.slot_id)
    pool.flush()
    assert RepoPoolManager(state).assignments() == {}


def test_scratch_slot_left_as_a_file_or_symlink_is_made_a_directory(tmp_path: Path) -> None:
    pool = RepoPoolManager(tmp_path / "state", scratch_slots=1)
    slot = pool.allocate_slot(task("1", None))
    assert slot is not None
    path = Path(slot.slot_path)
    pool.release_slot(slot.slot_id)
    outside = tmp_path / "outside"
    outside.mkdir()
    path.rmdir()
    path.symlink_to(outside)  # an agent replaced its own slot by a symlink
    again = pool.allocate_slot(task("2", None))
    assert again is not None and Path(again.slot_path).is_dir()
    assert not Path(again.slot_path).is_symlink() and outside.is_dir()
    pool.release_slot(again.slot_id)
    path.rmdir()
    path.write_text("not a dir")
    third = pool.allocate_slot(task("3", None))
    assert third is not None and Path(third.slot_path).is_dir()
    assert list(Path(third.slot_path).iterdir()) == []


def test_state_file_parses_when_another_manager_grew_it_and_shrinks_when_mostly_blank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from necrocode.dispatcher.repo_pool import manager

    state = tmp_path / "state"
    path = state / "workspaces" / "slots.json"
    small = RepoPoolManager(state)
    big = RepoPoolManager(state)
    for i in range(8):
        assert big.allocate_slot(task(f"long-task-name-{i}", None)) is not None
    grown = path.stat().st_size
    one = small.allocate_slot(task("1", None))  # pads to the size the other manager left
    assert one is not None and path.stat().st_size == grown
    assert RepoPoolManager(state).assignments() == {one.slot_id: "chat/1"}
    monkeypatch.setattr(manager, "_MAX_PADDING", 16)
    small.release_slot(one.slot_id)
    small.flush()
    assert path.stat().st_size < grown  # rewritten smaller instead of padded
    assert RepoPoolManager(state).assignments() == {}
    assert not list(path.parent.glob(".*tmp"))
