"""Dependents start from their dependencies' work, with real git (R21.2): a chain where each
task needs the previous one's file, siblings merged, a conflict as an answer naming the
dependencies and the file, resolving it and retrying, starting from the base."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_support import ENV, git, make_origin, run_task, writer
from necrocode.dispatcher.models import EventType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from necrocode.dispatcher.repo_pool import (
    RepoPoolManager,
    StartConflict,
    WorkResult,
    dependency_work,
)
from necrocode.dispatcher.repo_pool.git import repo_slug


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_origin(tmp_path / "origin", {"README.md": "hello\n",
                                            "shared.txt": "one\ntwo\nthree\n"})


@pytest.fixture
def registry() -> Iterator[MemoryRegistry]:
    reg = MemoryRegistry()
    yield reg
    reg.close()


def submit(registry: MemoryRegistry, origin: Path, *tasks: tuple[str, list[str]]) -> None:
    registry.submit_taskset(Taskset(name="flow", repo=str(origin), tasks=[
        Task(id=i, title=f"task {i}", dependencies=deps, repo=str(origin)) for i, deps in tasks]))


def pool_at(tmp_path: Path, **kw: object) -> RepoPoolManager:
    return RepoPoolManager(tmp_path / "state", fetch_interval=0, **kw)  # type: ignore[arg-type]


def needs(previous: str, mine: str) -> object:
    """An agent that fails unless the previous task's file is in its worktree."""

    def edit(worktree: Path) -> None:
        text = (worktree / previous).read_text()  # raises when the work did not flow
        (worktree / mine).write_text(text + mine + "\n")

    return edit


def test_a_chain_where_each_task_needs_the_previous_ones_file(
        tmp_path: Path, origin: Path, registry: MemoryRegistry) -> None:
    submit(registry, origin, ("a", []), ("b", ["a"]), ("c", ["b"]))
    pool = pool_at(tmp_path)
    a = run_task(pool, registry, "flow/a", writer({"a.txt": "a\n"}))
    b = run_task(pool, registry, "flow/b", needs("a.txt", "b.txt"))
    c = run_task(pool, registry, "flow/c", needs("b.txt", "c.txt"))
    assert all(isinstance(r, WorkResult) for r in (a, b, c))
    # a chain stays linear: each starts at its dependency's head, its diff is its own work
    assert (b.base, c.base) == (a.head, b.head)
    assert (a.files_changed, b.files_changed, c.files_changed) == (
        ("a.txt",), ("b.txt",), ("c.txt",))
    mirror = pool.mirror_of(str(origin))
    final = git("--git-dir", str(mirror), "show", f"{c.head}:c.txt", cwd=tmp_path)
    assert final == "a\nb.txt\nc.txt"
    assert registry.get_task("flow/c").state is TaskState.DONE


def test_siblings_are_merged_into_their_dependents_start(
        tmp_path: Path, origin: Path, registry: MemoryRegistry) -> None:
    submit(registry, origin, ("x", []), ("y", []), ("z", ["x", "y"]))
    pool = pool_at(tmp_path)
    x = run_task(pool, registry, "flow/x", writer({"x.txt": "x\n"}))
    y = run_task(pool, registry, "flow/y", writer({"y.txt": "y\n"}))
    seen: dict[str, bool] = {}

    def look(worktree: Path) -> None:
        seen.update(x=(worktree / "x.txt").exists(), y=(worktree / "y.txt").exists())
        (worktree / "z.txt").write_text("z\n")

    z = run_task(pool, registry, "flow/z", look)
    assert seen == {"x": True, "y": True} and z.files_changed == ("z.txt",)
    mirror = pool.mirror_of(str(origin))
    parents = git("--git-dir", str(mirror), "rev-list", "--parents", "-1", z.base, cwd=tmp_path)
    assert parents.split()[1:] == [x.head, y.head]  # one merge commit of both
    assert "Start flow/z from the work of flow/y" in git(
        "--git-dir", str(mirror), "log", "-1", "--format=%B", z.base, cwd=tmp_path)
    assert pool.slot_for_task("flow/z") is None


def test_siblings_editing_the_same_line_make_their_dependent_a_conflict(
        tmp_path: Path, origin: Path, registry: MemoryRegistry) -> None:
    submit(registry, origin, ("x", []), ("y", []), ("z", ["x", "y"]))
    pool = pool_at(tmp_path, slots_per_repo=1)
    run_task(pool, registry, "flow/x", writer({"shared.txt": "one\nTWO by x\nthree\n"}))
    run_task(pool, registry, "flow/y", writer({"shared.txt": "one\nTWO by y\nthree\n",
                                               "y.txt": "y\n"}))
    only = pool.get_slot(f"{repo_slug(str(origin))}/0")
    assert only is not None
    slot_path = Path(only.slot_path)
    before = git("rev-parse", "HEAD", cwd=slot_path)
    answer = run_task(pool, registry, "flow/z", writer({"z.txt": "z\n"}))
    assert isinstance(answer, StartConflict)
    assert answer.reason == "dependencies flow/x and flow/y conflict in shared.txt"
    assert answer.files == ("shared.txt",)
    event = answer.event()
    assert event.event_type is EventType.START_CONFLICT and event.task_key == "flow/z"
    assert event.details["conflicts"] == [{"dependencies": ["flow/x", "flow/y"],
                                           "files": ["shared.txt"], "against": None}]
    assert "start it from the base, or cancel" in event.message
    # nothing taken, nothing touched: the slot is free and its worktree as it was
    assert pool.in_use_count() == 0 and pool.free_slots(str(origin)) == 1
    assert git("rev-parse", "HEAD", cwd=slot_path) == before
    assert registry.get_task("flow/z").state is TaskState.READY

    # the operator resolves it: the merged work is landed on the integration branch of the
    # task repository, and the retry starts from there
    mirror = pool.mirror_of(str(origin))
    heads = {k: registry.get_task(f"flow/{k}").head for k in "xy"}
    git("fetch", "-q", str(mirror), f"{heads['x']}:refs/heads/necrocode/flow",
        f"{heads['y']}:refs/heads/tmp-y", cwd=origin)
    git("checkout", "-q", "necrocode/flow", cwd=origin)
    _merge_with_resolution(origin, "tmp-y", "one\nTWO by x and y\nthree\n")
    git("checkout", "-q", "trunk", cwd=origin)
    seen: dict[str, str] = {}

    def look(worktree: Path) -> None:
        seen["shared"] = (worktree / "shared.txt").read_text()
        (worktree / "z.txt").write_text("z\n")

    z = run_task(pool, registry, "flow/z", look)
    assert isinstance(z, WorkResult), z
    assert seen["shared"] == "one\nTWO by x and y\nthree\n" and z.files_changed == ("z.txt",)


def _merge_with_resolution(repo: Path, branch: str, resolved: str) -> None:
    subprocess.run(["git", "merge", "-q", branch, "-m", "merge"], cwd=repo, env={
        **ENV, "HOME": str(repo)}, capture_output=True, check=False)
    (repo / "shared.txt").write_text(resolved)
    git("add", "shared.txt", cwd=repo)
    git("commit", "-q", "-m", "resolve x and y", cwd=repo)


def test_start_from_the_base_when_the_operator_chooses_it(
        tmp_path: Path, origin: Path, registry: MemoryRegistry) -> None:
    submit(registry, origin, ("x", []), ("y", []), ("z", ["x", "y"]))
    pool = pool_at(tmp_path)
    run_task(pool, registry, "flow/x", writer({"shared.txt": "x\n"}))
    run_task(pool, registry, "flow/y", writer({"shared.txt": "y\n"}))
    assert isinstance(run_task(pool, registry, "flow/z", writer({})), StartConflict)
    seen: dict[str, str] = {}

    def look(worktree: Path) -> None:
        seen["shared"] = (worktree / "shared.txt").read_text()
        (worktree / "z.txt").write_text("z\n")

    z = run_task(pool, registry, "flow/z", look, from_base=True)
    assert isinstance(z, WorkResult) and seen["shared"] == "one\ntwo\nthree\n"
    assert z.base == git("rev-parse", "trunk", cwd=origin)


def test_a_dependency_conflicting_with_a_moved_default_branch(
        tmp_path: Path, origin: Path, registry: MemoryRegistry) -> None:
    submit(registry, origin, ("x", []), ("z", ["x"]), ("w", []))
    pool = pool_at(tmp_path)
    run_task(pool, registry, "flow/x", writer({"shared.txt": "x\n"}))
    # meanwhile the default branch changed the same line
    (origin / "shared.txt").write_text("upstream\n")
    git("commit", "-qam", "upstream", cwd=origin)
    run_task(pool, registry, "flow/w", writer({"w.txt": "w\n"}))  # fetches the new default
    answer = run_task(pool, registry, "flow/z", writer({}))
    assert isinstance(answer, StartConflict)
    assert answer.reason == "dependency flow/x conflicts with the default branch in shared.txt"


def test_dependency_order_and_work_without_a_recorded_head(
        tmp_path: Path, origin: Path, registry: MemoryRegistry,
        caplog: pytest.LogCaptureFixture) -> None:
    submit(registry, origin, ("a", []), ("b", ["a"]), ("c", []), ("d", ["c", "b", "a"]))
    pool = pool_at(tmp_path)
    for key in "abc":
        run_task(pool, registry, f"flow/{key}", writer({f"{key}.txt": key}))
    tasks = {t.key: t for t in registry.list_tasks()}
    order = [d.key for d in dependency_work(tasks["flow/d"], tasks)]
    assert order == ["flow/c", "flow/a", "flow/b"]  # a before b (b contains a), else as listed
    # an older record (no head) falls back to its branch; no work at all is a warning
    registry.update_task("flow/c", head=None)
    registry.update_task("flow/a", head="0" * 40, branch="feature/none")
    seen: list[str] = []
    with caplog.at_level(logging.WARNING):
        d = run_task(pool, registry, "flow/d",
                     lambda wt: seen.extend(sorted(p.name for p in wt.glob("?.txt"))))
    assert isinstance(d, WorkResult) and seen == ["a.txt", "b.txt", "c.txt"]
    assert "flow/a has no recorded work" in caplog.text
